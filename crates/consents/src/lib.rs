//! ConsentService: append-only consent events (proof of consent, Art. 7(1)), the
//! derived consent state, and the Check hot path that CRM and accounting systems call
//! before every newsletter or invoice run.
//!
//! Layers: [`api`] (tonic handlers) → [`service`] (use cases) → [`domain`] (the legal
//! basis rules, pure) and [`store`] (sea-orm). Check reads only what this service holds:
//! purposes cached from the tenants service ([`purposes`]) and its own projection of
//! subject states kept current by the subjects service's outbox. Evidence and the
//! reasons of compelling-grounds decisions are sealed under a per-subject data key
//! wrapped by the tenant key ([`seal`]) and shredded when the projection learns the
//! subject is erased.

pub mod api;
pub mod domain;
pub mod error;
pub mod purposes;
pub mod remote;
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
use vern_proto::consents::v1::consent_service_server::ConsentServiceServer;

/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.consents.v1.ConsentService";

/// Runs the pending migrations of the store at `target`, and nothing else (`vern
/// migrate`).
pub async fn migrate(target: &DbTarget) -> Result<vern_kit::db::Migrated, sea_orm::DbErr> {
    vern_kit::db::migrate_target::<store::Migrator>(target).await
}

/// Resolves the personal-data keys, opens the store (running migrations, then sealing
/// evidence stored in plaintext by older versions) and builds the gRPC service.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<Audited<ConsentServiceServer<api::ConsentApi>>, BuildError> {
    let limits = Limits::from(&config.server);
    let keyring = vern_kit::keys::keyring(config, "consents")?;
    let store =
        store::ConsentStore::open_with(target, keyring.clone(), config.database_listen_notify)
            .await?;
    // Before anything is read or written under a key: the keys are the ones used here.
    vern_kit::keycheck::at_start(
        store.connection(),
        &keyring,
        "consents",
        store.connection(),
        &store::consent_keys(),
    )
    .await?;
    match store.seal_legacy().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            rows = n,
            "sealed consent evidence and grounds stored in plaintext"
        ),
        // Retried at the next start; the rows stay readable meanwhile.
        Err(e) => tracing::warn!(error = %e, "sealing plaintext consent evidence failed"),
    }
    {
        // Warm the Check cache in the background: Checks answer meanwhile (from the
        // database on a miss), and a page racing a write is simply dropped.
        let store = store.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match store.warm_check_cache().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    subjects = n,
                    ms = started.elapsed().as_millis() as u64,
                    "check cache warmed"
                ),
                Err(e) => tracing::warn!(error = %e, "warming the check cache failed"),
            }
        });
    }
    let tokens = Arc::new(vern_kit::auth::ServiceTokens::from_config(config)?.ok_or(
        "the consents service calls the tenants and subjects services: configure auth.service_key_file or auth.hs256_secret",
    )?);
    let purposes = Arc::new(purposes::PurposeCache::with_book(
        Arc::new(remote::TenantsClient {
            channel: vern_kit::client::traced_channel(&config.services.tenants.url)?,
            tokens: tokens.clone(),
        }),
        Arc::new(store.clone()),
    ));
    // Replicas share the purposes table: follow the others' changes.
    purposes.watch(store.connection().clone());
    let subjects = Arc::new(remote::SubjectsClient {
        channel: vern_kit::client::traced_channel(&config.services.subjects.url)?,
        tokens,
    });
    let audit_tokens = vern_kit::auth::ServiceTokens::from_config(config)?
        .ok_or("no key to sign service tokens")?;
    let router = TopicRouter::new().route(
        AUDIT_TOPIC,
        Arc::new(AuditDelivery::new(
            &config.services.audit.url,
            Arc::new(audit_tokens),
        )?),
    );
    let auditor_db = store.connection().clone();
    let relay = router.spawn(
        auditor_db.clone(),
        vern_kit::outbox::RelaySettings::new(500, &config.outbox),
    );
    let auditor = Auditor::new(auditor_db, Some(relay), "consents", audit_policy);
    let consents = service::Consents::new(store, purposes, subjects);
    Ok(AuditLayer::new(auditor).layer(vern_kit::limited!(
        ConsentServiceServer::new(api::ConsentApi::new(consents)),
        limits
    )))
}

/// How each RPC is audited. Check and BatchCheck are not: they are the hot path, read
/// no personal data beyond a yes/no, and would flood the chain (a newsletter run checks
/// thousands of subjects).
pub fn audit_policy(rpc: &str) -> Audit {
    match rpc {
        "RecordConsent" | "RecordCompellingGrounds" => Audit::Change,
        "GetConsentState" | "ListConsentStates" | "ListConsentHistory" => Audit::Read,
        _ => Audit::No,
    }
}
