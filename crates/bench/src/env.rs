//! Where a benchmark runs: an in-process suite (as `vern dev`, in a temp dir) or a
//! running one (`--target`), and the tokens to call it with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use vern_kit::auth::{Claims, sign_hs256};
use vern_kit::config::Config;

use crate::load::BoxFuture;

/// A suite started by the [`Host`].
pub struct SuiteHandle {
    /// Where its gateway listens.
    pub addr: SocketAddr,
    /// Its internal listener's URL (service-role calls; `unix:` for `vern dev`).
    pub internal_url: String,
    /// Stops it (drains in-flight calls).
    pub stop: Box<dyn FnOnce() -> BoxFuture<()> + Send>,
}

/// Counts of a CSV import.
#[derive(Debug, Clone, Default)]
pub struct ImportCounts {
    /// When answers arrived, in order: (seconds since the import began, rows answered).
    pub answered: Vec<(f64, usize)>,
    /// Rows read.
    pub rows: usize,
    /// Subjects created.
    pub created: usize,
    /// Rows whose subject existed.
    pub present: usize,
    /// Refused rows.
    pub invalid: usize,
    /// Rows whose call failed.
    pub failed: usize,
}

/// What the `vern` binary lends the benchmarks: the suite assembly and the CSV import
/// (both live in `vern-cli`, which depends on this crate).
#[async_trait::async_trait]
pub trait Host: Send + Sync {
    /// Starts the whole suite on `listener`, as `vern dev` does.
    async fn start_suite(
        &self,
        config: Config,
        listener: TcpListener,
    ) -> anyhow::Result<SuiteHandle>;

    /// Imports `csv` for `tenant` through `channel`, as `vern subjects import` does
    /// (ImportSubjects calls of `batch` rows, `concurrency` in flight), timing each
    /// answer from the first call (the file is read before).
    async fn import_csv(
        &self,
        channel: Channel,
        token: String,
        tenant: String,
        csv: PathBuf,
        batch: usize,
        concurrency: usize,
    ) -> anyhow::Result<ImportCounts>;

    /// Re-wraps every data key under `version` through `channel` with a platform-admin
    /// `token`, as `vern keys rotate-master` does: per service (name, examined,
    /// re-wrapped).
    async fn rotate_master(
        &self,
        channel: Channel,
        token: String,
        version: u32,
        page_size: i32,
    ) -> anyhow::Result<Vec<(&'static str, i64, i64)>>;
}

/// Where to run, from the command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TargetArgs {
    /// A running vern gateway (e.g. http://127.0.0.1:50051) instead of an in-process
    /// suite. Loopback only. Its per-client rate limit applies (20,000/s by default):
    /// start it with VERN_SERVER__RATE_LIMIT_PER_CLIENT and VERN_SERVER__RATE_LIMIT_BURST
    /// raised to measure beyond it.
    #[arg(long)]
    pub target: Option<String>,
    /// With --target: the internal listener where service-role calls are accepted
    /// (`vern dev` prints it; in a deployed suite, the consents service's own address),
    /// for seeding the consents projection. The gateway refuses the service role.
    #[arg(long)]
    pub internal: Option<String>,
    /// With --target: the data directory of its `vern dev` (the dev signing key).
    #[arg(long, default_value = "vern-data")]
    pub data_dir: PathBuf,
    /// HTTP/2 connections the client spreads its calls over (echo baseline alike).
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A suite to benchmark, running for the benchmark's length.
pub struct Env {
    /// The gateway URL.
    pub url: String,
    /// The internal listener's URL (service-role calls), if known.
    pub internal_url: Option<String>,
    /// "in-process" or the target URL.
    pub label: String,
    secret: Vec<u8>,
    issuer: String,
    audience: String,
    suite: Option<SuiteHandle>,
    pg: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    /// The in-process suite's configuration (for [`Env::restart_with`]).
    config: Option<Config>,
}

/// Which database an in-process suite uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// SQLite files in a temp dir (the `vern dev` default).
    Sqlite,
    /// PostgreSQL at this URL, in fresh schemas dropped afterwards.
    Postgres(String),
}

impl Env {
    /// Starts an in-process suite, or names the target of `args`.
    pub async fn start(
        host: &dyn Host,
        base: &Config,
        args: &TargetArgs,
        backend: Backend,
    ) -> anyhow::Result<Self> {
        if let Some(url) = &args.target {
            ensure_loopback(url)?;
            let mut config = base.clone();
            config.data_dir = args.data_dir.clone();
            config.auth.dev_key = true;
            let secret = vern_kit::auth::hs256_secret(&config)
                .context("reading the target's dev signing key (--data-dir)")?
                .context("no dev signing key")?;
            if let Some(internal) = &args.internal
                && vern_kit::client::unix_socket_path(internal).is_none()
            {
                ensure_loopback(internal)?;
            }
            return Ok(Self {
                url: url.clone(),
                internal_url: args.internal.clone(),
                label: url.clone(),
                secret,
                issuer: config.auth.issuer,
                audience: config.auth.audience,
                suite: None,
                pg: None,
                _dir: None,
                config: None,
            });
        }
        let dir = tempfile::tempdir().context("creating a temp dir")?;
        let mut config = base.clone();
        config.data_dir = dir.path().to_path_buf();
        config.auth.dev_key = true;
        config.database_url = None;
        // One benchmark client is one token subject: keep the per-client limit layer in
        // the stack but out of the way.
        config.server.rate_limit_per_client = 1_000_000_000;
        config.server.rate_limit_burst = 1_000_000_000;
        config.server.concurrency_limit = config.server.concurrency_limit.max(4096);
        let mut pg = None;
        if let Backend::Postgres(url) = backend {
            let prefix = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            config.database_url = Some(url.clone());
            config.database_schema_prefix = prefix.clone();
            pg = Some((url, prefix));
        }
        let secret = vern_kit::auth::hs256_secret(&config)
            .context("creating the dev signing key")?
            .context("no dev signing key")?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let suite = host.start_suite(config.clone(), listener).await?;
        Ok(Self {
            url: format!("http://{}", suite.addr),
            internal_url: Some(suite.internal_url.clone()),
            label: match &pg {
                Some(_) => "in-process (PostgreSQL)".into(),
                None => "in-process (SQLite)".into(),
            },
            secret,
            issuer: config.auth.issuer.clone(),
            audience: config.auth.audience.clone(),
            suite: Some(suite),
            pg,
            _dir: Some(dir),
            config: Some(config),
        })
    }

    /// Stops the in-process suite and starts it again on the same data with its
    /// configuration changed by `adjust` (e.g. a new master key version).
    pub async fn restart_with(
        &mut self,
        host: &dyn Host,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<()> {
        let mut config = self
            .config
            .clone()
            .context("only an in-process suite can be restarted")?;
        adjust(&mut config);
        if let Some(s) = self.suite.take() {
            (s.stop)().await;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let suite = host.start_suite(config.clone(), listener).await?;
        self.url = format!("http://{}", suite.addr);
        self.internal_url = Some(suite.internal_url.clone());
        self.suite = Some(suite);
        self.config = Some(config);
        Ok(())
    }

    /// The data directory of an in-process suite.
    pub fn data_dir(&self) -> Option<&Path> {
        self._dir.as_ref().map(|d| d.path())
    }

    /// The development sign-in of a console in front of this suite: its tokens are
    /// signed as [`Env::token`]'s are.
    pub fn dev_sign_in(&self) -> vern_console::auth::DevSignIn {
        vern_console::auth::DevSignIn {
            secret: self.secret.clone(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            department: None,
        }
    }

    /// On PostgreSQL, `VACUUM (ANALYZE)` of `services`' schemas: what autovacuum does to
    /// tables that grew by bulk inserts, soon after (their visibility maps let counts
    /// read indexes alone). True when it ran; false on SQLite or against `--target`.
    pub async fn vacuum(&self, services: &[&str]) -> anyhow::Result<bool> {
        use sea_orm::{ConnectionTrait, Database};
        let Some((url, prefix)) = &self.pg else {
            return Ok(false);
        };
        let db = Database::connect(url.as_str()).await?;
        for s in services {
            let schema = format!("{prefix}_{s}");
            let tables: Vec<String> = db
                .query_all_raw(sea_orm::Statement::from_sql_and_values(
                    sea_orm::DbBackend::Postgres,
                    "SELECT tablename FROM pg_tables WHERE schemaname = $1",
                    [schema.clone().into()],
                ))
                .await?
                .into_iter()
                .filter_map(|r| r.try_get::<String>("", "tablename").ok())
                .collect();
            for t in tables {
                db.execute_unprepared(&format!("VACUUM (ANALYZE) \"{schema}\".\"{t}\""))
                    .await?;
            }
        }
        db.close().await?;
        Ok(true)
    }

    /// A bearer token (as metadata) for `roles` acting for `tenant`.
    pub fn token(&self, roles: &[&str], tenant: Option<&str>) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: "vern-bench".into(),
            tenant: tenant.iter().map(|t| t.to_string()).collect(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + 3600,
            nbf: now - 1,
            iat: now,
        };
        Ok(sign_hs256(&claims, &self.secret)?)
    }

    /// Stops an in-process suite and drops its PostgreSQL schemas.
    pub async fn stop(mut self) {
        if let Some(s) = self.suite.take() {
            (s.stop)().await;
        }
        if let Some((url, prefix)) = self.pg.take() {
            drop_schemas(&url, &prefix).await;
        }
    }
}

/// `Bearer <token>` as a metadata value.
pub fn bearer(token: &str) -> anyhow::Result<MetadataValue<Ascii>> {
    Ok(format!("Bearer {token}").parse()?)
}

/// Benchmarks send traffic to this machine only.
fn ensure_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .context("--target must be an http:// URL")?;
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let ok = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(
        ok,
        "--target must be a loopback address (127.0.0.0/8, [::1], localhost)"
    );
    Ok(())
}

async fn drop_schemas(url: &str, prefix: &str) {
    use sea_orm::{ConnectionTrait, Database};
    let Ok(db) = Database::connect(url).await else {
        return;
    };
    for s in crate::SERVICES {
        let _ = db
            .execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{prefix}_{s}\" CASCADE"))
            .await;
    }
    let _ = db.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        for ok in [
            "http://127.0.0.1:50051",
            "http://localhost:1",
            "http://[::1]:50051",
            "http://127.1.2.3:9",
        ] {
            assert!(ensure_loopback(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:50051",
            "http://example.com:80",
            "127.0.0.1:50051",
            "http://[2001:db8::1]:1",
        ] {
            assert!(ensure_loopback(bad).is_err(), "{bad}");
        }
    }
}
