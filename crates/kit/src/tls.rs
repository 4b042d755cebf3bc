//! TLS for every listener and every client (rustls with ring; no OpenSSL).
//!
//! - **Listeners** ([`ServerTls`], [`incoming`]): with `tls.cert_file` and
//!   `tls.key_file` a component speaks TLS only, offering HTTP/2 by ALPN; with
//!   `tls.client_ca_file` too it requires a client certificate signed by that CA
//!   (mutual TLS). The files are read again when they change (cert-manager rewrites a
//!   mounted Secret in place): each new connection takes the current files, checked at
//!   most every [`RECHECK`], so connections already open keep their session and none is
//!   dropped. A change that does not load (a half-written file) keeps the working
//!   configuration and is logged.
//! - **Clients** ([`ClientTls`], [`connector`]): an `https://` service URL is
//!   verified against `tls.ca_file` (unset: the system's roots) and, with
//!   `tls.client_cert_file` and `tls.client_key_file`, presents that certificate. These
//!   files are re-read the same way. `http://` URLs stay plaintext: which hops are
//!   encrypted is the operator's choice of URLs (deploy/validate.sh checks them).
//!
//! The process's client settings are installed once at start ([`install_client`]) and
//! used by every channel ([`crate::balance`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::config::TlsConfig;

/// How often a new connection looks at the files' modification times.
pub const RECHECK: Duration = Duration::from_secs(1);

/// A TLS file that would not load. Never names its content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Only one of a certificate and its key is configured.
    #[error("{0} and {1} must be set together")]
    Pair(&'static str, &'static str),
    /// rustls refused the combination (e.g. a key not matching its certificate).
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = |reason: String| TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file(e.to_string()))?;
    if certs.is_empty() {
        return Err(file("no PEM certificate".into()));
    }
    Ok(certs)
}

fn key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn roots(what: &'static str, path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(what, path)? {
        roots.add(c).map_err(|e| TlsError::File {
            what,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn pair(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    names: (&'static str, &'static str),
) -> Result<Option<(PathBuf, PathBuf)>, TlsError> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
        (None, None) => Ok(None),
        _ => Err(TlsError::Pair(names.0, names.1)),
    }
}

/// The modification times and sizes of a set of files: a change of any reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(SystemTime, u64)>>);

impl Stamp {
    fn of(paths: &[PathBuf]) -> Self {
        Self(
            paths
                .iter()
                .map(|p| {
                    // Follows symlinks: a Secret volume swaps its `..data` link.
                    let m = std::fs::metadata(p).ok()?;
                    Some((m.modified().ok()?, m.len()))
                })
                .collect(),
        )
    }
}

/// A configuration built from files, rebuilt when they change.
struct Reloading<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    state: RwLock<State<T>>,
}

struct State<T> {
    current: Arc<T>,
    stamp: Stamp,
    checked: Instant,
}

impl<T> Reloading<T> {
    fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamp = Stamp::of(&paths);
        let current = Arc::new(build()?);
        Ok(Self {
            what,
            paths,
            build: Box::new(build),
            state: RwLock::new(State {
                current,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The current configuration, rebuilt first when the files changed.
    fn current(&self) -> Arc<T> {
        {
            let Ok(s) = self.state.read() else {
                return self.rebuild_or_keep();
            };
            if s.checked.elapsed() < RECHECK {
                return s.current.clone();
            }
        }
        self.rebuild_or_keep()
    }

    fn rebuild_or_keep(&self) -> Arc<T> {
        let mut s = match self.state.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if s.checked.elapsed() < RECHECK {
            return s.current.clone();
        }
        s.checked = Instant::now();
        let stamp = Stamp::of(&self.paths);
        if stamp == s.stamp {
            return s.current.clone();
        }
        match (self.build)() {
            Ok(fresh) => {
                s.current = Arc::new(fresh);
                s.stamp = stamp;
                tracing::info!(
                    what = self.what,
                    "TLS files changed; new connections use them"
                );
            }
            // Kept: cert-manager may be half-way through writing; the next check retries.
            Err(e) => {
                tracing::warn!(what = self.what, error = %e, "changed TLS files do not load; keeping the current ones")
            }
        }
        s.current.clone()
    }
}

/// A listener's TLS: its certificate and, for mutual TLS, the client CA.
pub struct ServerTls {
    config: Reloading<rustls::ServerConfig>,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The listeners' TLS of `config`: `None` when no certificate is configured.
    pub fn from_config(config: &TlsConfig) -> Result<Option<Arc<Self>>, TlsError> {
        let Some((cert, key_file)) = pair(
            &config.cert_file,
            &config.key_file,
            ("tls.cert_file", "tls.key_file"),
        )?
        else {
            if config.client_ca_file.is_some() {
                return Err(TlsError::Pair("tls.client_ca_file", "tls.cert_file"));
            }
            return Ok(None);
        };
        let client_ca = config.client_ca_file.clone();
        let mut paths = vec![cert.clone(), key_file.clone()];
        paths.extend(client_ca.clone());
        let mutual = client_ca.is_some();
        let build = move || {
            let builder = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            let builder = match &client_ca {
                Some(ca) => {
                    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots("tls.client_ca_file", ca)?),
                        provider(),
                    )
                    .build()
                    .map_err(|e| TlsError::Rustls(e.to_string()))?;
                    builder.with_client_cert_verifier(verifier)
                }
                None => builder.with_no_client_auth(),
            };
            let mut config = builder
                .with_single_cert(
                    certs("tls.cert_file", &cert)?,
                    key("tls.key_file", &key_file)?,
                )
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(config)
        };
        Ok(Some(Arc::new(Self {
            config: Reloading::new("server certificate", paths, build)?,
            mutual,
        })))
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// The configuration a new connection gets.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.config.current()
    }

    /// The same certificate for an HTTP/1.1 listener (`/metrics`): ALPN `http/1.1`
    /// instead of `h2`, so a scraper offering both gets the protocol it is spoken to.
    pub fn current_http1(&self) -> Arc<rustls::ServerConfig> {
        let mut config = (*self.config.current()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// What clients of `https://` URLs trust and present.
pub struct ClientTls {
    config: Reloading<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Clients of `config`: its CA (or the system roots) and its client certificate.
    pub fn from_config(config: &TlsConfig) -> Result<Self, TlsError> {
        let identity = pair(
            &config.client_cert_file,
            &config.client_key_file,
            ("tls.client_cert_file", "tls.client_key_file"),
        )?;
        let ca = config.ca_file.clone();
        let mut paths: Vec<PathBuf> = ca.iter().cloned().collect();
        if let Some((c, k)) = &identity {
            paths.extend([c.clone(), k.clone()]);
        }
        let build = move || {
            let roots = match &ca {
                Some(ca) => roots("tls.ca_file", ca)?,
                None => system_roots(),
            };
            let builder = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Rustls(e.to_string()))?
                .with_root_certificates(roots);
            let mut config = match &identity {
                Some((c, k)) => builder
                    .with_client_auth_cert(
                        certs("tls.client_cert_file", c)?,
                        key("tls.client_key_file", k)?,
                    )
                    .map_err(|e| TlsError::Rustls(e.to_string()))?,
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(config)
        };
        Ok(Self {
            config: Reloading::new("client TLS", paths, build)?,
        })
    }

    /// The configuration a new connection gets.
    pub fn current(&self) -> Arc<rustls::ClientConfig> {
        self.config.current()
    }
}

/// The system's trusted roots (unreadable ones are skipped).
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no system root certificates found; https:// services will not verify");
    }
    roots
}

static CLIENT: RwLock<Option<Arc<ClientTls>>> = RwLock::new(None);

/// Installs the process's client TLS (at start, before channels are made).
pub fn install_client(config: &TlsConfig) -> Result<(), TlsError> {
    let tls = Arc::new(ClientTls::from_config(config)?);
    match CLIENT.write() {
        Ok(mut c) => *c = Some(tls),
        Err(poisoned) => *poisoned.into_inner() = Some(tls),
    }
    Ok(())
}

/// The installed client TLS, or the system roots when none was installed.
pub fn client() -> Result<Arc<ClientTls>, TlsError> {
    if let Ok(c) = CLIENT.read()
        && let Some(c) = c.as_ref()
    {
        return Ok(c.clone());
    }
    install_client(&TlsConfig::default())?;
    client()
}

/// A tonic connector speaking TLS to whatever address it is given, verifying the
/// certificate against `server_name` (the host of the configured URL, not the pod's
/// address).
pub fn connector(
    tls: Arc<ClientTls>,
    server_name: ServerName<'static>,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = io::Error,
    Future = impl Future<
        Output = Result<
            hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
            io::Error,
        >,
    > + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: tonic::transport::Uri| {
        let (tls, name) = (tls.clone(), server_name.clone());
        async move {
            let host = uri.host().unwrap_or("localhost");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(tls.current())
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        }
    })
}

/// A channel to one `http://` or `https://` address (tools such as the CLI; services
/// use [`crate::balance`]). An https address is verified with the installed client
/// TLS ([`install_client`]: `--ca`, or the system roots).
pub async fn channel(url: &str) -> Result<tonic::transport::Channel, ChannelError> {
    use tonic::transport::Endpoint;
    if let Some(path) = crate::client::unix_socket_path(url) {
        // The socket's file permissions are its protection; no TLS on one host.
        return Ok(crate::client::unix_channel(
            Endpoint::from_static("http://localhost"),
            path,
        ));
    }
    let uri: tonic::transport::Uri = url.parse().map_err(|_| ChannelError::Url)?;
    if uri.scheme_str() != Some("https") {
        return Ok(Endpoint::from_shared(url.to_owned())
            .map_err(|_| ChannelError::Url)?
            .connect()
            .await?);
    }
    let host = uri.host().ok_or(ChannelError::Url)?;
    let port = uri.port_u16().unwrap_or(443);
    let name = server_name(host.trim_start_matches('[').trim_end_matches(']'))?;
    // `http` with the TLS of [`connector`], as in [`crate::balance`].
    let endpoint = Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|_| ChannelError::Url)?
        .origin(uri.clone());
    Ok(endpoint
        .connect_with_connector(connector(client()?, name))
        .await?)
}

/// A lazily connected channel to one `https://` address, verified with the installed
/// client TLS (the OTLP exporter's, whose own TLS is not compiled in).
pub fn lazy_channel(url: &str) -> Result<tonic::transport::Channel, ChannelError> {
    use tonic::transport::Endpoint;
    let uri: tonic::transport::Uri = url.parse().map_err(|_| ChannelError::Url)?;
    let host = uri.host().ok_or(ChannelError::Url)?;
    let port = uri.port_u16().unwrap_or(443);
    let name = server_name(host.trim_start_matches('[').trim_end_matches(']'))?;
    let endpoint = Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|_| ChannelError::Url)?
        .origin(uri.clone())
        .timeout(std::time::Duration::from_secs(5));
    Ok(endpoint.connect_with_connector_lazy(connector(client()?, name)))
}

/// Why [`channel`] did not connect.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Not an `http://` or `https://` URL with a host, nor a `unix:` socket path.
    #[error("not an http://, https:// or unix:/ address")]
    Url,
    /// The client TLS does not load.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The connection failed (refused, TLS handshake, certificate).
    #[error("the connection failed")]
    Connect(#[from] tonic::transport::Error),
}

/// The name a certificate must carry for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|e| TlsError::Rustls(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestPki;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("dir"),
            }
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    /// A health server on a TLS listener; its port.
    async fn serve(tls: Arc<ServerTls>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(crate::listen::incoming_tls(
                    listener,
                    tls,
                    Duration::from_secs(10),
                    tokio::sync::watch::channel(false).1,
                )),
        );
        port
    }

    fn client(ca: &Path, identity: Option<(PathBuf, PathBuf)>) -> Arc<ClientTls> {
        let (client_cert_file, client_key_file) = identity.unzip();
        Arc::new(
            ClientTls::from_config(&TlsConfig {
                ca_file: Some(ca.to_owned()),
                client_cert_file,
                client_key_file,
                ..TlsConfig::default()
            })
            .expect("client tls"),
        )
    }

    async fn health(port: u16, tls: Arc<ClientTls>) -> Result<i32, String> {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("uri")
            .connect_with_connector(connector(tls, server_name("localhost").expect("name")))
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        HealthClient::new(ch)
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| format!("{s:?}"))
    }

    /// The certificate a new connection is shown.
    async fn served_cert(port: u16, tls: &ClientTls) -> Vec<u8> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
        let stream = tokio_rustls::TlsConnector::from(tls.current())
            .connect(server_name("localhost").expect("name"), tcp)
            .await
            .expect("handshake");
        stream.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
    }

    #[tokio::test]
    async fn serves_tls_refuses_plaintext_and_takes_new_files_without_a_restart() {
        let f = Files::new();
        let pki = TestPki::new("vern test CA");
        pki.write_ca(&f.path("ca.pem"));
        let first = pki.write_server(&f.path("tls.crt"), &f.path("tls.key"));
        let tls = ServerTls::from_config(&TlsConfig {
            cert_file: Some(f.path("tls.crt")),
            key_file: Some(f.path("tls.key")),
            ..TlsConfig::default()
        })
        .expect("load")
        .expect("configured");
        assert!(!tls.is_mutual());
        let port = serve(tls).await;
        let trusted = client(&f.path("ca.pem"), None);
        assert_eq!(
            health(port, trusted.clone()).await,
            Ok(ServingStatus::Serving as i32)
        );
        // Plaintext is refused.
        let plain = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("uri")
            .timeout(Duration::from_secs(2))
            .connect_lazy();
        assert!(
            HealthClient::new(plain)
                .check(HealthCheckRequest::default())
                .await
                .is_err()
        );
        // Another CA's clients do not trust it.
        let other = TestPki::new("someone else");
        other.write_ca(&f.path("other.pem"));
        assert!(
            health(port, client(&f.path("other.pem"), None))
                .await
                .is_err()
        );

        // A channel open before the rotation keeps working through it.
        let open = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("uri")
            .connect_with_connector(connector(
                trusted.clone(),
                server_name("localhost").expect("name"),
            ))
            .await
            .expect("connect");
        assert_eq!(served_cert(port, &trusted).await, first);
        let second = pki.write_server(&f.path("tls.crt"), &f.path("tls.key"));
        assert_ne!(first, second);
        let deadline = Instant::now() + Duration::from_secs(10);
        while served_cert(port, &trusted).await != second {
            assert!(
                Instant::now() < deadline,
                "the new certificate was not served"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            HealthClient::new(open)
                .check(HealthCheckRequest::default())
                .await
                .is_ok(),
            "no dropped connection"
        );
        // Files that do not load keep the working configuration.
        std::fs::write(f.path("tls.crt"), "not a certificate").expect("write");
        tokio::time::sleep(RECHECK + Duration::from_millis(200)).await;
        assert_eq!(served_cert(port, &trusted).await, second);
    }

    #[tokio::test]
    async fn mutual_tls_refuses_a_client_without_a_certificate_of_the_client_ca() {
        let f = Files::new();
        let pki = TestPki::new("vern test CA");
        pki.write_ca(&f.path("ca.pem"));
        pki.write_server(&f.path("tls.crt"), &f.path("tls.key"));
        let clients = TestPki::new("vern clients");
        clients.write_ca(&f.path("clients.pem"));
        clients.write_client(&f.path("client.crt"), &f.path("client.key"));
        let strangers = TestPki::new("strangers");
        strangers.write_client(&f.path("stranger.crt"), &f.path("stranger.key"));
        let tls = ServerTls::from_config(&TlsConfig {
            cert_file: Some(f.path("tls.crt")),
            key_file: Some(f.path("tls.key")),
            client_ca_file: Some(f.path("clients.pem")),
            ..TlsConfig::default()
        })
        .expect("load")
        .expect("configured");
        assert!(tls.is_mutual());
        let port = serve(tls).await;
        assert!(health(port, client(&f.path("ca.pem"), None)).await.is_err());
        let stranger = Some((f.path("stranger.crt"), f.path("stranger.key")));
        assert!(
            health(port, client(&f.path("ca.pem"), stranger))
                .await
                .is_err()
        );
        let known = Some((f.path("client.crt"), f.path("client.key")));
        assert_eq!(
            health(port, client(&f.path("ca.pem"), known)).await,
            Ok(ServingStatus::Serving as i32)
        );
    }

    #[test]
    fn half_configured_pairs_are_refused() {
        let only_cert = TlsConfig {
            cert_file: Some("/x.crt".into()),
            ..TlsConfig::default()
        };
        assert!(matches!(
            ServerTls::from_config(&only_cert),
            Err(TlsError::Pair(..))
        ));
        let only_ca = TlsConfig {
            client_ca_file: Some("/ca.pem".into()),
            ..TlsConfig::default()
        };
        assert!(matches!(
            ServerTls::from_config(&only_ca),
            Err(TlsError::Pair(..))
        ));
        assert!(
            ServerTls::from_config(&TlsConfig::default())
                .expect("plain")
                .is_none()
        );
        let missing = TlsConfig {
            cert_file: Some("/nonexistent/tls.crt".into()),
            key_file: Some("/nonexistent/tls.key".into()),
            ..TlsConfig::default()
        };
        let e = ServerTls::from_config(&missing).expect_err("missing");
        assert!(e.to_string().contains("tls.cert_file"), "{e}");
    }
}
