//! RightsService: rights requests, deadlines, reports and the downstream event feed.
//!
//! The crate has its store (connection, migrations) and serves health; every RPC
//! answers UNIMPLEMENTED until the rights and retention issue builds it — never a fake answer.

pub mod store;

use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::rights::v1::rights_service_server::{RightsService, RightsServiceServer};

/// The gRPC service name.
/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.rights.v1.RightsService";

/// The RightsService implementation. Not built yet: the generated default methods answer
/// UNIMPLEMENTED.
#[derive(Clone, Debug)]
pub struct RightsApi {
    #[allow(dead_code)]
    store: store::RightsStore,
}

impl RightsService for RightsApi {}

/// Opens the store (running migrations) and builds the gRPC service.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<RightsServiceServer<RightsApi>, BuildError> {
    let limits = Limits::from(&config.server);
    let store = store::RightsStore::open(target).await?;
    Ok(vern_kit::limited!(
        RightsServiceServer::new(RightsApi { store }),
        limits
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vern_proto::rights::v1::rights_service_server::RightsService;

    #[tokio::test]
    async fn unbuilt_rpcs_answer_unimplemented() {
        let dir = std::env::temp_dir().join(format!("vern-rights-{}", uuid::Uuid::new_v4()));
        let target = DbTarget::for_service(None, &dir, "rights");
        let store = store::RightsStore::open(&target).await.expect("open");
        let api = RightsApi { store };
        let status = api
            .get_request(tonic::Request::new(Default::default()))
            .await
            .expect_err("unimplemented");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        let _ = std::fs::remove_dir_all(dir);
    }
}
