//! vern's web console: server-rendered pages (axum, askama) for the people who run a
//! department's privacy work — department admins, privacy officers, auditors. It is a
//! client of the gateway like any integration and keeps no personal data of its own.
//!
//! This crate holds the frame every page shares: the layout (landmarks, a skip link,
//! the language switch), the message catalogs in bokmål and English ([`i18n`]) and the
//! web security layer ([`security`]). Sign-in and the pages come on top of it.

pub mod i18n;
pub mod pages;
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
}

/// The console's shared state (cheap to clone).
#[derive(Clone, Debug)]
pub struct Console {
    catalogs: Arc<i18n::Catalogs>,
    tls: bool,
}

impl Console {
    /// A console with `settings`; fails only if a message catalog does not load.
    pub fn new(settings: Settings) -> Result<Self, i18n::CatalogError> {
        Ok(Self {
            catalogs: Arc::new(i18n::Catalogs::load()?),
            tls: settings.tls,
        })
    }

    /// The message catalogs.
    pub fn catalogs(&self) -> &i18n::Catalogs {
        &self.catalogs
    }
}

/// Every route of the console behind its security layer.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(pages::sign_in))
        .route("/language", post(pages::set_language))
        .route("/static/console.css", get(pages::stylesheet))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            security::guard,
        ))
        .with_state(console)
}
