//! The console as a newcomer meets it: `vern dev` serves it at the address its banner
//! prints, with the development sign-in and a demo department to sign in to; `vern
//! serve console` never offers the development sign-in, whatever it is given.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{Running, vern_dev_with_console};

/// One HTTP/1.1 exchange: the status code, the headers and the body.
async fn http(addr: &str, request: &str) -> (u16, String, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the console at {addr} does not answer: {e}"),
        }
    };
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn get(addr: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vern_dev_serves_the_console_with_the_development_sign_in_and_a_demo_department() {
    let dir = tempfile::tempdir().expect("dir");
    let (_vern, addr, banner, _) = vern_dev_with_console(dir.path());
    assert!(banner.contains("department \"demo\""), "{banner}");
    let (status, head, body) = http(&addr, &get(&addr, "/")).await;
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("<html lang=\"nb\">"), "bokmål first: {body}");
    assert!(
        body.contains("action=\"/dev/sign-in\""),
        "the development sign-in: {body}"
    );
    assert!(
        body.contains("name=\"department\" value=\"demo\""),
        "the demo department offered: {body}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("set-cookie: __host-vern_session="),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vern_serve_console_never_offers_the_development_sign_in() {
    let dir = tempfile::tempdir().expect("dir");
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    // Even with the development key configured and on, as `vern dev` has it.
    let child = Command::new(env!("CARGO_BIN_EXE_vern"))
        .args(["serve", "console", "--listen", &addr])
        .env("VERN_DATA_DIR", dir.path())
        .env("VERN_AUTH__DEV_KEY", "true")
        .env(
            "VERN_AUTH__HS256_SECRET",
            "a-development-secret-of-some-length",
        )
        .env("VERN_CONSOLE__GATEWAY_URL", "http://127.0.0.1:9")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vern serve console");
    let _console = Running(child);
    let (status, head, body) = http(&addr, &get(&addr, "/")).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        body.contains("<h1>Logg inn</h1>"),
        "the sign-in page: {body}"
    );
    assert!(
        !body.contains("/dev/sign-in"),
        "no development sign-in: {body}"
    );
    let form = "department=demo&role=privacy-officer";
    let (status, head, _) = http(
        &addr,
        &format!(
            "POST /dev/sign-in HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nSec-Fetch-Site: same-origin\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    )
    .await;
    assert_eq!(
        status, 404,
        "nothing answers the development sign-in: {head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("location: /overview"),
        "{head}"
    );
}

#[test]
fn vern_serve_console_with_an_openid_provider_needs_a_session_key_and_a_client_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let run = |env: &[(&str, &str)]| {
        let port = support::free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vern"));
        cmd.args(["serve", "console", "--listen", &format!("127.0.0.1:{port}")])
            .env("VERN_DATA_DIR", dir.path())
            .env("VERN_CONSOLE__GATEWAY_URL", "http://127.0.0.1:9")
            .env("VERN_CONSOLE__OIDC__ISSUER_URL", "https://login.example.no")
            .env("RUST_LOG", "error");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("vern serve console");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, err) = run(&[]);
    assert!(!status.success());
    assert!(err.contains("console.oidc.client_secret"), "{err}");
    let (status, err) = run(&[("VERN_CONSOLE__OIDC__CLIENT_SECRET", "s3cret")]);
    assert!(!status.success());
    assert!(err.contains("console.session_key is required"), "{err}");
    assert!(
        !err.contains("s3cret"),
        "the secret never in a message: {err}"
    );
    let (status, err) = run(&[
        ("VERN_CONSOLE__OIDC__CLIENT_SECRET", "s3cret"),
        ("VERN_CONSOLE__SESSION_KEY", "too-short"),
    ]);
    assert!(!status.success());
    assert!(err.contains("expected 32 bytes"), "{err}");
}
