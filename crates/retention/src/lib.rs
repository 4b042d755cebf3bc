//! RetentionService: retention policies, legal holds, sweeps that remove expired data
//! through the subjects service's purge primitive, and the per-subject evaluation that
//! erasure requests rely on.
//!
//! Layers: [`api`] (tonic handlers) → [`service`] and [`sweep`] (use cases) →
//! [`domain`] (periods, anchors and decision rules, pure) and [`store`] (sea-orm);
//! [`remote`] calls the tenants, subjects and consents services with a `service` token.

pub mod api;
pub mod domain;
pub mod error;
pub mod remote;
pub mod service;
pub mod store;
pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use tower::Layer;
use vern_append::AuditDelivery;
use vern_kit::audit::{AUDIT_TOPIC, Audit, AuditLayer, Audited, Auditor, TopicRouter};
use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::retention::v1::retention_service_server::RetentionServiceServer;

/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.retention.v1.RetentionService";

/// Runs the pending migrations of the store at `target`, and nothing else (`vern
/// migrate`).
pub async fn migrate(target: &DbTarget) -> Result<vern_kit::db::Migrated, sea_orm::DbErr> {
    vern_kit::db::migrate_target::<store::Migrator>(target).await
}

/// Opens the store (running migrations), builds the gRPC service and starts the sweep
/// scheduler (`retention.sweep_interval_seconds`; 0: off). When `shutdown` begins, the
/// scheduler stops and running sweeps are recorded INTERRUPTED (`shutdown` waits for
/// that); dropping the service also stops the scheduler.
pub async fn build(
    config: &Config,
    target: &DbTarget,
    shutdown: &vern_kit::shutdown::Shutdown,
) -> Result<Audited<RetentionServiceServer<api::RetentionApi>>, BuildError> {
    let limits = Limits::from(&config.server);
    let store = store::RetentionStore::open(target).await?;
    let tokens = Arc::new(vern_kit::auth::ServiceTokens::from_config(config)?.ok_or(
        "the retention service calls the tenants, subjects and consents services: configure auth.service_key_file or auth.hs256_secret",
    )?);
    let upstream = Arc::new(remote::GrpcUpstream {
        tenants: vern_kit::client::channel(&config.services.tenants.url)?,
        subjects: vern_kit::client::channel(&config.services.subjects.url)?,
        consents: vern_kit::client::channel(&config.services.consents.url)?,
        tokens: tokens.clone(),
    });
    let router = TopicRouter::new().route(
        AUDIT_TOPIC,
        Arc::new(AuditDelivery::new(&config.services.audit.url, tokens)?),
    );
    let db = store.connection().clone();
    let relay = router.spawn(
        db.clone(),
        vern_kit::outbox::RelaySettings::new(500, &config.outbox),
    );
    let auditor = Auditor::new(db, Some(relay.clone()), "retention", audit_policy);
    let retention = service::Retention::new(store, upstream);
    let scheduler = match config.retention.sweep_interval_seconds {
        0 => None,
        n => Some(Arc::new(
            sweep::Scheduler::new(retention.clone(), Some(relay), Duration::from_secs(n)).spawn(),
        )),
    };
    if let Some(handle) = &scheduler {
        // Weak: a service dropped without a shutdown still stops its scheduler.
        let handle = Arc::downgrade(handle);
        let mut begun = shutdown.subscribe();
        shutdown.track(tokio::spawn(async move {
            let _ = begun.wait_for(|b| *b).await;
            if let Some(h) = handle.upgrade() {
                h.stop().await;
            }
        }));
    }
    let stop = shutdown.subscribe();
    Ok(AuditLayer::new(auditor).layer(vern_kit::limited!(
        RetentionServiceServer::new(api::RetentionApi::new(retention, scheduler, Some(stop))),
        limits
    )))
}

/// How each RPC is audited: changes to policies, holds and sweeps as changes (ids
/// only); Evaluate and GetSweepRun as reads, since they tell what data of which
/// subjects exists; the other reads hold no personal data.
pub fn audit_policy(rpc: &str) -> Audit {
    match rpc {
        "CreatePolicy" | "UpdatePolicy" | "DeletePolicy" | "PlaceHold" | "ReleaseHold"
        | "RunSweep" => Audit::Change,
        "Evaluate" | "GetSweepRun" => Audit::Read,
        _ => Audit::No,
    }
}
