//! Token verification (`vern_kit::verify::TokenVerifier`, HS256) on hostile input: any
//! byte string as a bearer token, and correctly signed tokens whose header and claims
//! are arbitrary bytes (so the header and claims parsers are reached, not only the
//! signature check). Must never panic; a token is accepted only with a non-empty `sub`.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use vern_kit::config::AuthConfig;
use vern_kit::verify::TokenVerifier;

const SECRET: &[u8] = b"fuzz-secret";

fn sign(input: &str) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(input.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fuzz_target!(|data: &[u8]| {
    let verifier = TokenVerifier::hs256(SECRET, &AuthConfig::default());
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        // Garbage as the token.
        String::from_utf8_lossy(rest).into_owned()
    } else {
        // header 0xff claims: arbitrary bytes, correctly signed.
        let mut parts = rest.splitn(2, |b| *b == 0xff);
        let header = parts.next().unwrap_or_default();
        let claims = parts.next().unwrap_or_default();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = sign(&input);
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    };
    if let Ok(principal) = verifier.verify(&token) {
        assert!(
            !principal.sub.trim().is_empty(),
            "accepted a token without sub"
        );
    }
});
