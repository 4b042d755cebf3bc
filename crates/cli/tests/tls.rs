//! `vern dev` given a certificate from a test CA, checked from outside with the `vern`
//! binary as the client: health over TLS to a client trusting the CA, plaintext
//! refused, a replaced certificate served to new connections without a restart, and
//! with a client CA a client without a certificate refused.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::free_port;
use vern_kit::testing::TestPki;

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, port: u16, client_ca: bool, env: &[(&str, String)]) -> Dev {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vern"));
    cmd.args(["dev", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--console-listen", "127.0.0.1:0"])
        .env("VERN_TLS__CERT_FILE", dir.join("tls.crt"))
        .env("VERN_TLS__KEY_FILE", dir.join("tls.key"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if client_ca {
        cmd.env("VERN_TLS__CLIENT_CA_FILE", dir.join("clients.pem"));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    Dev(cmd.spawn().expect("vern dev starts"))
}

/// `vern health` against `addr`, with `extra` arguments and environment.
fn health(addr: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vern"));
    cmd.args(["health", "--addr", addr]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("VERN_CA")
        .output()
        .expect("vern health runs")
}

fn wait_serving(addr: &str, args: &[&str], env: &[(&str, &Path)]) {
    let out = health(addr, &[args, &["--wait-seconds", "30"]].concat(), env);
    assert!(
        out.status.success(),
        "not SERVING over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
}

/// The certificate a new connection to `port` is shown.
async fn served_cert(port: u16, ca: &Path) -> Vec<u8> {
    let tls = vern_kit::tls::ClientTls::from_config(&vern_kit::config::TlsConfig {
        ca_file: Some(ca.to_owned()),
        ..Default::default()
    })
    .expect("client tls");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let stream = tokio_rustls::TlsConnector::from(tls.current())
        .connect(vern_kit::tls::server_name("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    stream.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
}

#[tokio::test]
async fn vern_dev_serves_tls_and_takes_a_new_certificate_without_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let pki = TestPki::new("vern test CA");
    pki.write_ca(&d.join("ca.pem"));
    let first = pki.write_server(&d.join("tls.crt"), &d.join("tls.key"));
    let port = free_port();
    let metrics = free_port();
    let _dev = start(
        d,
        port,
        false,
        &[
            (
                "VERN_TELEMETRY__METRICS_LISTEN",
                format!("127.0.0.1:{metrics}"),
            ),
            ("VERN_TELEMETRY__METRICS_TLS", "true".into()),
        ],
    );
    let addr = format!("https://localhost:{port}");
    let ca = d.join("ca.pem");
    let ca = ca.to_str().expect("utf-8");
    wait_serving(&addr, &["--ca", ca], &[]);
    // The CA from the configuration works as well as --ca.
    wait_serving(&addr, &[], &[("VERN_TLS__CA_FILE", &d.join("ca.pem"))]);
    // Plaintext is refused, and so is a client that does not trust the CA.
    let plain = health(&format!("http://127.0.0.1:{port}"), &[], &[]);
    assert!(!plain.status.success(), "plaintext must be refused");
    let other = TestPki::new("someone else");
    other.write_ca(&d.join("other.pem"));
    let other_ca = d.join("other.pem");
    let untrusted = health(&addr, &["--ca", other_ca.to_str().expect("utf-8")], &[]);
    assert!(!untrusted.status.success(), "another CA must not verify");
    // A real API call through the TLS gateway with the CLI's client.
    let status = Command::new(env!("CARGO_BIN_EXE_vern"))
        .args(["keys", "status", "--addr", &addr, "--ca", ca, "--data-dir"])
        .arg(d.join("data"))
        .env_remove("VERN_TOKEN")
        .output()
        .expect("vern keys status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("SERVICE"));
    // /metrics over TLS when asked: scraped with the CA, nothing in plaintext.
    let scraped = scrape_tls(metrics, &d.join("ca.pem")).await;
    assert!(scraped.starts_with("HTTP/1.1 200 OK"), "{scraped:.200}");
    assert!(scraped.contains("# TYPE"), "{scraped:.200}");
    assert!(
        scrape_plain(metrics).await.is_empty(),
        "no plaintext /metrics"
    );

    // A client calling all the while, on a connection opened before the rotation and
    // on new ones: no call may fail.
    vern_kit::tls::install_client(&vern_kit::config::TlsConfig {
        ca_file: Some(d.join("ca.pem")),
        ..Default::default()
    })
    .expect("client tls");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, addr) = (stop.clone(), addr.clone());
        tokio::spawn(async move {
            let kept = vern_kit::tls::channel(&addr).await.expect("connect");
            let (mut ok, mut failed) = (0usize, 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let fresh = vern_kit::tls::channel(&addr).await;
                for ch in [Some(kept.clone()), fresh.ok()] {
                    let Some(ch) = ch else {
                        failed += 1;
                        continue;
                    };
                    let r = tonic_health::pb::health_client::HealthClient::new(ch)
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await;
                    if r.is_ok() { ok += 1 } else { failed += 1 }
                }
            }
            (ok, failed)
        })
    };
    // cert-manager replaces the Secret's files in place.
    assert_eq!(served_cert(port, &d.join("ca.pem")).await, first);
    let second = pki.write_server(&d.join("tls.crt"), &d.join("tls.key"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while served_cert(port, &d.join("ca.pem")).await != second {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within a minute"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.expect("load");
    assert_eq!(
        failed, 0,
        "calls failed during the certificate change ({ok} succeeded)"
    );
    assert!(ok > 10, "the load ran ({ok} calls)");
    wait_serving(&addr, &["--ca", ca], &[]);
}

async fn scrape_tls(port: u16, ca: &Path) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = vern_kit::tls::ClientTls::from_config(&vern_kit::config::TlsConfig {
        ca_file: Some(ca.to_owned()),
        ..Default::default()
    })
    .expect("client tls");
    // h2 only is what gRPC clients ask for; a scraper asks for nothing.
    let mut config = (*tls.current()).clone();
    config.alpn_protocols.clear();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let mut stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(vern_kit::tls::server_name("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out).await;
    out
}

/// What a plaintext GET /metrics gets back (nothing HTTP from a TLS listener).
async fn scrape_plain(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let _ = tcp
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    let mut out = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(6), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| l.starts_with("HTTP/"))
        .collect()
}

#[tokio::test]
async fn with_a_client_ca_a_client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let pki = TestPki::new("vern test CA");
    pki.write_ca(&d.join("ca.pem"));
    pki.write_server(&d.join("tls.crt"), &d.join("tls.key"));
    let clients = TestPki::new("vern clients");
    clients.write_ca(&d.join("clients.pem"));
    clients.write_client(&d.join("client.crt"), &d.join("client.key"));
    let port = free_port();
    let _dev = start(d, port, true, &[]);
    let addr = format!("https://localhost:{port}");
    let ca = d.join("ca.pem");
    let with_cert = [
        ("VERN_TLS__CLIENT_CERT_FILE", d.join("client.crt")),
        ("VERN_TLS__CLIENT_KEY_FILE", d.join("client.key")),
    ];
    let with_cert: Vec<(&str, &Path)> = with_cert.iter().map(|(k, v)| (*k, v.as_path())).collect();
    wait_serving(&addr, &["--ca", ca.to_str().expect("utf-8")], &with_cert);
    let without = health(&addr, &["--ca", ca.to_str().expect("utf-8")], &[]);
    assert!(
        !without.status.success(),
        "a client without a certificate must be refused"
    );
}
