//! ConsentService: append-only consent events (proof of consent, Art. 7(1)), the
//! derived consent state, and the Check hot path that CRM and accounting systems call
//! before every newsletter or invoice run.
//!
//! Layers: [`api`] (tonic handlers) → [`service`] (use cases) → [`domain`] (the legal
//! basis rules, pure) and [`store`] (sea-orm). Check reads only what this service holds:
//! purposes cached from the tenants service ([`purposes`]) and its own projection of
//! subject states kept current by the subjects service's outbox.

pub mod api;
pub mod domain;
pub mod error;
pub mod purposes;
pub mod remote;
pub mod service;
pub mod store;

use std::sync::Arc;

use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::consents::v1::consent_service_server::ConsentServiceServer;

/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.consents.v1.ConsentService";

/// Opens the store (running migrations) and builds the gRPC service.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<ConsentServiceServer<api::ConsentApi>, BuildError> {
    let limits = Limits::from(&config.server);
    let store = store::ConsentStore::open(target).await?;
    let tokens = Arc::new(vern_kit::auth::ServiceTokens::from_config(config)?.ok_or(
        "the consents service calls the tenants and subjects services: configure auth.service_key_file or auth.hs256_secret",
    )?);
    let purposes = Arc::new(purposes::PurposeCache::new(Arc::new(
        remote::TenantsClient {
            channel: vern_kit::client::channel(&config.services.tenants.url)?,
            tokens: tokens.clone(),
        },
    )));
    let subjects = Arc::new(remote::SubjectsClient {
        channel: vern_kit::client::channel(&config.services.subjects.url)?,
        tokens,
    });
    let consents = service::Consents::new(store, purposes, subjects);
    Ok(vern_kit::limited!(
        ConsentServiceServer::new(api::ConsentApi::new(consents)),
        limits
    ))
}
