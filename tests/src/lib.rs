//! Harness for end-to-end tests: boots the whole suite in process on a loopback port
//! (or, [`Backend::Replicas`], as separate processes with replicas: [`topology`]) and
//! hands out real gRPC clients and tokens.

pub mod topology;

use std::net::SocketAddr;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use vern_kit::auth::{Claims, sign_hs256};
use vern_kit::config::Config;

/// The HS256 key the suite accepts (the development key of `vern dev`).
pub const SECRET: &str = "e2e-test-secret";

/// A suite running for one test.
pub struct Suite {
    /// Gateway address.
    pub addr: SocketAddr,
    /// Channel to the gateway.
    pub channel: Channel,
    /// Channel to the suite's internal listener, where `service` tokens are accepted
    /// (the gateway refuses them).
    pub internal: Internal,
    /// The separate processes, for [`Backend::Replicas`].
    pub topology: Option<topology::Topology>,
    running: Option<vern_cli::Running>,
    /// The runtime a restarted suite runs on (see [`OwnRuntime`]).
    runtime: Option<OwnRuntime>,
    /// The configuration of an in-process suite (for [`Suite::restart_with`]).
    config: Option<Config>,
    _dir: tempfile::TempDir,
    pg_schemas: Option<(String, Vec<String>)>,
}

/// A runtime of a restarted suite's own. A process that stops takes its tasks (relays,
/// caches, listeners) and their database pools with it; a suite restarted in-process
/// must too, or every restart adds its pools' connections to the last (PostgreSQL's 100
/// ran out). Shutting the runtime down drops every task it spawned.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            // Not a blocking drop: the suite may be dropped inside a test's runtime.
            rt.shutdown_background();
        }
    }
}

/// Starts the suite on a runtime of its own ([`OwnRuntime`]).
async fn start_isolated(config: Config) -> anyhow::Result<(vern_cli::Running, OwnRuntime)> {
    let rt = OwnRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
    ));
    let started =
        rt.0.as_ref()
            .map(|r| {
                r.spawn(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    vern_cli::start_suite(config, listener).await
                })
            })
            .ok_or_else(|| anyhow::anyhow!("no runtime"))?;
    // On an error the runtime goes with its half-started services.
    let running = started.await??;
    Ok((running, rt))
}

/// Which database the suite runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// SQLite files in a temp dir (the `vern dev` default).
    Sqlite,
    /// PostgreSQL from `VERN_TEST_DATABASE_URL`, a fresh schema per service.
    Postgres,
    /// As deployed: every component its own `vern serve` process on PostgreSQL, two
    /// replicas of every service behind one name (127.0.0.2 and 127.0.0.3), one
    /// gateway ([`topology`]). The configuration hook does not apply.
    Replicas,
    /// [`Backend::Replicas`] with every hop over TLS and mutual TLS between the
    /// components (`VERN_TOPOLOGY_TLS=1`); this test process trusts the topology's CA
    /// and presents its certificate (as a component would) to the services.
    ReplicasTls,
}

/// The services' internal listener(s): one in process, or each service's own name
/// (balanced over its replicas) in a topology.
#[derive(Clone)]
pub enum Internal {
    /// The suite's one internal listener.
    One(Channel),
    /// Each service at its own URL.
    PerService(std::sync::Arc<Vec<(&'static str, vern_kit::client::ServiceChannel)>>),
}

impl tower::Service<http::Request<tonic::body::Body>> for Internal {
    type Response = http::Response<tonic::body::Body>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        use tower::ServiceExt;
        match self {
            Internal::One(ch) => {
                let ch = ch.clone();
                Box::pin(async move { Ok(ch.oneshot(req).await?) })
            }
            Internal::PerService(all) => {
                let owner = vern_gateway::owning_service(req.uri().path());
                let ch = all
                    .iter()
                    .find(|(name, _)| Some(*name) == owner)
                    .map(|(_, ch)| ch.clone());
                Box::pin(async move {
                    match ch {
                        Some(ch) => ch.oneshot(req).await,
                        None => Err("no such service".into()),
                    }
                })
            }
        }
    }
}

impl Suite {
    /// Starts the suite; `None` for PostgreSQL when no URL is configured (and it is not
    /// required).
    pub async fn start(backend: Backend) -> Option<Suite> {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts the suite after `adjust` has changed its configuration.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<Suite> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        config.auth.hs256_secret = Some(SECRET.into());
        // Dev keys in the temp data dir (audit checkpoint signing).
        config.auth.dev_key = true;
        // As `vern dev`: reflection without a token.
        config.server.reflection = vern_kit::config::ReflectionMode::Open;
        // 32 bytes, base64: the test master key for personal data.
        config.keys.master_key = Some("dmVybi1lMmUtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=".into());
        adjust(&mut config);
        if let Backend::Replicas | Backend::ReplicasTls = backend {
            return Self::start_topology(dir, &config, matches!(backend, Backend::ReplicasTls))
                .await;
        }
        let mut pg_schemas = None;
        if let Backend::Postgres = backend {
            let Some(url) = vern_kit::testing::pg_url() else {
                eprintln!("skipping PostgreSQL end-to-end test: no URL");
                return None;
            };
            let prefix = format!("e2e_{}", uuid::Uuid::new_v4().simple());
            pg_schemas = Some((
                url.clone(),
                vern_cli::SERVICES
                    .iter()
                    .map(|s| format!("{prefix}_{s}"))
                    .collect::<Vec<_>>(),
            ));
            config.database_url = Some(url);
            config.database_schema_prefix = prefix;
        }
        let (running, runtime) = start_isolated(config.clone()).await.expect("suite starts");
        let addr = running.addr;
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let internal = vern_kit::client::unix_channel(
            tonic::transport::Endpoint::from_static("http://localhost"),
            running.internal_socket.clone(),
        );
        Some(Suite {
            addr,
            channel,
            internal: Internal::One(internal),
            topology: None,
            running: Some(running),
            runtime: Some(runtime),
            config: Some(config),
            _dir: dir,
            pg_schemas,
        })
    }

    /// Stops an in-process suite and starts it again on the same data (files or
    /// schemas) after `adjust` has changed its configuration; the error of a start
    /// that fails (the suite then stays stopped).
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) -> anyhow::Result<()> {
        let mut config = self.config.clone().expect("an in-process suite");
        if let Some(r) = self.running.take() {
            let _ = r.shutdown.send(());
            let _ = r.handle.await;
        }
        self.runtime = None;
        adjust(&mut config);
        let (running, runtime) = start_isolated(config.clone()).await?;
        self.runtime = Some(runtime);
        self.addr = running.addr;
        self.channel = Channel::from_shared(format!("http://{}", running.addr))?
            .connect()
            .await?;
        self.internal = Internal::One(vern_kit::client::unix_channel(
            tonic::transport::Endpoint::from_static("http://localhost"),
            running.internal_socket.clone(),
        ));
        self.running = Some(running);
        self.config = Some(config);
        Ok(())
    }

    async fn start_topology(dir: tempfile::TempDir, config: &Config, tls: bool) -> Option<Suite> {
        let Some(url) = vern_kit::testing::pg_url() else {
            eprintln!("skipping PostgreSQL end-to-end test: no URL");
            return None;
        };
        let master = config.keys.master_key.clone().unwrap_or_default();
        let topology = tokio::task::spawn_blocking(move || {
            // As the in-process suite: reflection without a token.
            let mut env = vec![("VERN_SERVER__REFLECTION", "open")];
            if tls {
                env.push(("VERN_TOPOLOGY_TLS", "1"));
            }
            topology::Topology::start(2, &url, SECRET, &master, &env)
        })
        .await
        .expect("topology task");
        let addr = topology.gateway();
        let channel = if tls {
            vern_kit::tls::install_client(&vern_kit::config::TlsConfig {
                ca_file: Some(topology.tls_file("ca.crt")),
                client_cert_file: Some(topology.tls_file("tls.crt")),
                client_key_file: Some(topology.tls_file("tls.key")),
                ..Default::default()
            })
            .expect("client TLS");
            vern_kit::tls::channel(&format!("https://localhost:{}", addr.port()))
                .await
                .expect("connect to the gateway over TLS")
        } else {
            Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .expect("connect to the gateway")
        };
        let internal = Internal::PerService(std::sync::Arc::new(
            topology::SERVICES
                .iter()
                .map(|s| {
                    (
                        *s,
                        vern_kit::client::channel(&topology.url(s)).expect("service url"),
                    )
                })
                .collect(),
        ));
        let pg_schemas = Some((
            std::env::var(vern_kit::testing::PG_URL_VAR).unwrap_or_default(),
            topology.schemas(),
        ));
        Some(Suite {
            addr,
            channel,
            internal,
            topology: Some(topology),
            running: None,
            runtime: None,
            config: None,
            _dir: dir,
            pg_schemas,
        })
    }

    /// A [`Backend::Replicas`] suite restarted with another master key and `env` (see
    /// [`topology::Topology::restart`]), on the same data; the gateway channel is made
    /// again.
    pub async fn restart_topology(&mut self, master_key: &str, env: &[(&str, &str)]) {
        let mut topology = self.topology.take().expect("a topology suite");
        let env: Vec<(String, String)> = [("VERN_SERVER__REFLECTION", "open")]
            .iter()
            .chain(env)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let master = master_key.to_owned();
        let topology = tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            topology.restart(&master, &env);
            topology
        })
        .await
        .expect("topology task");
        self.channel = Channel::from_shared(format!("http://{}", topology.gateway()))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the gateway");
        self.topology = Some(topology);
    }

    /// The suite's traces and metrics (started from `telemetry.*` in the config).
    pub fn telemetry(&self) -> Option<&vern_kit::telemetry::Telemetry> {
        self.running.as_ref().map(|r| &r.telemetry)
    }

    /// The suite's data directory (SQLite files).
    pub fn data_dir(&self) -> std::path::PathBuf {
        match &self.topology {
            Some(t) => t.data_dir(),
            None => self._dir.path().to_path_buf(),
        }
    }

    /// Where `service` keeps its data: its SQLite file in the data dir, or the
    /// PostgreSQL URL with its schema.
    pub fn db_target(&self, service: &str) -> vern_kit::db::DbTarget {
        match &self.pg_schemas {
            Some((url, schemas)) => vern_kit::db::DbTarget {
                url: url.clone(),
                schema: schemas
                    .iter()
                    .find(|s| s.ends_with(&format!("_{service}")))
                    .cloned(),
                max_connections: None,
            },
            None => vern_kit::db::DbTarget::for_service(None, &self.data_dir(), service),
        }
    }

    /// Stops the suite and drops PostgreSQL schemas.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown.send(());
            let _ = r.handle.await;
        }
        self.runtime = None;
        if let Some(mut t) = self.topology.take() {
            // The script drops its own schemas.
            self.pg_schemas = None;
            let _ = tokio::task::spawn_blocking(move || t.stop()).await;
        }
        if let Some((url, schemas)) = self.pg_schemas.take() {
            vern_kit::testing::drop_schemas(&url, &schemas).await;
        }
    }
}

/// A token for the suite.
pub fn token(roles: &[&str], tenants: &[&str], expires_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    sign_hs256(
        &Claims {
            sub: "e2e".into(),
            tenant: tenants.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            iss: "vern-dev".into(),
            aud: "vern".into(),
            exp: now + expires_in,
            nbf: now.min(now + expires_in),
            iat: now,
        },
        SECRET.as_bytes(),
    )
    .expect("sign")
}

/// Creates tenant `id` (named `name`) as a platform admin through `channel`.
pub async fn create_tenant(channel: &Channel, id: &str, name: &str) {
    use vern_proto::tenants::v1 as tpb;
    let platform = token(&["platform-admin"], &[], 600);
    tpb::tenant_service_client::TenantServiceClient::new(channel.clone())
        .create_tenant(authed(
            tpb::CreateTenantRequest {
                tenant_id: id.into(),
                name: name.into(),
                org_number: "989990748".into(),
                dpo_email: format!("personvern@{id}.example"),
                request_id: format!("create-{id}"),
                ..Default::default()
            },
            &platform,
        ))
        .await
        .expect("tenant created");
}

/// Calls any RPC by path with an empty message (valid for every proto3 request) and
/// returns the status code (`Ok` for success). Streaming RPCs are opened and dropped.
pub async fn raw_call<C>(
    channel: &C,
    path: &str,
    server_streaming: bool,
    headers: &[(&'static str, String)],
) -> tonic::Code
where
    C: tonic::client::GrpcService<tonic::body::Body> + Clone,
    C::Error: Into<tonic::codegen::StdError>,
    C::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <C::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    use tonic::codegen::http::uri::PathAndQuery;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    if grpc.ready().await.is_err() {
        return tonic::Code::Unavailable;
    }
    let mut req = tonic::Request::new(());
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().expect("metadata"));
    }
    let path = PathAndQuery::try_from(path).expect("path");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let result = if server_streaming {
        grpc.server_streaming(req, path, codec).await.map(|_| ())
    } else {
        grpc.unary(req, path, codec).await.map(|_| ())
    };
    match result {
        Ok(()) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// Every RPC of the vern packages: (path, server-streaming).
pub fn all_rpcs() -> Vec<(String, bool)> {
    vern_proto::rpcs::all()
        .expect("descriptors")
        .into_iter()
        .map(|r| (r.path(), r.server_streaming))
        .collect()
}

/// A token signed with a PEM key (EdDSA/RS256/ES256) naming `kid`.
pub fn token_with_key(pem: &str, kid: &str, roles: &[&str], tenants: &[&str]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    vern_kit::auth::sign_with_pem(
        &Claims {
            sub: format!("e2e-{kid}"),
            tenant: tenants.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            iss: "vern-dev".into(),
            aud: "vern".into(),
            exp: now + 300,
            nbf: now,
            iat: now,
        },
        pem.as_bytes(),
        kid,
    )
    .expect("sign")
}

/// Wraps `msg` in a request carrying `token`.
pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("metadata");
    req.metadata_mut().insert("authorization", value);
    req
}

/// [`authed`], vouched for as the gateway does when it forwards a call: a service's
/// own port serves a caller's token only with a component's service token beside it.
pub fn vouched<T>(msg: T, caller: &str) -> tonic::Request<T> {
    let mut req = authed(msg, caller);
    let via = token(&["service"], &["vern-platform"], 600);
    req.metadata_mut().insert(
        vern_kit::context::VIA_HEADER,
        via.parse().expect("metadata"),
    );
    req
}

/// `GET /metrics` over a plain TCP connection (Prometheus text format).
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        s.read_to_string(&mut out),
    )
    .await
    .expect("in time")
    .expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The value of the sample `series` (exact name and labels) in a scrape.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    })
}

/// A privacy officer of `tenant` verifies the requester's identity (ID document) and
/// fulfils rights request `rid`; the request as fulfilment left it.
pub async fn verify_and_fulfil(
    channel: &Channel,
    tenant: &str,
    rid: &str,
) -> vern_proto::rights::v1::RightsRequest {
    use vern_proto::rights::v1 as pb;
    let officer = token(&["privacy-officer"], &[tenant], 600);
    let mut rights = pb::rights_service_client::RightsServiceClient::new(channel.clone());
    rights
        .verify_identity(authed(
            pb::VerifyIdentityRequest {
                rights_request_id: rid.into(),
                method: pb::VerificationMethod::IdDocument as i32,
                request_id: format!("verify-{rid}"),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("verify");
    rights
        .fulfil_request(authed(
            pb::FulfilRequestRequest {
                rights_request_id: rid.into(),
                request_id: format!("fulfil-{rid}"),
                ..Default::default()
            },
            &officer,
        ))
        .await
        .expect("fulfil")
        .into_inner()
}

/// Every event of `tenant`'s audit chain (`vern-platform`: the platform's), read page by
/// page through `channel` with an auditor token naming it.
pub async fn chain_events(
    channel: &Channel,
    tenant: &str,
) -> Vec<vern_proto::audit::v1::AuditEvent> {
    use vern_proto::audit::v1 as apb;
    let auditor = token(&["auditor"], &[tenant], 600);
    let mut audit = apb::audit_service_client::AuditServiceClient::new(channel.clone());
    let mut events = vec![];
    let mut page_token = String::new();
    loop {
        let page = audit
            .query_events(authed(
                apb::QueryEventsRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                &auditor,
            ))
            .await
            .expect("the chain is readable by its auditor")
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}
