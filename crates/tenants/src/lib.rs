//! TenantService: the controller registry (tenants, purposes, recipients) and the
//! Art. 30 record of processing.
//!
//! Layers: [`api`] (tonic handlers) → [`service`] (use cases) → [`domain`] (rules) and
//! [`store`] (sea-orm).

pub mod api;
pub mod domain;
pub mod error;
pub mod service;
pub mod store;

use std::sync::Arc;

use tower::Layer;
use vern_append::AuditDelivery;
use vern_kit::audit::{AUDIT_TOPIC, Audit, AuditLayer, Audited, Auditor, TopicRouter};
use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::tenants::v1::tenant_service_server::TenantServiceServer;

/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.tenants.v1.TenantService";

/// Runs the pending migrations of the store at `target`, and nothing else (`vern
/// migrate`).
pub async fn migrate(target: &DbTarget) -> Result<vern_kit::db::Migrated, sea_orm::DbErr> {
    vern_kit::db::migrate_target::<store::Migrator>(target).await
}

/// Opens the store (running migrations) and builds the gRPC service.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<Audited<TenantServiceServer<api::TenantApi>>, BuildError> {
    let limits = Limits::from(&config.server);
    let store = store::TenantStore::open(target).await?;
    let tokens = vern_kit::auth::ServiceTokens::from_config(config)?.ok_or(
        "the tenants service notifies the consents service: configure auth.service_key_file or auth.hs256_secret",
    )?;
    let deliver = PurposeDelivery {
        channel: vern_kit::client::channel(&config.services.consents.url)?,
        tokens,
    };
    let audit_tokens = vern_kit::auth::ServiceTokens::from_config(config)?
        .ok_or("no key to sign service tokens")?;
    let router = TopicRouter::new()
        .route(store::PURPOSE_TOPIC, Arc::new(deliver))
        .route(
            AUDIT_TOPIC,
            Arc::new(AuditDelivery::new(
                &config.services.audit.url,
                Arc::new(audit_tokens),
            )?),
        );
    let relay = router.spawn(
        store.connection().clone(),
        vern_kit::outbox::RelaySettings::new(500, &config.outbox),
    );
    let auditor = Auditor::new(
        store.connection().clone(),
        Some(relay.clone()),
        "tenants",
        audit_policy,
    );
    Ok(AuditLayer::new(auditor).layer(vern_kit::limited!(
        TenantServiceServer::new(api::TenantApi::new(service::Registry::with_relay(
            store, relay
        ))),
        limits
    )))
}

/// How each RPC is audited: the registry holds no personal data of subjects, so only
/// changes are audited.
pub fn audit_policy(rpc: &str) -> Audit {
    match rpc {
        "CreateTenant" | "UpdateTenant" | "SuspendTenant" | "ResumeTenant" | "CreatePurpose"
        | "UpdatePurpose" | "CreateRecipient" | "UpdateRecipient" | "EndRecipient" => Audit::Change,
        _ => Audit::No,
    }
}

/// Delivers purpose changes to ConsentService/ApplyPurposes (its cache invalidation).
struct PurposeDelivery {
    channel: vern_kit::client::ServiceChannel,
    tokens: vern_kit::auth::ServiceTokens,
}

#[async_trait::async_trait]
impl vern_kit::outbox::Deliver for PurposeDelivery {
    async fn deliver(
        &self,
        tenant_id: &str,
        topic: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), vern_kit::outbox::DeliveryError> {
        use prost::Message;
        use vern_kit::outbox::DeliveryError;
        use vern_proto::consents::v1 as pb;
        if topic != store::PURPOSE_TOPIC {
            return Err(DeliveryError::Retry(format!(
                "unknown outbox topic {topic:?}"
            )));
        }
        let purposes = payloads
            .iter()
            .map(|p| pb::PurposeDefinition::decode(p.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| DeliveryError::Refused("undecodable purpose notification".to_owned()))?;
        let token = self
            .tokens
            .for_tenant(tenant_id)
            .map_err(|_| "signing a service token failed".to_owned())?;
        let req = vern_kit::client::request(
            pb::ApplyPurposesRequest {
                purposes,
                request_id: String::new(),
            },
            &token,
        )
        .map_err(|s| s.message().to_owned())?;
        pb::consent_service_client::ConsentServiceClient::new(self.channel.clone())
            .apply_purposes(req)
            .await
            .map(|_| ())
            .map_err(|s| DeliveryError::from_status("ApplyPurposes", &s))
    }
}
