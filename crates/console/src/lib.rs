//! vern's web console: server-rendered pages (axum, askama) for the people who run a
//! department's privacy work — department admins, privacy officers, auditors. It is a
//! client of the gateway like any integration and keeps no personal data of its own.
//!
//! This crate holds the frame every page shares: the layout (landmarks, a skip link,
//! the language switch), the message catalogs in bokmål and English ([`i18n`]) and the
//! web security layer ([`security`]). Sign-in and the pages come on top of it.

pub mod auth;
pub mod i18n;
pub mod intake;
pub mod oidc;
pub mod overview;
pub mod pages;
pub mod problems;
pub mod queue;
pub mod request;
pub mod security;
pub mod sessions;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

/// How the console is served.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The console is reached over TLS (HSTS, `Secure` cookies).
    pub tls: bool,
    /// The development sign-in (`vern dev` only; `None` everywhere else).
    pub dev_sign_in: Option<auth::DevSignIn>,
    /// The gateway every page's data comes from, with the person's own token.
    pub gateway: Option<tonic::transport::Channel>,
    /// The sign-in through the organisation's OpenID provider, if set up.
    pub oidc: Option<oidc::Oidc>,
}

/// The console's shared state (cheap to clone).
#[derive(Clone, Debug)]
pub struct Console {
    catalogs: Arc<i18n::Catalogs>,
    tls: bool,
    dev: Option<Arc<auth::DevSignIn>>,
    gateway: Option<tonic::transport::Channel>,
    oidc: Option<oidc::Oidc>,
}

impl Console {
    /// A console with `settings`; fails only if a message catalog does not load.
    pub fn new(settings: Settings) -> Result<Self, i18n::CatalogError> {
        Ok(Self {
            catalogs: Arc::new(i18n::Catalogs::load()?),
            tls: settings.tls,
            dev: settings.dev_sign_in.map(Arc::new),
            gateway: settings.gateway,
            oidc: settings.oidc,
        })
    }

    /// The message catalogs.
    pub fn catalogs(&self) -> &i18n::Catalogs {
        &self.catalogs
    }
}

/// Every route of the console behind its security layer, with its sessions in
/// `sessions`.
pub fn router(console: Console, sessions: sessions::Sessions) -> Router {
    use tower_sessions::{Expiry, SessionManagerLayer, cookie::SameSite};
    let sessions = SessionManagerLayer::new(sessions)
        .with_name(auth::COOKIE)
        .with_path("/")
        .with_secure(true)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(
            auth::IDLE_MINUTES,
        )));
    Router::new()
        .route("/", get(pages::sign_in))
        .route("/dev/sign-in", post(auth::dev_sign_in))
        .route("/sign-in", get(oidc::start))
        .route(oidc::CALLBACK, get(oidc::callback))
        .route("/sign-out", post(auth::sign_out))
        .route("/department", post(auth::switch_department))
        .route("/overview", get(pages::overview))
        .route("/requests", get(queue::page))
        .route("/requests/new", get(intake::form).post(intake::submit))
        .route("/requests/search", post(queue::search))
        .route("/requests/{id}", get(request::page))
        .route("/requests/{id}/{action}", post(request::act))
        .route("/language", post(pages::set_language))
        .route("/static/console.css", get(pages::stylesheet))
        // For probes and load balancers: touches no session, so it stores nothing.
        .route("/healthz", get(|| async { "ok" }))
        .fallback(pages::not_found)
        .layer(sessions)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            security::guard,
        ))
        .with_state(console)
}

/// How often expired sessions are swept from the store.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Serves the console on `listener` (HTTP/1.1 and HTTP/2 over plain TCP: TLS ends in
/// front of it when deployed, and `vern dev` listens on loopback) until `shutdown`
/// resolves, then lets requests in flight finish. Expired sessions are swept meanwhile.
pub async fn serve(
    console: Console,
    sessions: sessions::Sessions,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower_sessions_core::session_store::ExpiredDeletion;
    let store = sessions.clone();
    let sweeper = tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            every.tick().await;
            if let Err(e) = store.delete_expired().await {
                tracing::warn!(error = %e, "sweeping expired console sessions failed");
            }
        }
    });
    let app = router(console, sessions);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    sweeper.abort();
    served
}
