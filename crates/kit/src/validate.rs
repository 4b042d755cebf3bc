//! Validators shared by several services. Each returns a [`FieldViolation`] naming
//! the field, never echoing the value (it may be personal data).

use crate::error::FieldViolation;

/// Maximum length of a `request_id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A slug: lower-case ASCII letters, digits and '-', starting with a letter, not
/// ending with '-', `min..=max` characters.
pub fn slug(field: &str, value: &str, min: usize, max: usize) -> Result<(), FieldViolation> {
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let first_ok = value.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if value.len() < min || value.len() > max || !ok_chars || !first_ok || value.ends_with('-') {
        return Err(FieldViolation::new(
            field,
            format!(
                "must be {min}-{max} characters of a-z, 0-9 and '-', start with a letter and not end with '-'"
            ),
        ));
    }
    Ok(())
}

/// A tenant (controller) id: a slug of 3–63 characters. The one rule for tenant ids
/// in requests and in tokens.
pub fn tenant_id(field: &str, value: &str) -> Result<(), FieldViolation> {
    slug(field, value, 3, 63)
}

/// A `tenant_id` inside a request body (a resource sent back for an update): empty, or
/// the caller's effective tenant. A body naming another tenant is refused, never
/// silently applied to the caller's own.
pub fn own_tenant(field: &str, body: &str, effective: &str) -> Result<(), FieldViolation> {
    if body.is_empty() || body == effective {
        Ok(())
    } else {
        Err(FieldViolation::new(
            field,
            "must be empty or the caller's tenant",
        ))
    }
}

/// Required free text: non-empty after trimming, at most `max` characters, no
/// control characters other than newline and tab.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), FieldViolation> {
    if value.trim().is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    optional_text(field, value, max)
}

/// Optional free text: at most `max` characters, no control characters other than
/// newline and tab.
pub fn optional_text(field: &str, value: &str, max: usize) -> Result<(), FieldViolation> {
    if value.chars().count() > max {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c))
    {
        return Err(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A required single line (a name, a reference, an id): like [`text`], but no
/// newline or tab either. A line break in a name would split a CSV export row, a log
/// line or a report heading in two.
pub fn line(field: &str, value: &str, max: usize) -> Result<(), FieldViolation> {
    if value.trim().is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    optional_line(field, value, max)
}

/// An optional single line: see [`line`].
pub fn optional_line(field: &str, value: &str, max: usize) -> Result<(), FieldViolation> {
    if value.contains(['\n', '\r', '\t']) {
        return Err(FieldViolation::new(
            field,
            "must be one line (no line breaks or tabs)",
        ));
    }
    optional_text(field, value, max)
}

/// Bidirectional embedding, override and isolate controls (U+202A–U+202E,
/// U+2066–U+2069): they make text display in an order other than the stored one
/// ("Trojan Source"), so an audit reader or a privacy officer could be shown something
/// else than what was recorded. Right-to-left text itself needs none of them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// An e-mail address: one '@', a non-empty local part, a dotted domain of
/// letters, digits and '-', no whitespace; at most 254 characters.
pub fn email(field: &str, value: &str) -> Result<(), FieldViolation> {
    let bad = || FieldViolation::new(field, "must be a valid e-mail address");
    if value.len() > 254
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_bidi_control(c))
    {
        return Err(bad());
    }
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return Err(bad());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(bad());
    }
    for label in &labels {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.chars().all(|c| c.is_alphanumeric() || c == '-')
        {
            return Err(bad());
        }
    }
    Ok(())
}

/// A `request_id`: empty (no idempotency) or 1–128 printable ASCII characters.
pub fn request_id(value: &str) -> Result<(), FieldViolation> {
    if value.len() > MAX_REQUEST_ID_LEN || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldViolation::new(
            "request_id",
            format!(
                "must be at most {MAX_REQUEST_ID_LEN} printable ASCII characters without spaces"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(slug("f", "kultur-oslo", 3, 63).is_ok());
        assert!(slug("f", "a1", 3, 63).is_err());
        assert!(slug("f", "1abc", 3, 63).is_err());
        assert!(slug("f", "abc-", 3, 63).is_err());
        assert!(slug("f", "Abc", 3, 63).is_err());
        assert!(slug("f", "ab c", 3, 63).is_err());
        assert!(slug("f", &"a".repeat(64), 3, 63).is_err());
    }

    #[test]
    fn lines_are_text_without_breaks() {
        assert!(line("name", "Oslo Kulturfabrikk — Avd. Øst", 200).is_ok());
        assert!(optional_line("name", "", 200).is_ok());
        assert_eq!(
            line("name", "  ", 200).unwrap_err().description,
            "is required"
        );
        for bad in [
            "Oslo\nKulturfabrikk",
            "Oslo\r",
            "Oslo\tKultur",
            "a\u{202e}b",
            "a\u{7}",
        ] {
            let err = optional_line("name", bad, 200).unwrap_err();
            assert_eq!(err.field, "name");
            assert!(
                !err.description.contains("Oslo"),
                "value must not be echoed"
            );
        }
        // Free text keeps its line breaks.
        assert!(text("description", "line one\nline two\tx", 200).is_ok());
        assert!(optional_line("name", &"a".repeat(201), 200).is_err());
    }

    #[test]
    fn emails() {
        assert!(email("e", "personvern@cifero.no").is_ok());
        assert!(email("e", "ola.nordmann+tag@post.example.com").is_ok());
        for bad in [
            "", "a", "a@b", "@b.no", "a@.no", "a@b..no", "a b@c.no", "a@b@c.no", "a@-b.no",
        ] {
            assert!(email("e", bad).is_err(), "{bad}");
        }
        let err = email("dpo_email", "nope").unwrap_err();
        assert_eq!(err.field, "dpo_email");
        assert!(
            !err.description.contains("nope"),
            "value must not be echoed"
        );
    }

    #[test]
    fn texts() {
        assert!(text("t", "  ", 10).is_err());
        assert!(text("t", "hello", 3).is_err());
        assert!(text("t", "a\u{0}b", 10).is_err());
        assert!(text("t", "a\nb", 10).is_ok());
        assert!(text("t", "abc\u{202e}fed", 10).is_err(), "bidi override");
        assert!(text("t", "\u{2067}x", 10).is_err(), "bidi isolate");
        assert!(text("t", "مرحبا", 10).is_ok(), "right-to-left text itself");
        assert!(email("e", "a\u{202e}b@example.no").is_err());
        assert!(optional_text("t", "", 10).is_ok());
    }

    #[test]
    fn request_ids() {
        assert!(request_id("").is_ok());
        assert!(request_id("0b7c-42").is_ok());
        assert!(request_id("has space").is_err());
        assert!(request_id(&"x".repeat(129)).is_err());
    }
}
