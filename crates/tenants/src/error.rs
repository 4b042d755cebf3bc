//! The tenants service's errors, mapped to gRPC status once.

use sea_orm::DbErr;
use vern_kit::ApiError;
use vern_kit::db::{DbFailure, classify};

/// Everything that can go wrong in the tenants service.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// Bad input or another API-level error from shared code.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No such tenant (or not visible to the caller).
    #[error("tenant not found")]
    TenantNotFound,
    /// The tenant id is taken.
    #[error("tenant already exists")]
    TenantExists,
    /// No such purpose in the caller's tenant.
    #[error("purpose not found")]
    PurposeNotFound,
    /// The purpose key is taken in the caller's tenant.
    #[error("purpose already exists")]
    PurposeExists,
    /// A purpose named by a recipient does not exist.
    #[error("unknown purpose")]
    UnknownPurpose(usize),
    /// No such recipient in the caller's tenant.
    #[error("recipient not found")]
    RecipientNotFound,
    /// The recipient was ended: it cannot change or end again.
    #[error("recipient ended")]
    RecipientEnded,
    /// The tenant is suspended.
    #[error("tenant suspended")]
    TenantSuspended,
    /// The row changed between read and write.
    #[error("concurrent modification")]
    Conflict,
    /// Database failure.
    #[error("database error")]
    Db(#[from] DbErr),
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> ApiError {
        match e {
            TenantError::Api(e) => e,
            TenantError::TenantNotFound => ApiError::NotFound { resource: "tenant" },
            TenantError::TenantExists => ApiError::AlreadyExists { resource: "tenant" },
            TenantError::PurposeNotFound => ApiError::NotFound {
                resource: "purpose",
            },
            TenantError::PurposeExists => ApiError::AlreadyExists {
                resource: "purpose",
            },
            TenantError::UnknownPurpose(i) => {
                ApiError::invalid(format!("purposes[{i}]"), "is not a purpose of this tenant")
            }
            TenantError::RecipientNotFound => ApiError::NotFound {
                resource: "recipient",
            },
            TenantError::RecipientEnded => ApiError::precondition(
                "RECIPIENT_ENDED",
                "recipient",
                "the recipient was ended; register a new recipient instead",
            ),
            TenantError::TenantSuspended => {
                ApiError::precondition("TENANT_SUSPENDED", "tenant", "the tenant is suspended")
            }
            TenantError::Conflict => ApiError::Aborted("the resource changed concurrently; retry"),
            TenantError::Db(e) => vern_kit::db::api_error(&e),
        }
    }
}

impl From<TenantError> for tonic::Status {
    fn from(e: TenantError) -> tonic::Status {
        ApiError::from(e).into()
    }
}

/// Maps a unique violation to `exists`, anything else through [`TenantError::Db`].
pub(crate) fn unique_or(e: DbErr, exists: TenantError) -> TenantError {
    if classify(&e) == DbFailure::UniqueViolation {
        exists
    } else {
        TenantError::Db(e)
    }
}
