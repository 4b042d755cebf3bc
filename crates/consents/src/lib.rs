//! ConsentService: consent events, derived consent state and the Check hot path.
//!
//! The crate has its store (connection, migrations) and serves health; every RPC
//! answers UNIMPLEMENTED until the subjects and consents issue builds it — never a fake answer.

pub mod domain;
pub mod store;

use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::consents::v1::consent_service_server::{ConsentService, ConsentServiceServer};

/// The gRPC service name.
/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.consents.v1.ConsentService";

/// The ConsentService implementation. Not built yet: the generated default methods answer
/// UNIMPLEMENTED.
#[derive(Clone, Debug)]
pub struct ConsentsApi {
    #[allow(dead_code)]
    store: store::ConsentsStore,
}

impl ConsentService for ConsentsApi {}

/// Opens the store (running migrations) and builds the gRPC service.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<ConsentServiceServer<ConsentsApi>, BuildError> {
    let limits = Limits::from(&config.server);
    let store = store::ConsentsStore::open(target).await?;
    Ok(vern_kit::limited!(
        ConsentServiceServer::new(ConsentsApi { store }),
        limits
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vern_proto::consents::v1::consent_service_server::ConsentService;

    #[tokio::test]
    async fn unbuilt_rpcs_answer_unimplemented() {
        let dir = std::env::temp_dir().join(format!("vern-consents-{}", uuid::Uuid::new_v4()));
        let target = DbTarget::for_service(None, &dir, "consents");
        let store = store::ConsentsStore::open(&target).await.expect("open");
        let api = ConsentsApi { store };
        let status = api
            .check(tonic::Request::new(Default::default()))
            .await
            .expect_err("unimplemented");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        let _ = std::fs::remove_dir_all(dir);
    }
}
