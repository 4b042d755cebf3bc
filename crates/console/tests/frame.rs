//! The console's frame over HTTP: the pages in bokmål by default and in English on
//! request or by the switch, the security headers on every response, and
//! state-changing requests from anywhere but the console's own pages refused.

use axum::body::Body;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use vern_console::{Console, Settings, router, security::CSP};

async fn send(req: Request<Body>) -> (Response<Body>, String) {
    send_to(Settings::default(), req).await
}

async fn send_to(settings: Settings, req: Request<Body>) -> (Response<Body>, String) {
    let dir = tempfile::tempdir().expect("dir");
    let sessions = vern_console::sessions::Sessions::open(&vern_kit::db::DbTarget::for_service(
        None,
        dir.path(),
        "console",
    ))
    .await
    .expect("sessions");
    let app = router(Console::new(settings).expect("catalogs"), sessions);
    let mut resp = app.oneshot(req).await.expect("answer");
    let body = resp.body_mut().collect().await.expect("body").to_bytes();
    (resp, String::from_utf8(body.to_vec()).expect("utf-8"))
}

fn get(path: &str) -> http::request::Builder {
    Request::builder().method("GET").uri(path)
}

fn language_post() -> http::request::Builder {
    Request::builder()
        .method("POST")
        .uri("/language")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
}

fn form(lang: &str, back: &str) -> Body {
    Body::from(format!("lang={lang}&back={}", back.replace('/', "%2F")))
}

#[tokio::test]
async fn the_sign_in_page_is_in_bokmal_unless_asked_otherwise() {
    let (resp, html) = send(get("/").body(Body::empty()).expect("req")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(html.contains("<html lang=\"nb\">"), "{html}");
    assert!(html.contains("<h1>Logg inn</h1>"), "{html}");
    assert!(html.contains("<main id=\"main\""), "a main landmark");
    assert!(html.contains("href=\"#main\""), "a skip link");
    assert!(
        html.contains("<label for=\"language\">Språk</label>"),
        "{html}"
    );

    let (_, html) = send(
        get("/")
            .header(header::ACCEPT_LANGUAGE, "en-GB,en;q=0.9,nb;q=0.5")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert!(html.contains("<html lang=\"en\">"), "{html}");
    assert!(html.contains("<h1>Sign in</h1>"), "{html}");

    // The switch's cookie wins over the browser.
    let (_, html) = send(
        get("/")
            .header(header::ACCEPT_LANGUAGE, "nb")
            .header(header::COOKIE, "other=1; vern_lang=en")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert!(html.contains("<h1>Sign in</h1>"), "{html}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    for (path, status) in [
        ("/", StatusCode::OK),
        ("/static/console.css", StatusCode::OK),
        ("/no/such/page", StatusCode::NOT_FOUND),
    ] {
        let (resp, body) = send(get(path).body(Body::empty()).expect("req")).await;
        assert_eq!(resp.status(), status, "{path}");
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer", "{path}");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert!(
            !h.contains_key(header::STRICT_TRANSPORT_SECURITY),
            "no HSTS without TLS"
        );
        // The CSP allows no inline code: no page carries any.
        assert!(!body.contains("<script"), "{path}");
        assert!(!body.contains("style=\""), "{path}");
        assert!(!body.contains("<style"), "{path}");
    }
    assert_eq!(
        CSP,
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    );
    let (resp, _) = send_to(
        Settings {
            tls: true,
            ..Settings::default()
        },
        get("/").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(
        resp.headers()[header::STRICT_TRANSPORT_SECURITY],
        "max-age=31536000; includeSubDomains"
    );
    let (resp, html) = send(
        get("/no/such/page")
            .header(header::ACCEPT_LANGUAGE, "en")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    assert!(html.contains("There is no such page."), "{html}");
}

#[tokio::test]
async fn the_language_switch_remembers_the_choice_and_returns_to_the_page() {
    let (resp, _) = send(
        language_post()
            .header("sec-fetch-site", "same-origin")
            .body(form("en", "/overview"))
            .expect("req"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/overview");
    let cookie = resp.headers()[header::SET_COOKIE].to_str().expect("cookie");
    assert!(cookie.starts_with("vern_lang=en;"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "no TLS: {cookie}");

    // Back to another host: to the console's start instead.
    let (resp, _) = send(
        language_post()
            .header(header::ORIGIN, "http://127.0.0.1:8080")
            .body(form("nb", "//evil.example/"))
            .expect("req"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/");

    // A language the console does not speak.
    let (resp, _) = send(
        language_post()
            .header("sec-fetch-site", "same-origin")
            .body(form("de", "/"))
            .expect("req"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_post_from_another_site_is_refused_and_changes_nothing() {
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "http://evil.example"),
    ] {
        let (resp, html) = send(
            language_post()
                .header(name, value)
                .body(form("en", "/"))
                .expect("req"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        assert!(
            !resp.headers().contains_key(header::SET_COOKIE),
            "nothing changed"
        );
        assert!(html.contains("ble avvist"), "{html}");
        assert_eq!(resp.headers()[header::CONTENT_SECURITY_POLICY], CSP);
    }
    // Neither header (not a browser's POST): refused too.
    let (resp, _) = send(language_post().body(form("en", "/")).expect("req")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}
