//! The `vern` command's library: assembling the suite (used by `vern dev` and by the
//! end-to-end tests) and the individual services.

pub mod audit_cli;
pub mod bench_host;
pub mod import;
pub mod keys_cli;
pub mod outbox_cli;
pub mod remote;
pub mod requests_cli;
pub mod subjects_cli;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::service::{Routes, RoutesBuilder};
use vern_kit::auth::TokenVerifier;
use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Served;
use vern_kit::verify::KeySource;

/// The six services by name, in start-up order.
pub const SERVICES: [&str; 6] = [
    "tenants",
    "subjects",
    "consents",
    "retention",
    "rights",
    "audit",
];

/// The database target of one service under `config`.
pub fn target(config: &Config, service: &str) -> DbTarget {
    DbTarget {
        max_connections: config.database_max_connections,
        ..DbTarget::with_prefix(
            config.database_url.as_deref(),
            &config.data_dir,
            &config.database_schema_prefix,
            service,
        )
    }
}

/// Runs the pending migrations of one service's stores (subjects has two: its own and
/// the key store) and nothing else: no relay, checkpointer, scheduler or server, and no
/// key is needed. Returns each store's name and what was done.
pub async fn migrate(
    config: &Config,
    service: &str,
) -> anyhow::Result<Vec<(&'static str, vern_kit::db::Migrated)>> {
    let t = target(config, service);
    let one = |name: &'static str| move |m| vec![(name, m)];
    let done = match service {
        "tenants" => vern_tenants::migrate(&t).await.map(one("tenants")),
        "subjects" => vern_subjects::migrate(&t, &vern_subjects::key_store_target(config))
            .await
            .map(Vec::from),
        "consents" => vern_consents::migrate(&t).await.map(one("consents")),
        "retention" => vern_retention::migrate(&t).await.map(one("retention")),
        "rights" => vern_rights::migrate(&t).await.map(one("rights")),
        "audit" => vern_audit::migrate(&t).await.map(one("audit")),
        other => anyhow::bail!(
            "unknown service {other:?} (expected one of: {})",
            SERVICES.join(", ")
        ),
    };
    done.with_context(|| format!("migrating the {service} database"))
}

/// Opens one service's store (running its migrations) and adds the service to
/// `routes`; returns its gRPC name. Its background work stops with `shutdown`.
pub async fn add_service(
    config: &Config,
    service: &str,
    routes: &mut RoutesBuilder,
    shutdown: &vern_kit::shutdown::Shutdown,
) -> anyhow::Result<&'static str> {
    let t = target(config, service);
    let ctx = || format!("opening the {service} database");
    Ok(match service {
        "tenants" => {
            routes.add_service(
                vern_tenants::build(config, &t)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))
                    .with_context(ctx)?,
            );
            vern_tenants::SERVICE_NAME
        }
        "subjects" => {
            routes.add_service(
                vern_subjects::build(config, &t)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))
                    .with_context(ctx)?,
            );
            vern_subjects::SERVICE_NAME
        }
        "consents" => {
            routes.add_service(
                vern_consents::build(config, &t)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))
                    .with_context(ctx)?,
            );
            vern_consents::SERVICE_NAME
        }
        "retention" => {
            routes.add_service(
                vern_retention::build(config, &t, shutdown)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))
                    .with_context(ctx)?,
            );
            vern_retention::SERVICE_NAME
        }
        "rights" => {
            routes.add_service(
                vern_rights::build(config, &t)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))
                    .with_context(ctx)?,
            );
            vern_rights::SERVICE_NAME
        }
        "audit" => {
            routes.add_service(
                vern_audit::build(config, &t)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))
                    .with_context(ctx)?,
            );
            vern_audit::SERVICE_NAME
        }
        other => anyhow::bail!(
            "unknown service {other:?} (expected one of: {})",
            SERVICES.join(", ")
        ),
    })
}

/// Serves the named services (all six for `vern dev`, one for `vern serve`). In the
/// suite the gateway dispatches to them in process, without a second HTTP/2 hop.
pub async fn suite_of(config: &Config, services: &[&str]) -> anyhow::Result<Served> {
    let mut routes = Routes::builder();
    let mut names = vec![];
    let shutdown = vern_kit::shutdown::Shutdown::new();
    for service in services {
        names.push(add_service(config, service, &mut routes, &shutdown).await?);
    }
    Ok(Served {
        routes: routes.routes(),
        health_names: names,
        denials: denial_sink(config),
        // The caller starts telemetry for the component it serves.
        telemetry: vern_kit::telemetry::Telemetry::off(),
        // A service's own listener: reached by the gateway and the other services.
        exposure: vern_kit::context::Exposure::Internal,
        tenants: Some(tenant_gate(config)?),
        shutdown,
        // The caller sets the listener's TLS.
        tls: None,
    })
}

/// The check that each call's tenant exists and is active, asking the tenants service
/// at `services.tenants.url` with service tokens, and learning of status changes made
/// elsewhere within a second. Fails closed: a component that cannot sign service
/// tokens cannot ask, and refuses to start rather than let every tenant through.
pub fn tenant_gate(config: &Config) -> anyhow::Result<vern_kit::tenancy::TenantGate> {
    let directory =
        vern_gateway::RemoteTenants::new(&config.services.tenants.url, service_tokens(config)?)
            .context("services.tenants.url")?;
    Ok(vern_kit::tenancy::TenantGate::new(
        std::sync::Arc::new(directory),
        std::time::Duration::from_secs(config.auth.tenant_status_ttl_seconds.max(1)),
    )
    .watching())
}

/// The signer of this component's service tokens. Fails closed: a component that
/// cannot sign them cannot ask the tenants service about a caller's tenant, nor vouch
/// for the calls it forwards, and refuses to start rather than serve without.
pub fn service_tokens(
    config: &Config,
) -> anyhow::Result<std::sync::Arc<vern_kit::auth::ServiceTokens>> {
    let tokens = vern_kit::auth::ServiceTokens::from_config(config)
        .context("reading the service signing key (auth.service_key_file)")?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no service signing key: set auth.service_key_file (or auth.hs256_secret); without it this component cannot check that a caller's tenant exists and is active, and it does not serve with that check off"
            )
        })?;
    Ok(std::sync::Arc::new(tokens))
}

/// The standalone gateway (`vern serve gateway`): the public listener, forwarding each
/// call to its service.
pub fn gateway(config: &Config) -> anyhow::Result<Served> {
    let routes = vern_gateway::forwarding_routes(&config.services, service_tokens(config)?)
        .context("backend addresses")?;
    Ok(Served {
        routes,
        health_names: vern_proto::SERVICE_NAMES.to_vec(),
        denials: denial_sink(config),
        telemetry: vern_kit::telemetry::Telemetry::off(),
        exposure: vern_kit::context::Exposure::Public,
        tenants: Some(tenant_gate(config)?),
        shutdown: vern_kit::shutdown::Shutdown::new(),
        tls: None,
    })
}

/// The audit hook for denied calls: delivers them to the audit service with a service
/// token. `None` when no service token can be signed (denials are then logged only).
pub fn denial_sink(config: &Config) -> Option<vern_kit::audit::DenialSink> {
    let tokens = vern_kit::auth::ServiceTokens::from_config(config)
        .ok()
        .flatten()?;
    let delivery =
        vern_append::AuditDelivery::new(&config.services.audit.url, std::sync::Arc::new(tokens))
            .ok()?;
    Some(vern_kit::audit::DenialSink::spawn(std::sync::Arc::new(
        delivery,
    )))
}

/// All six services.
pub async fn suite(config: &Config) -> anyhow::Result<Served> {
    suite_of(config, &SERVICES).await
}

/// The token verifier for `config`: HS256 when a secret is configured (or the dev key
/// in `vern dev`), and the JWKS keys when a file or URL is configured, re-read every
/// `auth.jwks_refresh_seconds`. Must run inside a tokio runtime.
pub fn verifier(config: &Config) -> anyhow::Result<TokenVerifier> {
    let secret = vern_kit::auth::hs256_secret(config).context("reading the dev signing key")?;
    let source = KeySource::from_config(&config.auth);
    if secret.is_none() && source.is_none() {
        anyhow::bail!(
            "no token verification keys: configure auth.jwks_file or auth.jwks_url (or auth.hs256_secret for development)"
        );
    }
    let verifier = TokenVerifier::new(secret.as_deref(), source, &config.auth)
        .map_err(|e| anyhow::anyhow!(e))?;
    verifier.spawn_refresh(std::time::Duration::from_secs(
        config.auth.jwks_refresh_seconds.max(1),
    ));
    Ok(verifier)
}

/// A running suite.
pub struct Running {
    /// Where the gateway listens.
    pub addr: SocketAddr,
    /// The suite's internal listener: a Unix socket only this user can open, where its
    /// services call each other with `service` tokens (the gateway refuses that role).
    pub internal_socket: PathBuf,
    /// Stops the suite (drains in-flight calls).
    pub shutdown: tokio::sync::oneshot::Sender<()>,
    /// Resolves when the server has stopped.
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The suite's traces and metrics (`telemetry.*` in the config).
    pub telemetry: vern_kit::telemetry::Telemetry,
}

impl Running {
    /// The internal listener as a service URL (`unix:/…/internal.sock`).
    pub fn internal_url(&self) -> String {
        format!("unix:{}", self.internal_socket.display())
    }
}

/// The longest socket path bound in place (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 100;

/// `vern dev`'s internal socket file; removed (with its private directory, if it has
/// one) when the suite stops.
struct InternalSocket {
    path: PathBuf,
    private_dir: Option<PathBuf>,
}

impl Drop for InternalSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(d) = &self.private_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A directory only this user may enter (0700), made if missing and narrowed if not.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))
}

/// Binds `vern dev`'s internal listener: a Unix socket (0600, in a 0700 directory), so
/// only processes of this user reach the service role's port — other local users and
/// anything on the network cannot connect at all. It lives in the data directory, or
/// in a private temp directory when that path is too long for a socket address. A
/// socket left by a suite that crashed is replaced; one that answers is another suite
/// on the same data, and refused.
async fn bind_internal(
    data_dir: &Path,
) -> anyhow::Result<(tokio::net::UnixListener, InternalSocket)> {
    let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let in_place = data_dir.join("run");
    let (dir, temp) = if in_place.join("internal.sock").as_os_str().len() <= MAX_SOCKET_PATH {
        (in_place, false)
    } else {
        let name = format!("vern-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        (std::env::temp_dir().join(name), true)
    };
    private_dir(&dir)?;
    let path = dir.join("internal.sock");
    if path.exists() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            anyhow::bail!(
                "another vern dev serves this data directory (its internal socket {} answers); stop it first",
                path.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding the internal socket {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok((
        listener,
        InternalSocket {
            path,
            private_dir: temp.then_some(dir),
        },
    ))
}

/// Starts the whole suite on `listener` (the `vern dev` gateway). The services also
/// listen on an internal Unix socket of their own, where they reach each other: the
/// gateway's listener refuses the `service` role, and only this user can open the
/// socket ([`bind_internal`]).
pub async fn start_suite(config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    let started = Instant::now();
    let addr = listener.local_addr()?;
    let (internal, socket) = bind_internal(&config.data_dir).await?;
    let internal_socket = socket.path.clone();
    let mut config = config;
    let here = format!("unix:{}", internal_socket.display());
    for endpoint in [
        &mut config.services.tenants,
        &mut config.services.subjects,
        &mut config.services.consents,
        &mut config.services.retention,
        &mut config.services.rights,
        &mut config.services.audit,
    ] {
        endpoint.url = here.clone();
    }
    let verifier = verifier(&config)?;
    let mut served = suite(&config).await?;
    served.exposure = vern_kit::context::Exposure::Public;
    // The gateway listener speaks TLS when given certificates (`tls.*`).
    served.tls = vern_kit::tls::ServerTls::from_config(&config.tls).context("tls")?;
    served.telemetry = vern_kit::telemetry::Telemetry::start_with_tls(
        &config.telemetry,
        "dev",
        served.tls.clone(),
    )
    .await
    .context("starting telemetry")?;
    let telemetry = served.telemetry.clone();
    let inner = Served {
        routes: served.routes.clone(),
        health_names: served.health_names.clone(),
        // Denials on the internal port are audited as anywhere else.
        denials: served.denials.clone(),
        telemetry: served.telemetry.clone(),
        exposure: vern_kit::context::Exposure::Internal,
        tenants: served.tenants.clone(),
        shutdown: served.shutdown.clone(),
        // A Unix socket guarded by its permissions: no TLS.
        tls: None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server_config = config.server.clone();
    let internal_server = {
        let verifier = verifier.clone();
        let server_config = server_config.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let served =
                vern_kit::server::serve(inner, internal, &server_config, verifier, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            // The socket file goes with the listener.
            drop(socket);
            served
        })
    };
    let handle = tokio::spawn(async move {
        let mut stop = stop_rx;
        let public =
            vern_kit::server::serve(served, listener, &server_config, verifier, async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        tokio::pin!(public);
        let public = tokio::select! {
            r = &mut public => r,
            _ = rx => {
                let _ = stop_tx.send(true);
                public.await
            }
        };
        let _ = stop_tx.send(true);
        // The internal listener drains with the public one.
        let internal = internal_server.await;
        public.context("serving")?;
        internal
            .context("internal listener task")?
            .context("serving internally")
    });
    tracing::info!(%addr, internal = %internal_socket.display(), ready_ms = started.elapsed().as_millis() as u64, "vern suite ready");
    Ok(Running {
        addr,
        internal_socket,
        shutdown: tx,
        handle,
        telemetry,
    })
}

/// The department `vern dev` makes at its first start, so the console's development
/// sign-in has somewhere to go.
pub const DEMO_DEPARTMENT: &str = "demo";

/// `vern dev`'s demo department: made through the gateway (as a platform admin, with
/// the dev key) when the suite has no department yet; `None` when it has others (they
/// are the developer's own). Repeating it is harmless (one request id).
pub async fn seed_demo_department(
    config: &Config,
    gateway_url: &str,
) -> anyhow::Result<Option<&'static str>> {
    use vern_proto::tenants::v1 as tpb;
    let secret = vern_kit::auth::hs256_secret(config)
        .context("reading the dev signing key")?
        .context("the demo department is made with the dev key")?;
    let now = vern_kit::time::now().timestamp();
    let token = vern_kit::auth::sign_hs256(
        &vern_kit::auth::Claims {
            sub: "vern-dev".into(),
            tenant: vec![],
            roles: vec!["platform-admin".into()],
            iss: config.auth.issuer.clone(),
            aud: config.auth.audience.clone(),
            exp: now + 60,
            nbf: 0,
            iat: now,
        },
        &secret,
    )
    .context("signing the dev token")?;
    let mut tenants =
        tpb::tenant_service_client::TenantServiceClient::new(gateway_channel(gateway_url)?);
    let listed = tenants
        .list_tenants(vern_kit::client::request(
            tpb::ListTenantsRequest {
                page_size: 1,
                ..Default::default()
            },
            &token,
        )?)
        .await
        .context("listing the departments")?
        .into_inner();
    if let Some(first) = listed.tenants.first() {
        return Ok((first.tenant_id == DEMO_DEPARTMENT).then_some(DEMO_DEPARTMENT));
    }
    tenants
        .create_tenant(vern_kit::client::request(
            tpb::CreateTenantRequest {
                tenant_id: DEMO_DEPARTMENT.into(),
                name: "Demoavdelingen".into(),
                // A made-up number that passes the check digit (not a real company).
                org_number: "989990748".into(),
                dpo_email: "personvern@demo.example".into(),
                dpo_name: "Personvernombudet".into(),
                request_id: "vern-dev-demo-department".into(),
                ..Default::default()
            },
            &token,
        )?)
        .await
        .context("making the demo department")?;
    Ok(Some(DEMO_DEPARTMENT))
}

/// A lazily connected channel to the gateway the console calls: `https://` verified
/// with the installed client TLS (`tls.ca_file`), `http://` on loopback or inside the
/// cluster.
pub fn gateway_channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    if url.starts_with("https://") {
        return vern_kit::tls::lazy_channel(url).context("console.gateway_url");
    }
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())
        .context("console.gateway_url")?
        .timeout(std::time::Duration::from_secs(30))
        .connect_lazy())
}

/// The web console on `listener`, a client of the gateway at `gateway_url` with each
/// person's own token. `dev`: with the development sign-in, signing tokens with the
/// dev key (`vern dev` only; `vern serve console` never offers it). Sessions are kept
/// in the `console` store (a SQLite file in the data directory, or the
/// `<prefix>_console` schema), shared by the console's replicas. Serves until
/// `shutdown` resolves.
pub async fn console(
    config: &Config,
    gateway_url: &str,
    dev: Option<Option<String>>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let mut dev_secret = None;
    let dev_sign_in = if let Some(department) = dev {
        let secret = vern_kit::auth::hs256_secret(config)
            .context("reading the dev signing key")?
            .context("the development sign-in needs the dev key")?;
        dev_secret = Some(secret.clone());
        Some(vern_console::auth::DevSignIn {
            secret,
            issuer: config.auth.issuer.clone(),
            audience: config.auth.audience.clone(),
            department,
        })
    } else {
        None
    };
    let oidc = match config.console.oidc.issuer_url.clone() {
        Some(issuer_url) => {
            let public_url = match &config.console.public_url {
                Some(u) => u.trim_end_matches('/').to_owned(),
                None => format!("http://{}", listener.local_addr()?),
            };
            if config.console.oidc.client_secret.is_empty() {
                anyhow::bail!(
                    "console.oidc.client_secret is empty: the console is a confidential client \
                     (set VERN_CONSOLE__OIDC__CLIENT_SECRET)"
                );
            }
            Some(
                vern_console::oidc::Oidc::new(vern_console::oidc::OidcSettings {
                    issuer_url,
                    client_id: config.console.oidc.client_id.clone(),
                    client_secret: config.console.oidc.client_secret.clone(),
                    public_url,
                    scopes: config
                        .console
                        .oidc
                        .scopes
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect(),
                    resource: config.console.oidc.resource.clone(),
                })
                .context("console.oidc")?,
            )
        }
        None => None,
    };
    let console = vern_console::Console::new(vern_console::Settings {
        oidc,
        tls: config
            .console
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://")),
        dev_sign_in,
        gateway: Some(gateway_channel(gateway_url)?),
    })
    .context("loading the console's message catalogs")?;
    let sessions = vern_console::sessions::Sessions::open(&target(config, "console"))
        .await
        .context("opening the console's session store")?;
    let sessions = match session_key(config, dev_secret.as_deref())? {
        Some(key) => sessions.sealed_with(key),
        None => sessions,
    };
    Ok(tokio::spawn(vern_console::serve(
        console, sessions, listener, shutdown,
    )))
}

/// The key sealing the console's sessions: `console.session_key`, else (`vern dev`)
/// one derived from the development key, else none — refused with an OpenID provider,
/// whose tokens the sessions then hold.
fn session_key(config: &Config, dev_secret: Option<&[u8]>) -> anyhow::Result<Option<[u8; 32]>> {
    use base64::Engine as _;
    use sha2::Digest as _;
    if let Some(encoded) = &config.console.session_key {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .context(
                "console.session_key: expected 32 bytes, base64-encoded (openssl rand -base64 32)",
            )?;
        return Ok(Some(bytes));
    }
    if let Some(secret) = dev_secret {
        let mut h = sha2::Sha256::new();
        h.update(b"vern console sessions\0");
        h.update(secret);
        return Ok(Some(h.finalize().into()));
    }
    if config.console.oidc.issuer_url.is_some() {
        anyhow::bail!(
            "console.session_key is required with console.oidc: it seals the provider's tokens \
             in the shared session store (VERN_CONSOLE__SESSION_KEY, the same on every replica; \
             openssl rand -base64 32)"
        );
    }
    Ok(None)
}

/// The data directory in `config`, made absolute for messages.
pub fn data_dir_display(config: &Config) -> PathBuf {
    std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone())
}
