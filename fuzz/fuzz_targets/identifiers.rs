//! Identifier validators on arbitrary text: e-mail, phone (E.164) and national id
//! (`vern_subjects::domain::identifiers`) and the kit's shared validators. Never panic;
//! a normalised identifier is valid and normalises to itself (the blind index of the
//! same person written two ways must be one); accepted values carry no control
//! characters.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vern_kit::validate;
use vern_subjects::domain::identifiers::{email, national_id, phone};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(e) = email("email", s) {
        assert_eq!(
            email("email", &e).ok().as_deref(),
            Some(e.as_str()),
            "idempotent"
        );
        assert!(!e.chars().any(char::is_control));
    }
    if let Ok(p) = phone("phone", s) {
        assert_eq!(
            phone("phone", &p).ok().as_deref(),
            Some(p.as_str()),
            "idempotent"
        );
        assert!(p.starts_with('+') && p[1..].bytes().all(|b| b.is_ascii_digit()));
        assert!((9..=16).contains(&p.len()), "E.164: + and 8-15 digits");
    }
    if let Ok((n, kind)) = national_id("national_id", s) {
        assert_eq!(n.len(), 11);
        assert!(n.bytes().all(|b| b.is_ascii_digit()));
        let (again, kind2) = national_id("national_id", &n).expect("normalised is valid");
        assert_eq!((again, kind2), (n, kind));
    }
    if validate::request_id(s).is_ok() {
        assert!(s.len() <= validate::MAX_REQUEST_ID_LEN && s.bytes().all(|b| b.is_ascii_graphic()));
    }
    if validate::slug("key", s, 1, 63).is_ok() {
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
    if validate::optional_text("description", s, 1000).is_ok() {
        assert!(!s.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
    }
    let _ = validate::text("name", s, 200);
    let _ = validate::email("dpo_email", s);
});
