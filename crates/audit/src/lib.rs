//! AuditService: the per-tenant hash chain of audit events, checkpoints and verification.
//!
//! The crate has its store (connection, migrations) and serves health; every RPC
//! answers UNIMPLEMENTED until the audit issue builds it — never a fake answer.

pub mod store;

use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};

/// The gRPC service name.
/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.audit.v1.AuditService";

/// The AuditService implementation. Not built yet: the generated default methods answer
/// UNIMPLEMENTED.
#[derive(Clone, Debug)]
pub struct AuditApi {
    #[allow(dead_code)]
    store: store::AuditStore,
}

impl AuditService for AuditApi {}

/// Opens the store (running migrations) and builds the gRPC service.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<AuditServiceServer<AuditApi>, BuildError> {
    let limits = Limits::from(&config.server);
    let store = store::AuditStore::open(target).await?;
    Ok(vern_kit::limited!(
        AuditServiceServer::new(AuditApi { store }),
        limits
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vern_proto::audit::v1::audit_service_server::AuditService;

    #[tokio::test]
    async fn unbuilt_rpcs_answer_unimplemented() {
        let dir = std::env::temp_dir().join(format!("vern-audit-{}", uuid::Uuid::new_v4()));
        let target = DbTarget::for_service(None, &dir, "audit");
        let store = store::AuditStore::open(&target).await.expect("open");
        let api = AuditApi { store };
        let status = api
            .verify_chain(tonic::Request::new(Default::default()))
            .await
            .expect_err("unimplemented");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        let _ = std::fs::remove_dir_all(dir);
    }
}
