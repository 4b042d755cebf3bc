//! The audit service's errors, mapped to gRPC status once.

use sea_orm::DbErr;
use vern_kit::ApiError;

/// Everything that can go wrong in the audit service.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Bad input or another API-level error from shared code.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No such event in the caller's tenant.
    #[error("event not found")]
    EventNotFound,
    /// No such checkpoint in the caller's tenant.
    #[error("checkpoint not found")]
    CheckpointNotFound,
    /// Another writer moved the chain head between read and write.
    #[error("chain head moved concurrently")]
    Conflict,
    /// A stored row cannot be read back (altered or corrupt); names the table only.
    #[error("unreadable stored row")]
    Corrupt(&'static str),
    /// Database failure.
    #[error("database error")]
    Db(#[from] DbErr),
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> ApiError {
        match e {
            AuditError::Api(e) => e,
            AuditError::EventNotFound => ApiError::NotFound { resource: "event" },
            AuditError::CheckpointNotFound => ApiError::NotFound {
                resource: "checkpoint",
            },
            AuditError::Conflict => ApiError::Aborted("the chain head moved concurrently; retry"),
            AuditError::Corrupt(table) => {
                tracing::error!(table, "unreadable audit row");
                ApiError::Internal("unreadable audit row")
            }
            AuditError::Db(e) => vern_kit::db::api_error(&e),
        }
    }
}

impl From<AuditError> for tonic::Status {
    fn from(e: AuditError) -> tonic::Status {
        ApiError::from(e).into()
    }
}
