//! `vern`: run the suite, a single service, migrations, and mint dev tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vern_kit::auth::{Claims, Role};
use vern_kit::config::Config;

/// vern keeps personal data lawful for organisations whose departments are each their
/// own GDPR controller.
#[derive(Parser, Debug)]
#[command(name = "vern", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). Default: $VERN_CONFIG, else ./vern.toml if present.
    #[arg(long, global = true, env = "VERN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway and all six services in one process on SQLite (zero set-up).
    Dev {
        /// Directory for the SQLite files and the dev signing key.
        #[arg(long, default_value = "vern-data")]
        data_dir: PathBuf,
        /// Gateway listen address.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
    },
    /// Run one service on its own (as in Kubernetes).
    Serve {
        /// tenants, subjects, consents, retention, rights or audit.
        service: String,
        /// Listen address (default: services.<name>.listen from the config).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the database migrations of one or all services, then exit.
    Migrate {
        /// Only this service (default: all).
        #[arg(long)]
        service: Option<String>,
    },
    /// Print a token signed with the dev key, for the `vern dev` gateway.
    Token {
        /// Role: platform-admin, tenant-admin, privacy-officer, integration, auditor or service.
        #[arg(long, required = true)]
        role: Vec<String>,
        /// Tenant the token acts for (repeat for a multi-tenant token).
        #[arg(long)]
        tenant: Vec<String>,
        /// Subject (who the caller is).
        #[arg(long, default_value = "dev-user")]
        sub: String,
        /// Lifetime in seconds; negative yields an already-expired token (for tests).
        #[arg(long, default_value_t = 3600, allow_negative_numbers = true)]
        expires_in: i64,
        /// Directory holding the dev signing key (as given to `vern dev`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    match cli.command {
        Command::Token {
            role,
            tenant,
            sub,
            expires_in,
            data_dir,
        } => {
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            token(&config, role, tenant, sub, expires_in)
        }
        command => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(run(config, command))
        }
    }
}

async fn run(mut config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev { data_dir, listen } => {
            let started = Instant::now();
            config.data_dir = data_dir;
            config.listen = listen;
            vern_kit::telemetry::init(config.log_format, &config.log_level);
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            let running = vern_cli::start_suite(config.clone(), listener).await?;
            let dir = vern_cli::data_dir_display(&config);
            println!(
                "vern dev ready in {} ms\n  gateway   {} (gRPC, reflection and health for all six services)\n  data      {}\n  token     vern token --role platform-admin --data-dir {}\n            vern token --role tenant-admin --tenant <tenant-id> --data-dir {}\n  try       grpcurl -plaintext -H \"authorization: Bearer $(vern token --role platform-admin --data-dir {})\" {} list",
                started.elapsed().as_millis(),
                running.addr,
                dir.display(),
                dir.display(),
                dir.display(),
                dir.display(),
                running.addr,
            );
            let shutdown = running.shutdown;
            let mut handle = running.handle;
            tokio::select! {
                r = &mut handle => return r.context("server task")?,
                _ = vern_kit::server::shutdown_signal() => {}
            }
            let _ = shutdown.send(());
            handle.await.context("server task")??;
            Ok(())
        }
        Command::Serve { service, listen } => {
            vern_kit::telemetry::init(config.log_format, &config.log_level);
            let endpoint = match service.as_str() {
                "tenants" => &config.services.tenants,
                "subjects" => &config.services.subjects,
                "consents" => &config.services.consents,
                "retention" => &config.services.retention,
                "rights" => &config.services.rights,
                "audit" => &config.services.audit,
                "gateway" => anyhow::bail!(
                    "the standalone gateway (forwarding to remote services) is not built yet; use `vern dev`"
                ),
                other => anyhow::bail!("unknown service {other:?}"),
            };
            let addr = listen.unwrap_or(endpoint.listen);
            let served = vern_cli::suite_of(&config, &[service.as_str()]).await?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(%addr, service = %service, "serving");
            vern_kit::server::serve(
                served,
                listener,
                &config.server,
                vern_cli::verifier(&config)?,
                vern_kit::server::shutdown_signal(),
            )
            .await?;
            Ok(())
        }
        Command::Migrate { service } => {
            vern_kit::telemetry::init(config.log_format, &config.log_level);
            let services: Vec<&str> = match &service {
                Some(s) => vec![s.as_str()],
                None => vern_cli::SERVICES.to_vec(),
            };
            for s in services {
                let started = Instant::now();
                // Building a service opens its store, which runs its migrations.
                vern_cli::suite_of(&config, &[s]).await?;
                println!(
                    "{s}: migrations applied ({} ms)",
                    started.elapsed().as_millis()
                );
            }
            Ok(())
        }
        Command::Token { .. } => unreachable!("handled without a runtime"),
    }
}

fn token(
    config: &Config,
    roles: Vec<String>,
    tenants: Vec<String>,
    sub: String,
    expires_in: i64,
) -> anyhow::Result<()> {
    for r in &roles {
        r.parse::<Role>()
            .map_err(|e| anyhow::anyhow!("--role {r}: {e}"))?;
    }
    let secret = vern_kit::auth::hs256_secret(config).context("reading the dev signing key")?;
    let now = chrono_now();
    let claims = Claims {
        sub,
        tenant: tenants,
        roles,
        iss: config.auth.issuer.clone(),
        aud: config.auth.audience.clone(),
        exp: now + expires_in,
        nbf: now.min(now + expires_in),
        iat: now,
    };
    println!("{}", vern_kit::auth::sign_hs256(&claims, &secret)?);
    Ok(())
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
