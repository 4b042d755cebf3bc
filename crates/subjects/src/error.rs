//! The subjects service's errors, mapped to gRPC status once.
//!
//! No variant carries personal data, and database errors (whose text can quote
//! stored values) show only their kind in `Debug` and `Display`.

use sea_orm::DbErr;
use vern_kit::ApiError;
use vern_kit::db::{DbFailure, classify};

use crate::domain::IdentifierKind;
use crate::domain::crypto::CryptoError;

/// Everything that can go wrong in the subjects service.
#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    /// Bad input or another API-level error from shared code.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No such subject in the caller's tenant.
    #[error("subject not found")]
    SubjectNotFound,
    /// No such record of the subject.
    #[error("record not found")]
    RecordNotFound,
    /// Another subject of the tenant holds this identifier.
    #[error("identifier already held by another subject")]
    IdentifierTaken(IdentifierKind),
    /// Another subject of the tenant holds this external reference.
    #[error("external reference already held by another subject")]
    ExternalRefTaken,
    /// The subject is erased.
    #[error("subject erased")]
    Erased,
    /// The call needs an ACTIVE subject.
    #[error("subject not active")]
    NotActive,
    /// The call needs a RESTRICTED subject.
    #[error("subject not restricted")]
    NotRestricted,
    /// Purposes named for a subject restricted as a whole.
    #[error("subject restricted as a whole")]
    WhollyRestricted,
    /// Erasure was requested; the subject's kept records wait for their duty to end.
    #[error("erasure pending")]
    ErasurePending,
    /// The record is kept under a retention duty and may only be stored.
    #[error("record restricted")]
    RecordRestricted,
    /// No key protects the tenant's personal data.
    #[error("no key for the tenant")]
    NoTenantKey,
    /// The subject's data key is gone although the subject is not erased (an
    /// erasure was interrupted after the shred).
    #[error("data key missing")]
    DataKeyMissing,
    /// A stored ciphertext or wrapped key does not open.
    #[error("stored data cannot be decrypted")]
    Crypto(#[from] CryptoError),
    /// A data key is wrapped under a master key version not configured here.
    #[error("master key version {0} is not configured")]
    MasterKeyVersionMissing(u32),
    /// A data key does not open under the key configured for its version.
    #[error("a data key does not open under {0}")]
    KeyDoesNotOpen(vern_seal::keyring::KeyVersion),
    /// The row changed between read and write.
    #[error("concurrent modification")]
    Conflict,
    /// Database failure.
    #[error("database error")]
    Db(DbError),
}

/// A database error whose text is never shown (it can quote stored values).
pub struct DbError(pub DbErr);

impl std::fmt::Debug for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbError({:?})", classify(&self.0))
    }
}

impl From<DbErr> for SubjectError {
    fn from(e: DbErr) -> Self {
        SubjectError::Db(DbError(e))
    }
}

fn precondition(kind: &str, subject: &str, description: &str) -> ApiError {
    ApiError::precondition(kind, subject, description)
}

impl From<SubjectError> for ApiError {
    fn from(e: SubjectError) -> ApiError {
        match e {
            SubjectError::Api(e) => e,
            SubjectError::SubjectNotFound => ApiError::NotFound {
                resource: "subject",
            },
            SubjectError::RecordNotFound => ApiError::NotFound { resource: "record" },
            SubjectError::IdentifierTaken(kind) => ApiError::AlreadyExists {
                resource: match kind {
                    IdentifierKind::Email => "subject with this email",
                    IdentifierKind::Phone => "subject with this phone",
                    IdentifierKind::NationalId => "subject with this national_id",
                },
            },
            SubjectError::ExternalRefTaken => ApiError::AlreadyExists {
                resource: "subject with this external reference",
            },
            SubjectError::Erased => {
                precondition("SUBJECT_ERASED", "subject", "the subject is erased")
            }
            SubjectError::NotActive => precondition(
                "SUBJECT_NOT_ACTIVE",
                "subject",
                "the subject is restricted or erased; its data may only be stored",
            ),
            SubjectError::NotRestricted => precondition(
                "SUBJECT_NOT_RESTRICTED",
                "subject",
                "the subject, or a purpose named, is not restricted",
            ),
            SubjectError::WhollyRestricted => precondition(
                "SUBJECT_WHOLLY_RESTRICTED",
                "subject",
                "the subject is restricted as a whole; lift its restriction without purposes",
            ),
            SubjectError::ErasurePending => precondition(
                "ERASURE_PENDING",
                "subject",
                "erasure was requested; the subject's kept records wait for their retention duty to end",
            ),
            SubjectError::RecordRestricted => precondition(
                "RECORD_RESTRICTED",
                "record",
                "the record is kept under a retention duty and may only be stored",
            ),
            SubjectError::NoTenantKey => precondition(
                "TENANT_KEY_MISSING",
                "tenant",
                "no key protects this tenant's personal data: configure keys.master_key or keys.tenant_keys",
            ),
            SubjectError::DataKeyMissing => {
                tracing::error!(kind = "data_key_missing", "subject data key missing");
                precondition(
                    "DATA_KEY_DESTROYED",
                    "subject",
                    "the subject's data key is destroyed (an interrupted erasure); repeat EraseSubject",
                )
            }
            SubjectError::Crypto(e) => {
                tracing::error!(kind = %e, "stored personal data does not decrypt");
                ApiError::Internal("decryption")
            }
            SubjectError::MasterKeyVersionMissing(v) => {
                tracing::error!(
                    version = v,
                    "a data key's master key version is not configured"
                );
                vern_kit::keys::missing_version(v)
            }
            SubjectError::KeyDoesNotOpen(v) => vern_kit::keys::does_not_open(v),
            SubjectError::Conflict => ApiError::Aborted("the subject changed concurrently; retry"),
            SubjectError::Db(DbError(e)) => vern_kit::db::api_error(&e),
        }
    }
}

impl From<vern_seal::keyring::UnwrapError> for SubjectError {
    fn from(e: vern_seal::keyring::UnwrapError) -> Self {
        match e {
            vern_seal::keyring::UnwrapError::UnknownVersion(v) => Self::MasterKeyVersionMissing(v),
            vern_seal::keyring::UnwrapError::DoesNotOpen(v) => Self::KeyDoesNotOpen(v),
            vern_seal::keyring::UnwrapError::Crypto(c) => Self::Crypto(c),
        }
    }
}

impl From<SubjectError> for tonic::Status {
    fn from(e: SubjectError) -> tonic::Status {
        ApiError::from(e).into()
    }
}

/// Maps a unique violation to `taken`, anything else through [`SubjectError::Db`].
pub(crate) fn unique_or(e: DbErr, taken: SubjectError) -> SubjectError {
    if classify(&e) == DbFailure::UniqueViolation {
        taken
    } else {
        SubjectError::from(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        use tonic::Code;
        let cases = [
            (SubjectError::SubjectNotFound, Code::NotFound),
            (SubjectError::RecordNotFound, Code::NotFound),
            (
                SubjectError::IdentifierTaken(IdentifierKind::Email),
                Code::AlreadyExists,
            ),
            (SubjectError::ExternalRefTaken, Code::AlreadyExists),
            (SubjectError::Erased, Code::FailedPrecondition),
            (SubjectError::NotActive, Code::FailedPrecondition),
            (SubjectError::NotRestricted, Code::FailedPrecondition),
            (SubjectError::ErasurePending, Code::FailedPrecondition),
            (SubjectError::WhollyRestricted, Code::FailedPrecondition),
            (SubjectError::RecordRestricted, Code::FailedPrecondition),
            (SubjectError::NoTenantKey, Code::FailedPrecondition),
            (SubjectError::DataKeyMissing, Code::FailedPrecondition),
            (SubjectError::Crypto(CryptoError::Decrypt), Code::Internal),
            (SubjectError::Conflict, Code::Aborted),
            (
                SubjectError::from(DbErr::Custom("x@example.no".into())),
                Code::Internal,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(ApiError::from(e).code(), code);
        }
    }

    #[test]
    fn a_key_that_does_not_open_is_unavailable_and_named() {
        use vern_seal::keyring::{KeyVersion, UnwrapError};
        let status = tonic::Status::from(SubjectError::from(UnwrapError::DoesNotOpen(
            KeyVersion::Master(2),
        )));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().contains("master key version 2"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("vern keys verify"));
    }

    #[test]
    fn database_text_is_never_shown() {
        let e = SubjectError::from(DbErr::Custom("Key (ref_id)=(cust-42) exists".into()));
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("cust-42"), "{shown}");
        let status = tonic::Status::from(e);
        assert!(!status.message().contains("cust-42"));
    }
}
