//! The subjects' rules, pure: no I/O, no database, no tonic.
//!
//! - [`identifiers`]: validation and normalisation of e-mail, phone and national id.
//! - [`crypto`], [`keyring`]: the envelope encryption and the tenants' keys, from
//!   `vern-seal` (re-exported; shared with the consents and rights services).
//! - [`restriction`]: restriction of processing (Art. 18), whole or per purpose.
//! - [`subject`]: subjects, records, their validation and the ciphertexts' associated data.

pub mod identifiers;
pub mod restriction;
pub mod subject;

pub use vern_seal::{crypto, keyring};

pub use subject::*;
