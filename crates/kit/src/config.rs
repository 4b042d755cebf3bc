//! Configuration: defaults, then a TOML file, then `VERN_*` environment variables
//! (nested keys with `__`, e.g. `VERN_AUTH__ISSUER`). `vern dev` needs neither.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the `vern dev` default).
    #[default]
    Human,
    /// One JSON object per line (production).
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the gateway listens (and the whole suite, in `vern dev`).
    pub listen: SocketAddr,
    /// Directory for SQLite files and the dev signing key.
    pub data_dir: PathBuf,
    /// Database URL shared by all services (`postgres://…` or `sqlite://…`). With
    /// PostgreSQL each service uses its own schema (`vern_<service>`). Unset: one
    /// SQLite file per service in `data_dir`.
    pub database_url: Option<String>,
    /// Prefix of the PostgreSQL schema names: `<prefix>_<service>`.
    pub database_schema_prefix: String,
    /// Largest PostgreSQL connection pool of each store (unset: 16). Replicas ×
    /// stores × this must stay under the server's `max_connections`.
    pub database_max_connections: Option<u32>,
    /// PostgreSQL LISTEN/NOTIFY is available (true by default). Behind a pooler in
    /// transaction mode (PgBouncer) it is not: set false, and the caches that other
    /// replicas' writes reach by notification are off (Check then reads the database).
    pub database_listen_notify: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log_level: String,
    /// Token verification.
    pub auth: AuthConfig,
    /// Server limits.
    pub server: ServerConfig,
    /// Per-service settings for `vern serve <service>`.
    pub services: ServicesConfig,
    /// Keys protecting personal data at rest.
    pub keys: KeysConfig,
    /// Retention sweeps.
    pub retention: RetentionConfig,
    /// Outbox relays.
    pub outbox: OutboxConfig,
    /// The audit service's checkpoint verification.
    pub audit: AuditConfig,
    /// Traces and metrics (OpenTelemetry, Prometheus).
    pub telemetry: TelemetryConfig,
    /// TLS of this component's listeners and of its calls to `https://` services.
    pub tls: TlsConfig,
    /// The web console (`vern serve console`, and `vern dev`).
    pub console: ConsoleConfig,
}

/// The web console: a client of the gateway, serving people's browsers.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsoleConfig {
    /// Where the console listens (plain HTTP: behind TLS at the ingress when deployed;
    /// loopback in `vern dev`). Empty: `vern dev` serves no console.
    #[serde(deserialize_with = "empty_is_none")]
    pub listen: Option<SocketAddr>,
    /// The gateway the console calls with each person's token (`vern serve console`;
    /// `vern dev` uses its own gateway).
    pub gateway_url: String,
    /// The address people reach the console at, e.g. `https://vern.example.no`. An
    /// `https://` address turns on HSTS; unset: the listen address over HTTP.
    pub public_url: Option<String>,
    /// Sign-in through the organisation's OpenID provider.
    pub oidc: ConsoleOidcConfig,
    /// 32 bytes, standard base64 (`openssl rand -base64 32`), the same on every
    /// replica: seals each session in the shared store (it holds the provider's
    /// tokens). Required with `oidc`; `vern dev` derives one from its development key.
    /// Changing it signs everyone out.
    #[serde(deserialize_with = "empty_string_is_none")]
    pub session_key: Option<String>,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("listen", &self.listen)
            .field("gateway_url", &self.gateway_url)
            .field("public_url", &self.public_url)
            .field("oidc", &self.oidc)
            .field("session_key", &self.session_key.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            gateway_url: "http://127.0.0.1:50051".into(),
            public_url: None,
            oidc: ConsoleOidcConfig::default(),
            session_key: None,
        }
    }
}

/// The console as a client of an OpenID provider (authorization code flow with PKCE,
/// confidential client). Env: `VERN_CONSOLE__OIDC__ISSUER_URL=https://idp.example.no`,
/// `VERN_CONSOLE__OIDC__CLIENT_SECRET=…` (from a Secret). The provider registers
/// `<public_url>/oidc/callback` as the redirect URI and `<public_url>/` as the
/// post-logout redirect URI. The gateway must accept the provider's access tokens
/// (`auth.jwks_url`, `auth.issuer`, `auth.audience`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsoleOidcConfig {
    /// The provider's issuer URL. Unset: no sign-in through a provider.
    #[serde(deserialize_with = "empty_string_is_none")]
    pub issuer_url: Option<String>,
    /// The console's client id.
    pub client_id: String,
    /// The console's client secret.
    pub client_secret: String,
    /// Scopes asked for besides `openid` (space-separated in env).
    pub scopes: String,
    /// The resource indicator (RFC 8707) of vern's API, e.g. `urn:vern`: sent when set.
    #[serde(deserialize_with = "empty_string_is_none")]
    pub resource: Option<String>,
}

impl Default for ConsoleOidcConfig {
    fn default() -> Self {
        Self {
            issuer_url: None,
            client_id: "vern-console".into(),
            client_secret: String::new(),
            scopes: String::new(),
            resource: None,
        }
    }
}

impl std::fmt::Debug for ConsoleOidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleOidcConfig")
            .field("issuer_url", &self.issuer_url)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

fn empty_string_is_none<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()))
}

/// TLS files (PEM). Unset: plaintext listeners (`vern dev` on loopback) and clients of
/// `https://` URLs that trust the system's roots. Every file is read again when it
/// changes (`crate::tls`). Env: `VERN_TLS__CERT_FILE=/etc/vern/tls/tls.crt`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// Certificate chain of this component's listeners; with `key_file`, they speak
    /// TLS only.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// CA whose client certificates the listeners require (mutual TLS). Unset: no
    /// client certificate is asked for.
    pub client_ca_file: Option<PathBuf>,
    /// CA that `https://` services' certificates must chain to. Unset: the system's
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// Certificate presented to `https://` services (mutual TLS), with its key.
    pub client_cert_file: Option<PathBuf>,
    /// Private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

/// Traces and metrics. Both are off unless configured; telemetry never carries
/// personal data (ids, kinds, codes and counts only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`: traces and metrics are pushed
    /// there. Unset or empty: no export.
    pub otlp_endpoint: Option<String>,
    /// Serve `GET /metrics` (Prometheus text format) on this address. Unset or empty: off.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve `/metrics` over TLS with the component's certificate (`tls.cert_file`;
    /// with `tls.client_ca_file` scrapers need a client certificate). Default: plain
    /// HTTP, as Prometheus scrapes inside the cluster by default.
    pub metrics_tls: bool,
    /// `service.name` prefix; each component reports `<service_name>-<component>`.
    pub service_name: String,
    /// How often metrics are pushed over OTLP, seconds.
    pub metrics_export_interval_seconds: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            metrics_listen: None,
            metrics_tls: false,
            service_name: "vern".into(),
            metrics_export_interval_seconds: 15,
        }
    }
}

/// Retention sweeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Seconds between scheduled sweeps of every tenant with retention policies (the
    /// first one interval after start); 0 turns scheduled sweeps off.
    pub sweep_interval_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            sweep_interval_seconds: 3600,
        }
    }
}

/// Outbox relays (each service's notifications to the others).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    /// Deliveries a notification gets when its receiver keeps failing on it (any error
    /// but a refusal, which parks it at once, and an unreachable or overloaded
    /// receiver, which parks nothing) before it is parked for an operator (`vern
    /// outbox list --parked`, `vern outbox retry`). Retries back off exponentially up
    /// to 30 s, so 12 attempts take about 2 minutes. 0: retried for ever.
    pub max_attempts: u32,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { max_attempts: 12 }
    }
}

/// The audit service's checkpoint verification. (The signing key itself is
/// `VERN_AUDIT_SIGNING_KEY_FILE`.)
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AuditConfig {
    /// Public keys of retired checkpoint signing keys, each 64 hex characters or the
    /// path of a file holding them (`vern audit public-key` prints one). Checkpoints
    /// are verified by their key id against these and the current key, so chains
    /// signed before a rotation still verify. Env:
    /// `VERN_AUDIT__RETIRED_PUBLIC_KEYS='["<hex>", "/etc/vern/audit-retired/2026.hex"]'`.
    pub retired_public_keys: Vec<String>,
}

/// Keys protecting personal data at rest (envelope encryption and blind indexes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KeysConfig {
    /// Base64 of 32 random bytes; each tenant's key-encryption key is derived from it
    /// (HMAC-SHA-256 with the tenant id). Unset in `vern dev`: a random key is created
    /// in `<data_dir>/dev-master.key`. Unset elsewhere: services holding personal data
    /// refuse to start.
    pub master_key: Option<String>,
    /// Version of `master_key` (1 unless rotated). Data keys wrapped under 2 or later
    /// carry their version; `vern keys rotate-master` re-wraps every data key under
    /// this one.
    pub master_key_version: u32,
    /// Earlier master keys (version → base64) that still open data keys not yet
    /// re-wrapped. Remove one once `vern keys status` shows nothing uses it (and it is
    /// not `index_key_version`). Env: `VERN_KEYS__PREVIOUS_MASTER_KEYS__1=<base64>`.
    pub previous_master_keys: std::collections::HashMap<String, String>,
    /// The master key version whose derived keys key the blind indexes and request
    /// fingerprints (1 unless set). Rotating the master key leaves the indexes as
    /// they are, so this version stays configured (it wraps nothing once re-wrapped)
    /// until a re-index moves the indexes to another version.
    pub index_key_version: Option<u32>,
    /// During a re-index (`vern keys reindex`): the index version the entries move
    /// from. Lookups try both versions' digests and request fingerprints match under
    /// either until this is removed, which is safe once `vern keys status` counts no
    /// entry under it.
    pub previous_index_key_version: Option<u32>,
    /// Explicit per-tenant keys (tenant id → base64 of 32 bytes); they take precedence
    /// over the derived ones, e.g. for a department that holds its own key.
    pub tenant_keys: std::collections::HashMap<String, String>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            master_key: None,
            master_key_version: 1,
            previous_master_keys: Default::default(),
            index_key_version: None,
            previous_index_key_version: None,
            tenant_keys: Default::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("vern-data"),
            database_url: None,
            database_schema_prefix: "vern".into(),
            database_max_connections: None,
            database_listen_notify: true,
            log_format: LogFormat::Human,
            log_level: "info,sea_orm_migration=warn".into(),
            auth: AuthConfig::default(),
            server: ServerConfig::default(),
            services: ServicesConfig::default(),
            keys: KeysConfig::default(),
            retention: RetentionConfig::default(),
            outbox: OutboxConfig::default(),
            audit: AuditConfig::default(),
            telemetry: TelemetryConfig::default(),
            tls: TlsConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

/// Token verification settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
    /// HS256 shared secret. Unset: `vern dev` creates a random one in
    /// `<data_dir>/dev-signing.key` and `vern token` signs with it.
    pub hs256_secret: Option<String>,
    /// Clock leeway for `exp`/`nbf`, seconds (at most 30).
    pub leeway_seconds: u64,
    /// Accept HS256 tokens signed with the dev key in `data_dir` (`vern dev` turns this on).
    pub dev_key: bool,
    /// JWKS file with the public keys (RS256, ES256, EdDSA) that sign tokens.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL (http or https) with the public keys that sign tokens.
    pub jwks_url: Option<String>,
    /// How often the JWKS is re-read, seconds (keys rotate without a restart).
    pub jwks_refresh_seconds: u64,
    /// Verified tokens kept in memory (RS256/ES256 verification is expensive).
    pub token_cache_size: usize,
    /// Longest token lifetime accepted (`exp` at most this far ahead), seconds; 0 turns
    /// the check off. A token valid for longer is refused whoever signed it.
    pub max_token_lifetime_seconds: u64,
    /// How long a tenant's status (exists, active) is trusted before it is asked again,
    /// seconds: a suspension takes effect everywhere within this time.
    pub tenant_status_ttl_seconds: u64,
    /// Private key (PEM) the services sign their own service-role tokens with when they
    /// call each other; its public key must be in the JWKS. Unset: the HS256 secret.
    pub service_key_file: Option<PathBuf>,
    /// Key id of `service_key_file` in the JWKS. Unset: the key's RFC 7638 thumbprint
    /// (what `vern keys generate` names keys by), so a key replaced in the file (read
    /// again within a second) carries its own id and both can be in the JWKS at once.
    pub service_key_id: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "vern-dev".into(),
            audience: "vern".into(),
            hs256_secret: None,
            leeway_seconds: 30,
            dev_key: false,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_seconds: 300,
            token_cache_size: 10_000,
            max_token_lifetime_seconds: 24 * 60 * 60,
            tenant_status_ttl_seconds: 5,
            service_key_file: None,
            service_key_id: None,
        }
    }
}

/// Server limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Largest accepted or sent gRPC message, bytes.
    pub max_message_bytes: usize,
    /// Calls served at once before new ones get RESOURCE_EXHAUSTED.
    pub concurrency_limit: usize,
    /// Calls per second each client (token subject) may make; 0 turns the limit off.
    pub rate_limit_per_client: u32,
    /// Burst each client may make above its rate.
    pub rate_limit_burst: u32,
    /// Longest a call may take when the client sets no deadline, seconds.
    pub request_timeout_seconds: u64,
    /// How long shutdown waits for in-flight calls, seconds.
    pub shutdown_grace_seconds: u64,
    /// Calls one client (tenant and token subject) may have in progress at once, so
    /// one client cannot take the whole `concurrency_limit` from every other tenant.
    pub concurrency_limit_per_client: usize,
    /// Server reflection: `open` (no token; `vern dev`), `authenticated` (any valid
    /// token) or `off`.
    pub reflection: ReflectionMode,
    /// Longest a client connection lives before the server asks it (HTTP/2 GOAWAY,
    /// in-flight calls finish) to reconnect, seconds; 0: no limit. Long-lived clients
    /// then pick up replicas added since they connected.
    pub max_connection_age_seconds: u64,
    /// Longest a server stream (WatchEvents, ExportEvents with `follow`) runs before it
    /// ends with UNAVAILABLE, seconds; the client resumes from its last cursor. Bounds
    /// how long one authorisation can be stretched and lets streams move to new replicas.
    pub max_stream_seconds: u64,
    /// Server streams open at once on this server; the next gets RESOURCE_EXHAUSTED.
    /// Streams have their own budget: they hold it for their whole life, calls only
    /// until their answer.
    pub max_streams: usize,
    /// Server streams one client (tenant and token subject) may have open at once.
    pub max_streams_per_client: usize,
    /// How long a new connection may take to speak: its TLS handshake and the HTTP/2
    /// preface must both arrive within this many seconds, or it is closed.
    pub handshake_timeout_seconds: u64,
}

/// Who may use server reflection (the RPC list with every proto comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReflectionMode {
    /// Anyone, without a token (tooling against `vern dev`).
    Open,
    /// Callers with a valid token.
    Authenticated,
    /// Nobody: reflection answers UNIMPLEMENTED.
    Off,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            concurrency_limit: 1024,
            rate_limit_per_client: 20_000,
            rate_limit_burst: 40_000,
            request_timeout_seconds: 30,
            shutdown_grace_seconds: 20,
            concurrency_limit_per_client: 256,
            reflection: ReflectionMode::Authenticated,
            max_connection_age_seconds: 300,
            max_stream_seconds: 3600,
            max_streams: 1024,
            max_streams_per_client: 64,
            handshake_timeout_seconds: 10,
        }
    }
}

/// Listen addresses of the individual services (`vern serve <service>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServicesConfig {
    /// TenantService.
    pub tenants: ServiceEndpoint,
    /// SubjectService.
    pub subjects: ServiceEndpoint,
    /// ConsentService.
    pub consents: ServiceEndpoint,
    /// RetentionService.
    pub retention: ServiceEndpoint,
    /// RightsService.
    pub rights: ServiceEndpoint,
    /// AuditService.
    pub audit: ServiceEndpoint,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        let at = |port: u16| ServiceEndpoint {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            url: format!("http://127.0.0.1:{port}"),
        };
        Self {
            tenants: at(50061),
            subjects: at(50062),
            consents: at(50063),
            retention: at(50064),
            rights: at(50065),
            audit: at(50066),
        }
    }
}

/// Where one service listens and where others reach it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    /// Listen address of the service process.
    pub listen: SocketAddr,
    /// URL the gateway and other services use to reach it (a DNS name in Kubernetes).
    pub url: String,
}

impl Config {
    /// Loads defaults, then `file` (or `$VERN_CONFIG`, or `./vern.toml` if present),
    /// then `VERN_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("VERN_CONFIG").map(PathBuf::from))
            .or_else(|| {
                let p = PathBuf::from("vern.toml");
                p.exists().then_some(p)
            });
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed("VERN_").ignore(&["CONFIG"]).split("__"))
            .extract()
            .map_err(Box::new)
    }
}

/// An address that may be given as an empty string (e.g. `VERN_TELEMETRY__METRICS_LISTEN=`)
/// to mean "off".
fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let raw: Option<String> = serde::Deserialize::deserialize(d)?;
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_nothing() {
        let c = Config::default();
        assert_eq!(c.listen.port(), 50051);
        assert_eq!(c.auth.leeway_seconds, 30);
        assert!(c.database_url.is_none());
        assert_eq!(c.outbox.max_attempts, 12);
        assert_eq!(c.console.listen.map(|a| a.port()), Some(8080));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own test helper
    fn file_then_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "listen = \"127.0.0.1:6000\"\nlog_format = \"json\"\n[auth]\nissuer = \"file\"\n",
            )?;
            jail.set_env("VERN_AUTH__ISSUER", "env");
            jail.set_env("VERN_OUTBOX__MAX_ATTEMPTS", "3");
            jail.set_env("VERN_TELEMETRY__OTLP_ENDPOINT", "http://127.0.0.1:4317");
            jail.set_env("VERN_TELEMETRY__METRICS_LISTEN", "127.0.0.1:9464");
            let c = Config::load(Some(Path::new("custom.toml"))).map_err(|e| *e)?;
            assert_eq!(
                c.telemetry.otlp_endpoint.as_deref(),
                Some("http://127.0.0.1:4317")
            );
            assert_eq!(c.telemetry.metrics_listen.map(|a| a.port()), Some(9464));
            assert_eq!(c.telemetry.service_name, "vern");
            assert_eq!(c.listen.port(), 6000);
            assert_eq!(c.log_format, LogFormat::Json);
            assert_eq!(c.auth.issuer, "env");
            assert_eq!(c.outbox.max_attempts, 3);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own test helper
    fn empty_metrics_listen_is_off() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("m.toml", "[telemetry]\nmetrics_listen = \"\"\n")?;
            let c = Config::load(Some(Path::new("m.toml"))).map_err(|e| *e)?;
            assert!(c.telemetry.metrics_listen.is_none());
            jail.set_env("VERN_TELEMETRY__METRICS_LISTEN", "not an address");
            assert!(Config::load(Some(Path::new("m.toml"))).is_err());
            Ok(())
        });
    }
}
