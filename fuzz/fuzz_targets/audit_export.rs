//! The offline verifier (`vern audit verify`, `vern_audit::export::verify_export`) on an
//! arbitrary file: an auditor may be handed anything. It reports a failure or an I/O
//! error; it never panics.

#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
    let _ = vern_audit::export::verify_export(data, key);
});
