//! Page tokens (`vern_kit::page`): decoding arbitrary input never panics, and every
//! token a list issues decodes to its key for that list only.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vern_kit::page::{decode_token, encode_token, page_size};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Garbage as a token of a few lists.
    for list in ["tenants", "purposes", "consent_history", ""] {
        let _ = decode_token(list, &text);
    }
    // Issued tokens round-trip and are bound to their list.
    let (list, key) = text.split_once('\u{0}').unwrap_or(("subjects", &text));
    if list.contains('\n') {
        return;
    }
    let token = encode_token(list, key);
    if token.len() <= 1024 {
        let back = decode_token(list, &token).expect("an issued token decodes");
        assert_eq!(back.as_deref(), Some(key));
        if list != "other-list" {
            assert!(
                decode_token("other-list", &token).is_err(),
                "bound to its list"
            );
        }
    }
    if data.len() >= 4 {
        let n = i32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        match page_size(n) {
            Ok(size) => assert!(n >= 0 && (1..=vern_kit::page::MAX_PAGE_SIZE).contains(&size)),
            Err(_) => assert!(n < 0),
        }
    }
});
