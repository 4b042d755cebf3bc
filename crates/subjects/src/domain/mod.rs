//! The subjects' rules, pure: no I/O, no database, no tonic.
//!
//! - [`identifiers`]: validation and normalisation of e-mail, phone and national id.
//! - [`crypto`]: envelope encryption of personal data and the identifiers' blind index.

pub mod crypto;
pub mod identifiers;
