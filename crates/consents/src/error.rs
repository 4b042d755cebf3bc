//! The consents service's errors, mapped to gRPC status once.

use sea_orm::DbErr;
use vern_kit::ApiError;

/// Everything that can go wrong in the consents service.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// Bad input or another API-level error from shared code.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No such subject in the caller's tenant.
    #[error("subject not found")]
    SubjectNotFound,
    /// The subject was erased: no new consent can be recorded.
    #[error("subject erased")]
    SubjectErased,
    /// No such purpose in the caller's tenant.
    #[error("purpose not found")]
    PurposeNotFound,
    /// A service this one depends on (tenants, subjects) did not answer.
    #[error("dependency unavailable")]
    Upstream(&'static str),
    /// No key protects the tenant's personal data (configuration).
    #[error("no key for the tenant's personal data")]
    NoTenantKey,
    /// A stored ciphertext or key could not be used (never says which value).
    #[error("stored value unreadable: {0}")]
    Corrupt(&'static str),
    /// A data key is wrapped under a master key version not configured here.
    #[error("master key version {0} is not configured")]
    MasterKeyVersionMissing(u32),
    /// A data key does not open under the key configured for its version.
    #[error("a data key does not open under {0}")]
    KeyDoesNotOpen(vern_seal::keyring::KeyVersion),
    /// Database failure.
    #[error("database error")]
    Db(#[from] DbErr),
}

impl From<ConsentError> for ApiError {
    fn from(e: ConsentError) -> ApiError {
        match e {
            ConsentError::Api(e) => e,
            ConsentError::SubjectNotFound => ApiError::NotFound {
                resource: "subject",
            },
            ConsentError::PurposeNotFound => ApiError::NotFound {
                resource: "purpose",
            },
            ConsentError::SubjectErased => ApiError::precondition(
                "SUBJECT_ERASED",
                "subject",
                "the subject was erased; no consent can be recorded",
            ),
            ConsentError::Upstream(which) => {
                tracing::warn!(dependency = which, "dependency unavailable");
                ApiError::Unavailable
            }
            ConsentError::NoTenantKey => {
                tracing::error!("no key configured for the tenant's personal data");
                ApiError::Internal("no key for the tenant's personal data")
            }
            ConsentError::MasterKeyVersionMissing(v) => {
                tracing::error!(
                    version = v,
                    "a data key's master key version is not configured"
                );
                vern_kit::keys::missing_version(v)
            }
            ConsentError::KeyDoesNotOpen(v) => vern_kit::keys::does_not_open(v),
            ConsentError::Corrupt(what) => {
                tracing::error!(what, "stored value unreadable");
                ApiError::Internal("stored value unreadable")
            }
            ConsentError::Db(e) => vern_kit::db::api_error(&e),
        }
    }
}

impl From<ConsentError> for tonic::Status {
    fn from(e: ConsentError) -> tonic::Status {
        ApiError::from(e).into()
    }
}
