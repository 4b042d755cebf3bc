//! RightsService: data subjects' rights requests (Art. 15–22) with their legal deadlines
//! (Art. 12(3)), their fulfilment through the subjects, consents, tenants and retention
//! services, their reports, and the durable per-tenant event feed through which other
//! systems learn of outcomes they must act on and confirm them (Art. 19).
//!
//! Layers: [`api`] (tonic handlers) → [`service`] and [`fulfil`] (use cases) →
//! [`domain`] (deadlines, lifecycle, pure) and [`store`] (sea-orm). A request's personal
//! data (identity, description, corrected values, verification note, extension and
//! rejection reasons) and its report are sealed with a
//! per-request key wrapped by the tenant key ([`seal`]), the subjects service's scheme.

pub mod api;
pub mod domain;
pub mod error;
pub mod feed;
pub mod fulfil;
pub mod model;
pub mod remote;
pub mod report;
pub mod seal;
pub mod service;
pub mod store;

use std::sync::Arc;

use tower::Layer;
use vern_append::AuditDelivery;
use vern_kit::audit::{AUDIT_TOPIC, Audit, AuditLayer, Audited, Auditor, TopicRouter};
use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::rights::v1::rights_service_server::RightsServiceServer;

pub use api::RightsApi;

/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.rights.v1.RightsService";

/// Runs the pending migrations of the store at `target`, and nothing else (`vern
/// migrate`).
pub async fn migrate(target: &DbTarget) -> Result<vern_kit::db::Migrated, sea_orm::DbErr> {
    vern_kit::db::migrate_target::<store::Migrator>(target).await
}

/// Resolves the personal-data keys, opens the store (running migrations), starts the
/// audit relay (so it must run inside a tokio runtime) and builds the gRPC service.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<Audited<RightsServiceServer<RightsApi>>, BuildError> {
    let limits = Limits::from(&config.server);
    let keyring = vern_kit::keys::keyring(config, "rights")?;
    let tokens = Arc::new(
        vern_kit::auth::ServiceTokens::from_config(config)?.ok_or(
            "rights: fulfilment calls the subjects, consents, tenants and retention services: configure auth.service_key_file or auth.hs256_secret",
        )?,
    );
    let channel = |name: &str, url: &str| {
        vern_kit::client::channel(url)
            .map_err(|e| format!("rights: services.{name}.url is not usable: {e}"))
    };
    let upstream = Arc::new(remote::Upstream::new(
        channel("tenants", &config.services.tenants.url)?,
        channel("subjects", &config.services.subjects.url)?,
        channel("consents", &config.services.consents.url)?,
        channel("retention", &config.services.retention.url)?,
        tokens.clone(),
    ));
    let store = store::RightsStore::open(target).await?;
    // Before anything is read or written under a key: the keys are the ones used here.
    vern_kit::keycheck::at_start(
        store.connection(),
        &keyring,
        "rights",
        store.connection(),
        &store::request_keys(),
    )
    .await?;
    // vern_rights_requests{status} and vern_rights_requests_overdue, polled while
    // metrics are on.
    let gauges = store.clone();
    vern_kit::metrics::poll_gauge(
        std::time::Duration::from_secs(15),
        move || {
            let store = gauges.clone();
            async move {
                let (by_status, overdue) = store.status_counts(chrono::Utc::now()).await.ok()?;
                // Every status, so one that emptied drops to 0.
                for status in [
                    "RECEIVED",
                    "VERIFIED",
                    "IN_PROGRESS",
                    "COMPLETED",
                    "REJECTED",
                ] {
                    let n = by_status
                        .iter()
                        .find(|(s, _)| s == status)
                        .map_or(0, |(_, n)| *n);
                    vern_kit::metrics::set_rights_requests(status, n);
                }
                Some(overdue)
            }
        },
        vern_kit::metrics::set_rights_requests_overdue,
    );
    let router = TopicRouter::new().route(
        AUDIT_TOPIC,
        Arc::new(AuditDelivery::new(&config.services.audit.url, tokens)?),
    );
    let relay = router.spawn(
        store.connection().clone(),
        vern_kit::outbox::RelaySettings::new(500, &config.outbox),
    );
    let auditor = Auditor::new(
        store.connection().clone(),
        Some(relay),
        "rights",
        audit_policy,
    );
    let rights = service::Rights::new(store, seal::Sealer::new(keyring), upstream);
    match rights.seal_legacy_feed().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "sealed feed references stored in plaintext"),
        // Retried at the next start; the references stay readable meanwhile.
        Err(e) => tracing::warn!(error = %e, "sealing plaintext feed references failed"),
    }
    match rights.seal_legacy_case_texts().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            requests = n,
            "sealed verification notes and extension and rejection reasons stored in plaintext"
        ),
        // Retried at the next start; the texts stay readable meanwhile.
        Err(e) => tracing::warn!(error = %e, "sealing plaintext case texts failed"),
    }
    Ok(AuditLayer::new(auditor).layer(vern_kit::limited!(
        RightsServiceServer::new(
            RightsApi::new(rights).with_message_limit(limits.max_message_bytes)
        ),
        limits
    )))
}

/// How each RPC is audited: every change; every read of a request or report (they hold
/// personal data). The feed and the settings carry ids only and are not audited as reads.
pub fn audit_policy(rpc: &str) -> Audit {
    match rpc {
        "SubmitRequest"
        | "VerifyIdentity"
        | "ExtendDeadline"
        | "RejectRequest"
        | "FulfilRequest"
        | "AckEvent"
        | "UpdateRightsSettings"
        | "ApplySubjectErasures" => Audit::Change,
        "GetRequest" | "ListRequests" | "GetReport" | "ExportReport" => Audit::Read,
        _ => Audit::No,
    }
}
