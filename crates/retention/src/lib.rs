//! RetentionService: retention policies, legal holds and sweeps.
//!
//! The crate has its store (connection, migrations) and serves health; every RPC
//! answers UNIMPLEMENTED until the rights and retention issue builds it — never a fake answer.

pub mod store;

use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::retention::v1::retention_service_server::{
    RetentionService, RetentionServiceServer,
};

/// The gRPC service name.
/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.retention.v1.RetentionService";

/// The RetentionService implementation. Not built yet: the generated default methods answer
/// UNIMPLEMENTED.
#[derive(Clone, Debug)]
pub struct RetentionApi {
    #[allow(dead_code)]
    store: store::RetentionStore,
}

impl RetentionService for RetentionApi {}

/// Opens the store (running migrations) and builds the gRPC service.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<RetentionServiceServer<RetentionApi>, BuildError> {
    let limits = Limits::from(&config.server);
    let store = store::RetentionStore::open(target).await?;
    Ok(vern_kit::limited!(
        RetentionServiceServer::new(RetentionApi { store }),
        limits
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vern_proto::retention::v1::retention_service_server::RetentionService;

    #[tokio::test]
    async fn unbuilt_rpcs_answer_unimplemented() {
        let dir = std::env::temp_dir().join(format!("vern-retention-{}", uuid::Uuid::new_v4()));
        let target = DbTarget::for_service(None, &dir, "retention");
        let store = store::RetentionStore::open(&target).await.expect("open");
        let api = RetentionApi { store };
        let status = api
            .list_policies(tonic::Request::new(Default::default()))
            .await
            .expect_err("unimplemented");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        let _ = std::fs::remove_dir_all(dir);
    }
}
