//! Harness for end-to-end tests: boots the whole suite in process on a loopback port
//! and hands out real gRPC clients and tokens.

use std::net::SocketAddr;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use vern_kit::auth::{Claims, sign_hs256};
use vern_kit::config::Config;

const SECRET: &str = "e2e-test-secret";

/// A suite running for one test.
pub struct Suite {
    /// Gateway address.
    pub addr: SocketAddr,
    /// Channel to the gateway.
    pub channel: Channel,
    /// Channel to the suite's internal listener, where `service` tokens are accepted
    /// (the gateway refuses them).
    pub internal: Channel,
    running: Option<vern_cli::Running>,
    _dir: tempfile::TempDir,
    pg_schemas: Option<(String, Vec<String>)>,
}

/// Which database the suite runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// SQLite files in a temp dir (the `vern dev` default).
    Sqlite,
    /// PostgreSQL from `VERN_TEST_DATABASE_URL`, a fresh schema per service.
    Postgres,
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
        let mut pg_schemas = None;
        if let Backend::Postgres = backend {
            let Ok(url) = std::env::var(vern_kit::testing::PG_URL_VAR) else {
                assert!(
                    std::env::var(vern_kit::testing::REQUIRE_PG_VAR).as_deref() != Ok("1"),
                    "PostgreSQL end-to-end tests must run"
                );
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = vern_cli::start_suite(config, listener)
            .await
            .expect("suite starts");
        let addr = running.addr;
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let internal = Channel::from_shared(format!("http://{}", running.internal_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect internal");
        Some(Suite {
            addr,
            channel,
            internal,
            running: Some(running),
            _dir: dir,
            pg_schemas,
        })
    }

    /// The suite's traces and metrics (started from `telemetry.*` in the config).
    pub fn telemetry(&self) -> Option<&vern_kit::telemetry::Telemetry> {
        self.running.as_ref().map(|r| &r.telemetry)
    }

    /// The suite's data directory (SQLite files).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
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
            },
            None => vern_kit::db::DbTarget::for_service(None, self.data_dir(), service),
        }
    }

    /// Stops the suite and drops PostgreSQL schemas.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown.send(());
            let _ = r.handle.await;
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
pub async fn raw_call(
    channel: &Channel,
    path: &str,
    server_streaming: bool,
    headers: &[(&'static str, String)],
) -> tonic::Code {
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
    use prost::Message;
    let fds = prost_types::FileDescriptorSet::decode(vern_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptors");
    let mut out = vec![];
    for file in fds.file {
        let pkg = file.package().to_owned();
        if !pkg.starts_with("vern.") {
            continue;
        }
        for svc in &file.service {
            for m in &svc.method {
                out.push((
                    format!("/{pkg}.{}/{}", svc.name(), m.name()),
                    m.server_streaming(),
                ));
            }
        }
    }
    out
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
