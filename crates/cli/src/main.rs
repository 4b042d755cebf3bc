//! `vern`: run the suite, a single service, migrations, and mint dev tokens.

use std::io::Write as _;
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
    /// CA certificate (PEM) that `https://` addresses must chain to (default: the
    /// system's roots; config `tls.ca_file`).
    #[arg(long, global = true, env = "VERN_CA")]
    ca: Option<PathBuf>,
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
        /// Web console listen address, or `off` (default: console.listen,
        /// 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR|off")]
        console_listen: Option<String>,
    },
    /// Run one component on its own (as in Kubernetes).
    Serve {
        /// gateway, tenants, subjects, consents, retention, rights, audit or console.
        service: String,
        /// Listen address (default: services.<name>.listen from the config).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Ask a component whether it is SERVING (gRPC health), like a Kubernetes probe;
    /// exit code 0 when it is, 1 otherwise.
    Health {
        /// The component's address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// A gRPC service name (e.g. vern.rights.v1.RightsService); empty: the whole
        /// process.
        #[arg(long, default_value = "")]
        service: String,
        /// Keep asking until SERVING or this many seconds have passed.
        #[arg(long, default_value_t = 0)]
        wait_seconds: u64,
    },
    /// Run the database migrations of one or all services, then exit. Starts nothing
    /// else (no relay, sweep scheduler, checkpointer or server) and needs no keys; on
    /// PostgreSQL, pods and Jobs migrating at once take turns.
    Migrate {
        /// Only this service (default: all).
        #[arg(long)]
        service: Option<String>,
    },
    /// Look at the services' outboxes (notifications waiting for another service) and
    /// put parked rows back in the queue. Reads the databases with the settings `vern
    /// serve` uses (VERN_DATABASE_URL and VERN_DATABASE_SCHEMA_PREFIX, or VERN_DATA_DIR)
    /// and fails when it finds none; with --addr it asks the running services instead.
    Outbox {
        #[command(subcommand)]
        command: vern_cli::outbox_cli::OutboxCommand,
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
        /// Sign with this private key (PEM: Ed25519, RSA or P-256) instead of the dev key.
        #[arg(long, requires = "kid")]
        key: Option<PathBuf>,
        /// Key id to put in the token header (with --key).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Work with data subjects through the gateway.
    Subjects {
        #[command(subcommand)]
        command: SubjectsCommand,
    },
    /// Work with consents through the gateway.
    Consents {
        #[command(subcommand)]
        command: ConsentsCommand,
    },
    /// Manage signing keys for production-like set-ups.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Export, verify and follow a tenant's tamper-evident audit chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Rights requests: deadlines (`list --overdue`) and reports (`export`).
    Requests {
        #[command(subcommand)]
        command: vern_cli::requests_cli::RequestsCommand,
    },
    /// Benchmarks on this machine, side by side with a bare tonic echo (loopback only).
    Bench {
        #[command(subcommand)]
        command: vern_bench::BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Export the tenant's chain as JSON lines (events and signed checkpoints), for
    /// offline verification.
    Export(vern_cli::audit_cli::ExportArgs),
    /// Verify an export offline (reads the file only); exit code 1 if it does not verify.
    Verify(vern_cli::audit_cli::VerifyArgs),
    /// Follow new audit events, one line each.
    Tail(vern_cli::audit_cli::TailArgs),
    /// Print the public key that verifies the checkpoints (hex).
    PublicKey(vern_cli::audit_cli::PublicKeyArgs),
}

#[derive(Subcommand, Debug)]
enum SubjectsCommand {
    /// Register subjects from a CSV file (columns: email, phone, national_id,
    /// external_refs as system:id;system:id). Re-running the same file writes nothing
    /// twice; bad rows are listed by line number while good rows commit.
    Import {
        /// The CSV file.
        #[arg(long)]
        csv: PathBuf,
        /// ImportSubjects calls (of 500 rows each) in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[command(flatten)]
        client: vern_cli::remote::ClientArgs,
    },
    /// Find a subject by one identifier or external reference and print it.
    Find {
        /// E-mail address.
        #[arg(long, group = "identifier")]
        email: Option<String>,
        /// Phone number.
        #[arg(long, group = "identifier")]
        phone: Option<String>,
        /// National id (fødselsnummer, D-number).
        #[arg(long, group = "identifier")]
        national_id: Option<String>,
        /// External reference as system:id.
        #[arg(long = "ref", group = "identifier")]
        external_ref: Option<String>,
        #[command(flatten)]
        client: vern_cli::remote::ClientArgs,
    },
    /// Find what a past fault left behind: live subjects of a tenant that hold the same
    /// e-mail, phone or national id (opened with the configured keys and digested again,
    /// so a copy made under a wrong index key is found too), and subjects whose data
    /// key or identifiers do not open. Prints ids and kinds only, never an identifier;
    /// changes nothing. Reads the subjects databases directly with the configuration
    /// `vern serve` reads (--config, VERN_*), like `vern keys verify`. Exit code 1 when
    /// it finds anything.
    Duplicates {
        /// A `vern dev` data directory: its SQLite files, and its dev master key unless
        /// keys.master_key is configured.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ConsentsCommand {
    /// Ask whether a subject may be processed for a purpose now.
    Check {
        /// Subject id.
        #[arg(long)]
        subject: String,
        /// Purpose key.
        #[arg(long)]
        purpose: String,
        #[command(flatten)]
        client: vern_cli::remote::ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Write a new Ed25519 private key (<out>/<kid>.pem, mode 0600) and add its public key
    /// to <out>/jwks.json (created if missing). Point auth.jwks_file at that JWKS; to
    /// rotate, generate a new key, let services refresh, then remove the old kid.
    Generate {
        /// Output directory.
        #[arg(long, default_value = "vern-keys")]
        out: PathBuf,
        /// Key id (default: the key's RFC 7638 thumbprint, which the services use when
        /// auth.service_key_id is unset).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Re-wrap every data key (subjects, consents, rights) under the current master key
    /// version, online, with progress. Configure the new version everywhere first
    /// (keys.master_key + keys.master_key_version, the old one in
    /// keys.previous_master_keys); the data itself is not re-encrypted. Interrupted?
    /// Run it again: keys already re-wrapped are skipped. Needs a platform admin token
    /// (a minted dev token gets that role).
    RotateMaster(vern_cli::keys_cli::RotateArgs),
    /// Rewrite the blind index (identifiers and external references) from
    /// keys.previous_index_key_version to keys.index_key_version, online, with progress.
    /// Configure both versions everywhere first; lookups find both meanwhile. Nothing
    /// sealed is re-encrypted. Interrupted? Run it again. Needs a platform admin token.
    Reindex(vern_cli::keys_cli::ReindexArgs),
    /// How many data keys each master key version wraps, per service, and which
    /// versions nothing uses any more (they can be removed from the configuration).
    Status(vern_cli::keys_cli::StatusArgs),
    /// Check the configured personal-data keys against the databases before a rollout:
    /// each master key version and tenant key is compared with the check value its
    /// first use stored in the subjects, consents and rights databases (never the key
    /// itself). Reads the configuration `vern serve` would (--config, VERN_*), connects
    /// to the databases directly, starts nothing and changes nothing. Exits non-zero
    /// when a key differs (a service given it refuses to start) or a database cannot
    /// be read.
    Verify(vern_cli::keys_cli::VerifyArgs),
    /// Remove a key from a JWKS file (retire it after rotation).
    Remove {
        /// The JWKS file.
        #[arg(long)]
        jwks: PathBuf,
        /// The key id to remove.
        #[arg(long)]
        kid: String,
    },
}

fn main() -> std::process::ExitCode {
    match run_cli() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader of our output went away (`vern requests export ID | head`): it has
        // what it wanted, as with any Unix tool.
        Err(e) if reader_gone(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes, no backtrace: this is for people at a terminal.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn reader_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    if let Some(ca) = cli.ca {
        config.tls.ca_file = Some(ca);
    }
    match cli.command {
        Command::Token {
            role,
            tenant,
            sub,
            expires_in,
            data_dir,
            key,
            kid,
        } => {
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            config.auth.dev_key = true;
            let signer = match (key, kid) {
                (Some(k), Some(kid)) => Signer::Pem(
                    std::fs::read(&k).with_context(|| format!("reading {}", k.display()))?,
                    kid,
                ),
                _ => Signer::Dev,
            };
            token(&config, role, tenant, sub, expires_in, signer)
        }
        Command::Keys {
            command: KeysCommand::RotateMaster(a),
        } => {
            vern_kit::tls::install_client(&config.tls).context("tls")?;
            runtime()?.block_on(vern_cli::keys_cli::rotate_master(&config, a))
        }
        Command::Keys {
            command: KeysCommand::Reindex(a),
        } => {
            vern_kit::tls::install_client(&config.tls).context("tls")?;
            runtime()?.block_on(vern_cli::keys_cli::reindex(&config, a))
        }
        Command::Keys {
            command: KeysCommand::Status(a),
        } => {
            vern_kit::tls::install_client(&config.tls).context("tls")?;
            runtime()?.block_on(vern_cli::keys_cli::status(&config, a))
        }
        Command::Keys {
            command: KeysCommand::Verify(a),
        } => runtime()?.block_on(vern_cli::keys_cli::verify(&config, a)),
        Command::Keys { command } => keys(command),
        command => runtime()?.block_on(run(config, command)),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

async fn run(mut config: Config, command: Command) -> anyhow::Result<()> {
    // Every channel this process opens to an `https://` address uses it.
    vern_kit::tls::install_client(&config.tls).context("tls")?;
    match command {
        Command::Dev {
            data_dir,
            listen,
            console_listen,
        } => {
            let started = Instant::now();
            config.data_dir = data_dir;
            config.listen = listen;
            match console_listen.as_deref().map(str::trim) {
                None => {}
                Some("off") | Some("") => config.console.listen = None,
                Some(a) => config.console.listen = Some(a.parse().with_context(|| {
                    format!(
                        "--console-listen {a:?}: expected an address such as 127.0.0.1:8080, or off"
                    )
                })?),
            }
            config.auth.dev_key = true;
            // Tooling against the dev suite (grpcurl list/describe) needs no token.
            config.server.reflection = vern_kit::config::ReflectionMode::Open;
            vern_kit::telemetry::init(config.log_format, &config.log_level);
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            let running = vern_cli::start_suite(config.clone(), listener).await?;
            let dir = vern_cli::data_dir_display(&config);
            let tls = config.tls.cert_file.is_some();
            // The console calls this suite's own gateway, as any client would.
            let (console_stop, console_stopped) = tokio::sync::oneshot::channel::<()>();
            let console = match config.console.listen {
                Some(addr) => {
                    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                        format!("binding the console to {addr} (another process has it? choose another with --console-listen, or --console-listen off)")
                    })?;
                    let at = listener.local_addr()?;
                    let gateway = if tls {
                        format!("https://localhost:{}", running.addr.port())
                    } else {
                        format!("http://{}", running.addr)
                    };
                    // Somewhere to sign in to at the first start; never fatal.
                    let demo = match vern_cli::seed_demo_department(&config, &gateway).await {
                        Ok(d) => d.map(str::to_owned),
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "the demo department was not made");
                            None
                        }
                    };
                    let task = vern_cli::console(
                        &config,
                        &gateway,
                        Some(demo.clone()),
                        listener,
                        async move {
                            let _ = console_stopped.await;
                        },
                    )
                    .await?;
                    Some((at, task, demo))
                }
                None => None,
            };
            // A closed stdout (`vern dev | head`) must not stop the suite: println! would
            // panic on EPIPE.
            let _ = writeln!(
                std::io::stdout(),
                "vern dev ready in {} ms\n  console   {}\n  gateway   {} (gRPC{}, reflection and health for all six services)\n  internal  {} (service-to-service calls only: a socket only this user can open; the gateway refuses the service role)\n  data      {}\n  token     vern token --role platform-admin --data-dir {}\n            vern token --role tenant-admin --tenant <tenant-id> --data-dir {}\n  try       grpcurl {} -H \"authorization: Bearer $(vern token --role platform-admin --data-dir {})\" {} list",
                started.elapsed().as_millis(),
                match &console {
                    Some((at, _, Some(demo))) => format!(
                        "http://{at}/ (development sign-in: department {demo:?} or your own, and a role{})",
                        oidc_note(&config)
                    ),
                    Some((at, _, None)) => format!(
                        "http://{at}/ (development sign-in: pick a department and a role{})",
                        oidc_note(&config)
                    ),
                    None => "off".to_owned(),
                },
                running.addr,
                if tls { " over TLS" } else { "" },
                running.internal_url(),
                dir.display(),
                dir.display(),
                dir.display(),
                if tls {
                    "-cacert <your CA file>".to_owned()
                } else {
                    "-plaintext".to_owned()
                },
                dir.display(),
                if tls {
                    format!("localhost:{}", running.addr.port())
                } else {
                    running.addr.to_string()
                },
            );
            let shutdown = running.shutdown;
            let mut handle = running.handle;
            tokio::select! {
                r = &mut handle => return r.context("server task")?,
                _ = vern_kit::server::shutdown_signal() => {}
            }
            let _ = console_stop.send(());
            let _ = shutdown.send(());
            if let Some((_, task, _)) = console {
                task.await
                    .context("console task")?
                    .context("serving the console")?;
            }
            handle.await.context("server task")??;
            Ok(())
        }
        Command::Serve { service, listen } if service == "console" => {
            vern_kit::telemetry::init(config.log_format, &config.log_level);
            let addr = listen.or(config.console.listen).context(
                "console.listen is off: give the console an address (VERN_CONSOLE__LISTEN or --listen)",
            )?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let gateway = config.console.gateway_url.clone();
            tracing::info!(%addr, gateway = %gateway, "serving the console");
            // Never the development sign-in here: people sign in through the IdP.
            vern_cli::console(
                &config,
                &gateway,
                None,
                listener,
                vern_kit::server::shutdown_signal(),
            )
            .await?
            .await
            .context("console task")?
            .context("serving the console")?;
            Ok(())
        }
        Command::Serve { service, listen } => {
            vern_kit::telemetry::init(config.log_format, &config.log_level);
            let (addr, mut served) = if service == "gateway" {
                (listen.unwrap_or(config.listen), vern_cli::gateway(&config)?)
            } else {
                let endpoint = match service.as_str() {
                    "tenants" => &config.services.tenants,
                    "subjects" => &config.services.subjects,
                    "consents" => &config.services.consents,
                    "retention" => &config.services.retention,
                    "rights" => &config.services.rights,
                    "audit" => &config.services.audit,
                    other => anyhow::bail!(
                        "unknown service {other:?} (expected gateway, console, {})",
                        vern_cli::SERVICES.join(", ")
                    ),
                };
                let addr = listen.unwrap_or(endpoint.listen);
                (
                    addr,
                    vern_cli::suite_of(&config, &[service.as_str()]).await?,
                )
            };
            served.tls = vern_kit::tls::ServerTls::from_config(&config.tls).context("tls")?;
            served.telemetry = vern_kit::telemetry::Telemetry::start_with_tls(
                &config.telemetry,
                &service,
                served.tls.clone(),
            )
            .await
            .context("starting telemetry")?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(%addr, service = %service, tls = served.tls.is_some(), "serving");
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
                for (store, done) in vern_cli::migrate(&config, s).await? {
                    let what = match done {
                        vern_kit::db::Migrated::Current(0) => "up to date".to_owned(),
                        vern_kit::db::Migrated::Current(n) => format!("{n} migration(s) applied"),
                        vern_kit::db::Migrated::Newer(n) => format!(
                            "the schema has {n} migration(s) newer than this build (a rollback?): left as it is"
                        ),
                    };
                    println!("{store}: {what} ({} ms)", started.elapsed().as_millis());
                }
            }
            Ok(())
        }
        Command::Health {
            addr,
            service,
            wait_seconds,
        } => health(&addr, &service, wait_seconds).await,
        Command::Bench { command } => {
            vern_kit::telemetry::init(config.log_format, "warn");
            vern_bench::run(&vern_cli::bench_host::CliHost, &config, command).await
        }
        Command::Subjects { command } => subjects(&config, command).await,
        Command::Consents { command } => consents(&config, command).await,
        Command::Requests { command } => vern_cli::requests_cli::run(&config, command).await,
        Command::Outbox { command } => vern_cli::outbox_cli::run(&config, command).await,
        Command::Audit { command } => match command {
            AuditCommand::Export(a) => vern_cli::audit_cli::export(&config, a).await,
            AuditCommand::Verify(a) => vern_cli::audit_cli::verify(a),
            AuditCommand::Tail(a) => vern_cli::audit_cli::tail(&config, a).await,
            AuditCommand::PublicKey(a) => vern_cli::audit_cli::public_key(&config, a),
        },
        Command::Token { .. } | Command::Keys { .. } => unreachable!("handled without a runtime"),
    }
}

/// `vern health`: SERVING within `wait_seconds`, or an error naming what was seen.
async fn health(addr: &str, service: &str, wait_seconds: u64) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = vern_kit::client::channel(addr).context("--addr")?;
    let deadline = Instant::now() + std::time::Duration::from_secs(wait_seconds);
    loop {
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: service.to_owned(),
        });
        req.set_timeout(std::time::Duration::from_secs(2));
        let seen = match HealthClient::new(channel.clone()).check(req).await {
            Ok(r) => match ServingStatus::try_from(r.into_inner().status) {
                Ok(ServingStatus::Serving) => {
                    println!("SERVING");
                    return Ok(());
                }
                Ok(s) => serving_status_text(s).to_owned(),
                Err(_) => "an unknown status".to_owned(),
            },
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("{addr} is not SERVING: {seen}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// What signs a `vern token`.
enum Signer {
    /// The HS256 dev key.
    Dev,
    /// A PEM private key and its key id.
    Pem(Vec<u8>, String),
}

fn token(
    config: &Config,
    roles: Vec<String>,
    tenants: Vec<String>,
    sub: String,
    expires_in: i64,
    signer: Signer,
) -> anyhow::Result<()> {
    for r in &roles {
        r.parse::<Role>()
            .map_err(|e| anyhow::anyhow!("--role {r}: {e}"))?;
    }
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
    let token = match signer {
        Signer::Dev => {
            let secret = vern_kit::auth::hs256_secret(config)
                .context("reading the dev signing key")?
                .context("no dev signing key")?;
            vern_kit::auth::sign_hs256(&claims, &secret)?
        }
        Signer::Pem(pem, kid) => {
            vern_kit::auth::sign_with_pem(&claims, &pem, &kid).context("signing with --key")?
        }
    };
    println!("{token}");
    Ok(())
}

fn keys(command: KeysCommand) -> anyhow::Result<()> {
    use jsonwebtoken::jwk::JwkSet;
    match command {
        KeysCommand::RotateMaster(_)
        | KeysCommand::Status(_)
        | KeysCommand::Reindex(_)
        | KeysCommand::Verify(_) => {
            unreachable!("handled with a runtime")
        }
        KeysCommand::Generate { out, kid } => {
            // Without --kid the key is named by its RFC 7638 thumbprint, the id the
            // services give it when auth.service_key_id is unset.
            let (pem, mut jwk) = vern_kit::auth::generate_ed25519("pending")?;
            let kid = match kid {
                Some(k) => k,
                None => vern_kit::auth::key_thumbprint(pem.as_bytes())?,
            };
            jwk.common.key_id = Some(kid.clone());
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let jwks_path = out.join("jwks.json");
            let mut set: JwkSet = match std::fs::read_to_string(&jwks_path) {
                Ok(text) => serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a JWKS", jwks_path.display()))?,
                Err(_) => JwkSet { keys: vec![] },
            };
            if set.find(&kid).is_some() {
                anyhow::bail!("{} already has a key {kid:?}", jwks_path.display());
            }
            let key_path = out.join(format!("{kid}.pem"));
            write_private(&key_path, pem.as_bytes())?;
            set.keys.push(jwk);
            std::fs::write(&jwks_path, serde_json::to_string_pretty(&set)?)?;
            println!(
                "private key  {}\njwks         {} ({} keys)\nsign         vern token --key {} --kid {kid} --role …",
                key_path.display(),
                jwks_path.display(),
                set.keys.len(),
                key_path.display()
            );
            Ok(())
        }
        KeysCommand::Remove { jwks, kid } => {
            let text = std::fs::read_to_string(&jwks)
                .with_context(|| format!("reading {}", jwks.display()))?;
            let mut set: JwkSet = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JWKS", jwks.display()))?;
            let before = set.keys.len();
            set.keys
                .retain(|k| k.common.key_id.as_deref() != Some(kid.as_str()));
            if set.keys.len() == before {
                anyhow::bail!("{} has no key {kid:?}", jwks.display());
            }
            std::fs::write(&jwks, serde_json::to_string_pretty(&set)?)?;
            println!("removed {kid}; {} keys left", set.keys.len());
            Ok(())
        }
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

async fn subjects(config: &Config, command: SubjectsCommand) -> anyhow::Result<()> {
    use vern_proto::subjects::v1 as pb;
    match command {
        SubjectsCommand::Duplicates { data_dir } => {
            vern_cli::subjects_cli::duplicates(config, data_dir).await
        }
        SubjectsCommand::Import {
            csv,
            concurrency,
            client,
        } => {
            let tenant = client
                .tenant
                .clone()
                .context("--tenant is required for an import")?;
            let c = vern_cli::remote::Client::connect(&client, config).await?;
            let report = vern_cli::import::import_csv(&c, &tenant, &csv, concurrency, true).await?;
            for (line, why) in &report.invalid {
                eprintln!("line {line}: {why}");
            }
            for (line, why) in &report.failed {
                eprintln!("line {line}: failed: {why}");
            }
            println!(
                "{} rows: {} imported, {} already present, {} invalid, {} failed",
                report.rows,
                report.created,
                report.present,
                report.invalid.len(),
                report.failed.len()
            );
            if !report.invalid.is_empty() || !report.failed.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        SubjectsCommand::Find {
            email,
            phone,
            national_id,
            external_ref,
            client,
        } => {
            use pb::find_subject_request::Identifier;
            let identifier = match (email, phone, national_id, external_ref) {
                (Some(e), _, _, _) => Identifier::Email(e),
                (_, Some(p), _, _) => Identifier::Phone(p),
                (_, _, Some(n), _) => Identifier::NationalId(n),
                (_, _, _, Some(r)) => {
                    let (system, id) = r.split_once(':').context("--ref must be system:id")?;
                    Identifier::ExternalRef(pb::ExternalRef {
                        system: system.into(),
                        id: id.into(),
                    })
                }
                _ => anyhow::bail!("give one of --email, --phone, --national-id, --ref"),
            };
            let c = vern_cli::remote::Client::connect(&client, config).await?;
            let mut subjects =
                pb::subject_service_client::SubjectServiceClient::new(c.channel.clone());
            let s = subjects
                .find_subject(c.request(pb::FindSubjectRequest {
                    identifier: Some(identifier),
                    view: pb::SubjectView::Full as i32,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            println!("subject_id   {}", s.subject_id);
            let state = pb::SubjectState::try_from(s.state)
                .map(subject_state_text)
                .unwrap_or("?");
            println!("state        {state}");
            for (label, value) in [
                ("email", &s.email),
                ("phone", &s.phone),
                ("national_id", &s.national_id),
            ] {
                if !value.is_empty() {
                    println!("{label:<12} {value}");
                }
            }
            for r in &s.external_refs {
                println!("ref          {}:{}", r.system, r.id);
            }
            println!("records      {}", s.records.len());
            Ok(())
        }
    }
}

async fn consents(config: &Config, command: ConsentsCommand) -> anyhow::Result<()> {
    use vern_proto::consents::v1 as pb;
    match command {
        ConsentsCommand::Check {
            subject,
            purpose,
            client,
        } => {
            let c = vern_cli::remote::Client::connect(&client, config).await?;
            let mut consents =
                pb::consent_service_client::ConsentServiceClient::new(c.channel.clone());
            let r = consents
                .check(c.request(pb::CheckRequest {
                    subject_id: subject,
                    purpose,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            println!("allowed      {}", r.allowed);
            println!(
                "reason       {}",
                pb::CheckReason::try_from(r.reason)
                    .map(check_reason_text)
                    .unwrap_or("?")
            );
            println!(
                "legal_basis  {}",
                vern_proto::common::v1::LegalBasis::try_from(r.legal_basis)
                    .map(legal_basis_text)
                    .unwrap_or("?")
            );
            if !r.evidence_id.is_empty() {
                println!("evidence     {}", r.evidence_id);
            }
            Ok(())
        }
    }
}

// Protobuf values as printed for people, by explicit arms: the texts stay as they are
// when the protobuf value names change.

/// A health status as `vern health` prints it.
fn serving_status_text(s: tonic_health::pb::health_check_response::ServingStatus) -> &'static str {
    use tonic_health::pb::health_check_response::ServingStatus as S;
    match s {
        S::Unknown => "UNKNOWN",
        S::Serving => "SERVING",
        S::NotServing => "NOT_SERVING",
        S::ServiceUnknown => "SERVICE_UNKNOWN",
    }
}

/// A subject's state as `vern subjects find` prints it.
fn subject_state_text(s: vern_proto::subjects::v1::SubjectState) -> &'static str {
    use vern_proto::subjects::v1::SubjectState as S;
    match s {
        S::Unspecified => "UNSPECIFIED",
        S::Active => "ACTIVE",
        S::Restricted => "RESTRICTED",
        S::Erased => "ERASED",
    }
}

/// The reason of a consent check as `vern consents check` prints it.
fn check_reason_text(r: vern_proto::consents::v1::CheckReason) -> &'static str {
    use vern_proto::consents::v1::CheckReason as R;
    match r {
        R::Unspecified => "CHECK_REASON_UNSPECIFIED",
        R::ConsentGranted => "CONSENT_GRANTED",
        R::NoObjection => "NO_OBJECTION",
        R::BasisAllows => "BASIS_ALLOWS",
        R::NoConsent => "NO_CONSENT",
        R::ConsentWithdrawn => "CONSENT_WITHDRAWN",
        R::ConsentExpired => "CONSENT_EXPIRED",
        R::SubjectObjected => "SUBJECT_OBJECTED",
        R::SubjectRestricted => "SUBJECT_RESTRICTED",
        R::SubjectErased => "SUBJECT_ERASED",
        R::SubjectUnknown => "SUBJECT_UNKNOWN",
        R::PurposeUnknown => "PURPOSE_UNKNOWN",
        R::CompellingGrounds => "COMPELLING_GROUNDS",
    }
}

/// A legal basis as `vern consents check` prints it.
fn legal_basis_text(b: vern_proto::common::v1::LegalBasis) -> &'static str {
    use vern_proto::common::v1::LegalBasis as B;
    match b {
        B::Unspecified => "LEGAL_BASIS_UNSPECIFIED",
        B::Consent => "CONSENT",
        B::Contract => "CONTRACT",
        B::LegalObligation => "LEGAL_OBLIGATION",
        B::VitalInterests => "VITAL_INTERESTS",
        B::PublicTask => "PUBLIC_TASK",
        B::LegitimateInterests => "LEGITIMATE_INTERESTS",
    }
}

/// A gRPC error as a one-line message (vern's messages already name bad fields).
fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// The banner's note on the console's sign-in through an OpenID provider, if set up.
fn oidc_note(config: &vern_kit::config::Config) -> String {
    match &config.console.oidc.issuer_url {
        Some(issuer) => format!("; or through the OpenID provider {issuer}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_output_pipe_ends_quietly() {
        let gone = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing the report");
        assert!(reader_gone(&gone));
        let refused =
            anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!reader_gone(&refused));
        assert!(!reader_gone(&anyhow::anyhow!("Unavailable: broken pipe")));
    }
}
