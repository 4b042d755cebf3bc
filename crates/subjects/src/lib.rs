//! SubjectService: subjects, identifiers (encrypted, blind-indexed), records, restriction and erasure.
//!
//! The crate has its store (connection, migrations) and serves health; every RPC
//! answers UNIMPLEMENTED until the subjects issue builds it — never a fake answer.

pub mod domain;
pub mod store;

use vern_kit::config::Config;
use vern_kit::db::DbTarget;
use vern_kit::server::Limits;
use vern_proto::subjects::v1::subject_service_server::{SubjectService, SubjectServiceServer};

/// The gRPC service name.
/// Why a service could not start.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "vern.subjects.v1.SubjectService";

/// The SubjectService implementation. Not built yet: the generated default methods answer
/// UNIMPLEMENTED.
#[derive(Clone, Debug)]
pub struct SubjectsApi {
    #[allow(dead_code)]
    store: store::SubjectsStore,
}

impl SubjectService for SubjectsApi {}

/// Opens the store (running migrations) and builds the gRPC service.
pub async fn build(
    config: &Config,
    target: &DbTarget,
) -> Result<SubjectServiceServer<SubjectsApi>, BuildError> {
    let limits = Limits::from(&config.server);
    let store = store::SubjectsStore::open(target).await?;
    Ok(vern_kit::limited!(
        SubjectServiceServer::new(SubjectsApi { store }),
        limits
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vern_proto::subjects::v1::subject_service_server::SubjectService;

    #[tokio::test]
    async fn unbuilt_rpcs_answer_unimplemented() {
        let dir = std::env::temp_dir().join(format!("vern-subjects-{}", uuid::Uuid::new_v4()));
        let target = DbTarget::for_service(None, &dir, "subjects");
        let store = store::SubjectsStore::open(&target).await.expect("open");
        let api = SubjectsApi { store };
        let status = api
            .get_subject(tonic::Request::new(Default::default()))
            .await
            .expect_err("unimplemented");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        let _ = std::fs::remove_dir_all(dir);
    }
}
