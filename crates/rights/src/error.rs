//! The rights service's errors, mapped to gRPC status once.

use sea_orm::DbErr;
use vern_kit::ApiError;

/// Everything that can go wrong in the rights service.
#[derive(Debug, thiserror::Error)]
pub enum RightsError {
    /// Bad input or another API-level error from shared code.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No such rights request in the caller's tenant.
    #[error("rights request not found")]
    NotFound,
    /// No such feed event in the caller's tenant.
    #[error("event not found")]
    EventNotFound,
    /// No such report (the request was not fulfilled).
    #[error("report not found")]
    ReportNotFound,
    /// The subject does not exist in the tenant.
    #[error("subject not found")]
    SubjectNotFound,
    /// The request's state forbids the step.
    #[error("{1}")]
    State(&'static str, String),
    /// No key protects the tenant's personal data.
    #[error("no personal-data key for the tenant")]
    NoTenantKey,
    /// Stored data could not be read back.
    #[error("stored data unreadable")]
    Corrupt(&'static str),
    /// A data key is wrapped under a master key version not configured here.
    #[error("master key version {0} is not configured")]
    MasterKeyVersionMissing(u32),
    /// A data key does not open under the key configured for its version.
    #[error("a data key does not open under {0}")]
    KeyDoesNotOpen(vern_seal::keyring::KeyVersion),
    /// A service this one depends on did not answer, or refused.
    #[error("dependency unavailable")]
    Upstream(&'static str, tonic::Code),
    /// Database failure.
    #[error("database error")]
    Db(#[from] DbErr),
}

impl RightsError {
    /// A state error of kind `kind`.
    pub fn state(kind: &'static str, why: impl Into<String>) -> Self {
        RightsError::State(kind, why.into())
    }
}

impl From<RightsError> for ApiError {
    fn from(e: RightsError) -> ApiError {
        match e {
            RightsError::Api(e) => e,
            RightsError::NotFound => ApiError::NotFound {
                resource: "rights request",
            },
            RightsError::EventNotFound => ApiError::NotFound { resource: "event" },
            RightsError::ReportNotFound => ApiError::NotFound { resource: "report" },
            RightsError::SubjectNotFound => ApiError::NotFound {
                resource: "subject",
            },
            RightsError::State(kind, why) => ApiError::precondition(kind, "rights_request", why),
            RightsError::NoTenantKey => {
                tracing::error!("no personal-data key for the tenant");
                ApiError::precondition(
                    "NO_TENANT_KEY",
                    "tenant",
                    "no key protects this tenant's personal data; configure keys.master_key or keys.tenant_keys",
                )
            }
            RightsError::MasterKeyVersionMissing(v) => {
                tracing::error!(
                    version = v,
                    "a data key's master key version is not configured"
                );
                vern_kit::keys::missing_version(v)
            }
            RightsError::KeyDoesNotOpen(v) => vern_kit::keys::does_not_open(v),
            RightsError::Corrupt(what) => {
                tracing::error!(what, "stored rights data unreadable");
                ApiError::Internal("stored data unreadable")
            }
            RightsError::Upstream(which, code) => {
                tracing::warn!(dependency = which, code = ?code, "dependency failed");
                match code {
                    tonic::Code::Unimplemented => ApiError::precondition(
                        "DEPENDENCY_UNIMPLEMENTED",
                        which,
                        format!("the {which} service does not offer this operation yet"),
                    ),
                    tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
                        ApiError::precondition(
                            "DEPENDENCY_REFUSED",
                            which,
                            format!("the {which} service refused the operation ({code:?})"),
                        )
                    }
                    _ => ApiError::Unavailable,
                }
            }
            RightsError::Db(e) => vern_kit::db::api_error(&e),
        }
    }
}

impl From<RightsError> for tonic::Status {
    fn from(e: RightsError) -> tonic::Status {
        ApiError::from(e).into()
    }
}
