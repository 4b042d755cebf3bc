//! The console's web security, one layer for every response: a strict CSP (no inline
//! script or style: every page's CSS is a file), no framing, no referrer, no sniffing,
//! no caching of pages that may show personal data, HSTS behind TLS; and a refusal of
//! every state-changing request that did not come from the console's own pages
//! (`Sec-Fetch-Site`, else `Origin`): the first half of CSRF protection, the second
//! being the per-session token of the forms that change something.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, header};

use crate::Console;

/// The Content-Security-Policy of every response.
pub const CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Whether a request changes nothing (and so needs no proof of where it came from).
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a state-changing request came from a page of this console: the browser
/// says so (`Sec-Fetch-Site: same-origin`), or, from a browser that does not send that
/// header, its `Origin` is the console's own. A request with neither is refused: every
/// browser sends one of them on a POST.
pub fn from_this_console(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest == host)
}

/// The layer (see the module docs).
pub async fn guard(State(console): State<Console>, req: Request, next: Next) -> Response {
    let mut resp = if is_safe(req.method()) || from_this_console(req.headers()) {
        next.run(req).await
    } else {
        // Names no value of the request: only that it was refused.
        tracing::warn!(method = %req.method(), "a cross-site request to the console was refused");
        let lang = crate::pages::lang_of(req.headers());
        crate::pages::error_page(
            &console,
            lang,
            http::StatusCode::FORBIDDEN,
            "error-forbidden",
        )
        .into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if console.tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_the_consoles_own_pages_may_change_something() {
        assert!(from_this_console(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
        for site in ["cross-site", "same-site", "none"] {
            let h = HeaderMap::from_iter([(
                http::HeaderName::from_static("sec-fetch-site"),
                HeaderValue::from_static(site),
            )]);
            assert!(!from_this_console(&h), "{site}");
        }
        // Sec-Fetch-Site decides when present, whatever Origin says.
        assert!(!from_this_console(&headers(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ])));
        assert!(from_this_console(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ])));
        assert!(!from_this_console(&headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8080"),
        ])));
        assert!(!from_this_console(&headers(&[
            ("origin", "null"),
            ("host", "127.0.0.1:8080"),
        ])));
        assert!(!from_this_console(&headers(&[("host", "127.0.0.1:8080")])));
    }
}
