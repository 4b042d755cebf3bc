//! AuditService: the tamper-evident, per-tenant hash chain of audit events (GDPR
//! Art. 5(2) accountability), Ed25519-signed checkpoints of its head, verification in
//! the service and offline.
//!
//! Layers: [`api`] (tonic handlers) → [`service`] (use cases: per-tenant lock, retries,
//! verification, checkpointing, export) → [`domain`] (validation and normalisation) and
//! [`store`] (sea-orm). [`chain`] is the pure core shared with the offline verifier:
//! the canonical encoding, the chain step, checkpoint signatures and [`chain::Verifier`].
//! [`export`] is the JSON-lines export format and its offline verification. [`keys`]
//! loads the signing key and the checkpoint policy.

pub mod api;
pub mod chain;
pub mod domain;
pub mod error;
pub mod export;
pub mod keys;
pub mod service;
pub mod store;

use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::audit::v1::audit_service_server::AuditServiceServer;

pub use api::AuditApi;

/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.audit.v1.AuditService";

/// Runs the pending migrations of the store at `target`, and nothing else (`vern
/// migrate`).
pub async fn migrate(target: &DbTarget) -> Result<vern_kit::db::Migrated, sea_orm::DbErr> {
    vern_kit::db::migrate_target::<store::Migrator>(target).await
}

/// Opens the store (running migrations), loads the checkpoint signing key and the
/// retired public keys (see [`keys`]), starts the periodic checkpointer and builds the
/// gRPC service.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<AuditServiceServer<AuditApi>, BuildError> {
    let limits = Limits::from(&config.server);
    let signer = keys::AuditSigner::from_config(config, true)?;
    let verify_keys = keys::verify_keys(config, signer.verifying_key())?;
    let policy = keys::CheckpointPolicy::from_env()?;
    let store = store::AuditStore::open(target).await?;
    // vern_audit_duplicate_events_total appears from the start (0: no redelivery yet).
    vern_kit::metrics::add_audit_duplicates(0);
    // vern_audit_chain_length: a head's seq is its chain's length (seq is gap-free).
    vern_kit::metrics::poll_sql_gauge(
        store.connection().clone(),
        "SELECT CAST(COALESCE(SUM(seq), 0) AS BIGINT) AS n FROM chain_heads",
        std::time::Duration::from_secs(15),
        vern_kit::metrics::set_audit_chain_length,
    );
    let log = service::AuditLog::with_keys(store, signer, verify_keys, policy);
    log.spawn_checkpointer();
    if let Some(file) = keys::AuditSigner::source_file(config) {
        log.spawn_key_watch(file, std::time::Duration::from_secs(1));
    }
    tracing::info!(
        key_id = log.signer().key_id(),
        verify_key_ids = %log.verify_keys().ids().join(","),
        "audit checkpoint keys loaded"
    );
    Ok(vern_kit::limited!(
        AuditServiceServer::new(AuditApi::new(log)),
        limits
    ))
}
