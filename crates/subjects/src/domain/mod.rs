//! The subjects' rules, pure: no I/O, no database, no tonic.
//!
//! - [`identifiers`]: validation and normalisation of e-mail, phone and national id.
//! - [`crypto`]: envelope encryption of personal data and the identifiers' blind index.
//! - [`keyring`]: which key protects which tenant.
//! - [`subject`]: subjects, records, their validation and the ciphertexts' associated data.

pub mod crypto;
pub mod identifiers;
pub mod keyring;
pub mod subject;

pub use subject::*;
