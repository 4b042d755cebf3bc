//! The one error model of vern's APIs, mapped to `tonic::Status` in one place.
//!
//! Each service crate has its own `thiserror` enum and converts it into [`ApiError`];
//! this module turns that into a status with `google.rpc` details. Messages never
//! carry personal data or database text: internal causes are logged by kind and the
//! caller gets a generic message.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One bad input field: which field, and why (never the field's value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Field path in the request, e.g. `org_number` or `tenant.dpo_email`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field` described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// A rule the request conflicts with (google.rpc.PreconditionFailure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreconditionViolation {
    /// Kind of rule, e.g. `TENANT_SUSPENDED`.
    pub kind: String,
    /// What the rule applies to, e.g. `tenants/acme`.
    pub subject: String,
    /// Human-readable explanation.
    pub description: String,
}

/// Error categories every service maps its own errors to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input; nothing was written.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The resource does not exist for the caller's tenant.
    #[error("{resource} not found")]
    NotFound {
        /// Resource kind, e.g. "tenant".
        resource: &'static str,
    },
    /// A resource with the same identity already exists.
    #[error("{resource} already exists")]
    AlreadyExists {
        /// Resource kind, e.g. "tenant".
        resource: &'static str,
    },
    /// The request conflicts with a rule or the resource's state.
    #[error("failed precondition: {}", .0.iter().map(|v| v.description.as_str()).collect::<Vec<_>>().join("; "))]
    FailedPrecondition(Vec<PreconditionViolation>),
    /// No valid credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Credentials valid, action not allowed.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A concurrent change won; the caller may retry.
    #[error("aborted: {0}")]
    Aborted(&'static str),
    /// A limit was hit.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A dependency (e.g. the database) is unavailable; retry later.
    #[error("service unavailable")]
    Unavailable,
    /// A key this call needs does not work here (named, never its value): nothing was
    /// read or written; an operator must fix the configuration.
    #[error("service unavailable: {0}")]
    KeyUnusable(String),
    /// Not built yet.
    #[error("not implemented")]
    Unimplemented,
    /// A bug or an unexpected failure; the cause is logged, not returned.
    #[error("internal error")]
    Internal(&'static str),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// Bad input in one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// A single precondition failure.
    pub fn precondition(
        kind: impl Into<String>,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self::FailedPrecondition(vec![PreconditionViolation {
            kind: kind.into(),
            subject: subject.into(),
            description: description.into(),
        }])
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Aborted(_) => Code::Aborted,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unavailable | Self::KeyUnusable(_) => Code::Unavailable,
            Self::Unimplemented => Code::Unimplemented,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let code = err.code();
        let message = err.to_string();
        match err {
            ApiError::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(code, message, details)
            }
            ApiError::FailedPrecondition(violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_precondition_failure_violation(v.kind, v.subject, v.description);
                }
                Status::with_error_details(code, message, details)
            }
            ApiError::Internal(kind) => {
                tracing::error!(kind, "internal error");
                Status::new(code, message)
            }
            _ => Status::new(code, message),
        }
    }
}

/// Collects field violations so a request reports every bad field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records the violation of a `Result`, keeping the value if it is fine.
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(v) => {
                self.0.push(v);
                None
            }
        }
    }

    /// `Ok(())` when there were none, otherwise INVALID_ARGUMENT with all of them.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }

    /// Whether no violation was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The violations recorded (e.g. to report them per row of a batch).
    pub fn into_violations(self) -> Vec<FieldViolation> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_field_violations() {
        let status: Status = ApiError::invalid("org_number", "check digit does not match").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "org_number");
    }

    #[test]
    fn internal_hides_cause() {
        let status: Status = ApiError::Internal("db").into();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn violations_collect_all() {
        let mut v = Violations::new();
        v.add("a", "bad");
        v.add("b", "bad");
        match v.finish() {
            Err(ApiError::InvalidArgument(list)) => assert_eq!(list.len(), 2),
            other => panic!("unexpected {other:?}"),
        }
    }
}
