//! Sealing of personal data at rest, shared by every service that stores it (subjects,
//! consents, rights): pure, no I/O, no database.
//!
//! - [`crypto`]: the AES-256-GCM envelope (`version ‖ nonce ‖ ciphertext ‖ tag`), data
//!   keys wrapped by a tenant's key-encryption key, and the keyed blind index.
//! - [`keyring`]: which key protects which tenant (explicit tenant keys, or keys
//!   derived from the master key) and its blind-index key.
//!
//! The formats are stable: changing a label or a layout makes stored data unreadable.

pub mod crypto;
pub mod keyring;

pub use crypto::{CryptoError, DataKey, MasterKey, TenantKey};
pub use keyring::{
    KeyVersion, Keyring, KeyringError, MasterKeys, TenantKek, TenantKeys, UnwrapError,
};
