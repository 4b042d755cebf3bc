//! Page sizes and opaque page tokens (AIP-158).
//!
//! A token is the last key of the previous page, bound to the list it came from, so a
//! token from one list cannot be replayed against another.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{ApiError, FieldViolation};

/// Page size when the request sets none.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page size; larger requests are clamped.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// The page size to use for `requested` (0 → default, above max → max).
pub fn page_size(requested: i32) -> Result<u64, ApiError> {
    match requested {
        n if n < 0 => Err(ApiError::invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as u64).min(MAX_PAGE_SIZE)),
    }
}

/// Encodes the last key of a page for the list named `list`.
pub fn encode_token(list: &str, last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1\n{list}\n{last_key}"))
}

/// The `next_page_token` of a page: empty on the last page.
pub fn next_token(list: &str, more: bool, last_key: Option<&str>) -> String {
    match (more, last_key) {
        (true, Some(k)) => encode_token(list, k),
        _ => String::new(),
    }
}

/// Decodes a page token of the list `list`; `Ok(None)` for an empty token.
pub fn decode_token(list: &str, token: &str) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        ApiError::InvalidArgument(vec![FieldViolation::new(
            "page_token",
            "is not a token this list issued",
        )])
    };
    if token.len() > 1024 {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = text.splitn(3, '\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(l), Some(key)) if l == list => Ok(Some(key.to_owned())),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(5).ok(), Some(5));
        assert_eq!(page_size(100_000).ok(), Some(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_list() {
        let t = encode_token("tenants", "acme");
        assert_eq!(
            decode_token("tenants", &t).ok().flatten().as_deref(),
            Some("acme")
        );
        assert!(decode_token("purposes", &t).is_err());
        assert!(decode_token("tenants", "!!!").is_err());
        assert!(decode_token("tenants", "").ok().flatten().is_none());
    }
}
