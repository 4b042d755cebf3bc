//! The retention service's errors, mapped to gRPC status once.

use sea_orm::DbErr;
use vern_kit::ApiError;

/// Everything that can go wrong in the retention service.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// Bad input or another API-level error from shared code.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No such policy in the caller's tenant.
    #[error("policy not found")]
    PolicyNotFound,
    /// No such hold in the caller's tenant.
    #[error("hold not found")]
    HoldNotFound,
    /// No such sweep run in the caller's tenant.
    #[error("sweep run not found")]
    SweepRunNotFound,
    /// No such subject in the caller's tenant.
    #[error("subject not found")]
    SubjectNotFound,
    /// The purpose named by a policy does not exist in the tenant.
    #[error("unknown purpose")]
    UnknownPurpose(&'static str),
    /// The hold was released already.
    #[error("hold released")]
    HoldReleased,
    /// Another sweep of the tenant is running.
    #[error("sweep running")]
    SweepRunning,
    /// Another instance claimed this interval's scheduled sweep of the tenant.
    #[error("sweep claimed")]
    SweepClaimed,
    /// Another service failed (named; no message text from it).
    #[error("upstream {0} failed")]
    Upstream(&'static str),
    /// The row changed between read and write.
    #[error("concurrent modification")]
    Conflict,
    /// Database failure.
    #[error("database error")]
    Db(#[from] DbErr),
}

impl From<RetentionError> for ApiError {
    fn from(e: RetentionError) -> ApiError {
        match e {
            RetentionError::Api(e) => e,
            RetentionError::PolicyNotFound => ApiError::NotFound { resource: "policy" },
            RetentionError::HoldNotFound => ApiError::NotFound { resource: "hold" },
            RetentionError::SweepRunNotFound => ApiError::NotFound {
                resource: "sweep run",
            },
            RetentionError::SubjectNotFound => ApiError::NotFound {
                resource: "subject",
            },
            RetentionError::UnknownPurpose(field) => {
                ApiError::invalid(field, "is not a purpose of this tenant")
            }
            RetentionError::HoldReleased => {
                ApiError::precondition("HOLD_RELEASED", "hold", "the hold was already released")
            }
            RetentionError::SweepRunning => ApiError::precondition(
                "SWEEP_RUNNING",
                "sweep",
                "another sweep of this tenant is running",
            ),
            RetentionError::SweepClaimed => ApiError::precondition(
                "SWEEP_CLAIMED",
                "sweep",
                "this interval's scheduled sweep of the tenant was claimed by another instance",
            ),
            RetentionError::Upstream(service) => {
                tracing::warn!(service, "upstream call failed");
                ApiError::Unavailable
            }
            RetentionError::Conflict => {
                ApiError::Aborted("the resource changed concurrently; retry")
            }
            RetentionError::Db(e) => vern_kit::db::api_error(&e),
        }
    }
}

impl From<RetentionError> for tonic::Status {
    fn from(e: RetentionError) -> tonic::Status {
        ApiError::from(e).into()
    }
}
