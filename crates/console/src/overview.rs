//! The department overview's figures, each read through the gateway with the person's
//! own token by a cheap call of its own (counts, never lists): subjects by state,
//! consents given per purpose, open rights requests by status with the nearest
//! deadline, the last and next retention sweep, and the audit chain's latest signed
//! checkpoint. The calls go out together; a part the person's role may not see is
//! left out, and a part that fails says so without hiding the others.

use chrono::{DateTime, Utc};
use tonic::Code;
use vern_proto::audit::v1 as audit;
use vern_proto::consents::v1 as consents;
use vern_proto::retention::v1 as retention;
use vern_proto::rights::v1 as rights;
use vern_proto::subjects::v1 as subjects;

use crate::auth::SignedIn;

/// Subjects by state.
pub struct SubjectFigures {
    /// ACTIVE.
    pub active: i64,
    /// RESTRICTED.
    pub restricted: i64,
    /// ERASED.
    pub erased: i64,
}

/// One purpose's consents.
pub struct PurposeFigures {
    /// The purpose key.
    pub purpose: String,
    /// Given now.
    pub granted: i64,
    /// Withdrawn.
    pub withdrawn: i64,
}

/// One status's requests.
pub struct StatusFigures {
    /// The status's message id.
    pub status: &'static str,
    /// Its requests.
    pub count: i64,
    /// Their nearest deadline (a date), if any.
    pub nearest: Option<String>,
}

/// Rights requests.
pub struct RequestFigures {
    /// Open statuses with requests, in the order of their life.
    pub open: Vec<StatusFigures>,
    /// Open requests past their deadline.
    pub overdue: i64,
    /// The nearest deadline of an open request (a date), if any.
    pub nearest: Option<String>,
    /// Days to it (negative: overdue).
    pub nearest_days: Option<i64>,
    /// Closed requests (completed and refused).
    pub closed: i64,
}

/// Retention sweeps.
pub struct SweepFigures {
    /// The last sweep's start (a date and time, UTC) and its status's message id.
    pub last: Option<(String, &'static str)>,
    /// The next scheduled sweep (a date and time, UTC), if sweeps are scheduled.
    pub next: Option<String>,
}

/// The audit chain's latest signed checkpoint.
pub struct CheckpointFigures {
    /// The sequence number it covers.
    pub seq: i64,
    /// When it was made (a date and time, UTC).
    pub time: String,
    /// The signing key's id.
    pub key_id: String,
}

/// Every figure the person may see, and the message ids of the parts that failed.
#[derive(Default)]
pub struct Figures {
    /// Subjects by state.
    pub subjects: Option<SubjectFigures>,
    /// Consents per purpose.
    pub consents: Option<Vec<PurposeFigures>>,
    /// Rights requests.
    pub requests: Option<RequestFigures>,
    /// Retention sweeps.
    pub sweeps: Option<SweepFigures>,
    /// The audit checkpoint (`None` also when the chain has none yet).
    pub checkpoint: Option<CheckpointFigures>,
    /// The chain has no checkpoint yet.
    pub no_checkpoint: bool,
    /// Message ids of the parts that could not be read (a refusal is not one).
    pub problems: Vec<&'static str>,
}

/// `msg` with the person's token, the department shown now (a token naming several
/// selects one with `x-vern-tenant`), and a deadline.
pub(crate) fn authed<T>(who: &SignedIn, msg: T) -> Option<tonic::Request<T>> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", who.token).parse().ok()?,
    );
    req.metadata_mut()
        .insert(vern_kit::context::TENANT_HEADER, who.tenant.parse().ok()?);
    req.set_timeout(std::time::Duration::from_secs(5));
    Some(req)
}

/// What a failed call means for the page: `None` for a refusal (the part is not the
/// person's to see), else the message id.
pub fn problem(code: Code) -> Option<&'static str> {
    match code {
        Code::PermissionDenied => None,
        Code::Unauthenticated => Some("api-denied"),
        Code::NotFound => Some("api-not-found"),
        Code::Unavailable | Code::DeadlineExceeded => Some("api-unavailable"),
        _ => Some("api-other"),
    }
}

fn date(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, 0))
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub(crate) fn status_message(s: rights::RequestStatus) -> &'static str {
    match s {
        rights::RequestStatus::Received => "request-status-received",
        rights::RequestStatus::Verified => "request-status-verified",
        rights::RequestStatus::InProgress => "request-status-in-progress",
        rights::RequestStatus::Completed => "request-status-completed",
        rights::RequestStatus::Rejected => "request-status-rejected",
        rights::RequestStatus::Unspecified => "api-other",
    }
}

fn sweep_message(s: retention::SweepStatus) -> &'static str {
    match s {
        retention::SweepStatus::Running => "sweep-running",
        retention::SweepStatus::Succeeded => "sweep-succeeded",
        retention::SweepStatus::Partial => "sweep-partial",
        retention::SweepStatus::Failed => "sweep-failed",
        retention::SweepStatus::SkippedHold => "sweep-skipped-hold",
        retention::SweepStatus::Interrupted => "sweep-interrupted",
        retention::SweepStatus::Unspecified => "api-other",
    }
}

/// Reads every figure through `channel` as `who`, the calls at once.
pub async fn read(
    channel: tonic::transport::Channel,
    who: &SignedIn,
    now: DateTime<Utc>,
) -> Figures {
    let s = async {
        let req = authed(who, subjects::GetSubjectStatsRequest {})?;
        Some(
            subjects::subject_service_client::SubjectServiceClient::new(channel.clone())
                .get_subject_stats(req)
                .await
                .map(tonic::Response::into_inner),
        )
    };
    let c = async {
        let req = authed(who, consents::GetConsentStatsRequest {})?;
        Some(
            consents::consent_service_client::ConsentServiceClient::new(channel.clone())
                .get_consent_stats(req)
                .await
                .map(tonic::Response::into_inner),
        )
    };
    let r = async {
        let req = authed(who, rights::GetRequestStatsRequest {})?;
        Some(
            rights::rights_service_client::RightsServiceClient::new(channel.clone())
                .get_request_stats(req)
                .await
                .map(tonic::Response::into_inner),
        )
    };
    let w = async {
        let req = authed(
            who,
            retention::ListSweepRunsRequest {
                page_size: 1,
                exclude_dry_runs: true,
                ..Default::default()
            },
        )?;
        Some(
            retention::retention_service_client::RetentionServiceClient::new(channel.clone())
                .list_sweep_runs(req)
                .await
                .map(tonic::Response::into_inner),
        )
    };
    let a = async {
        let req = authed(
            who,
            audit::ListCheckpointsRequest {
                page_size: 1,
                ..Default::default()
            },
        )?;
        Some(
            audit::audit_service_client::AuditServiceClient::new(channel.clone())
                .list_checkpoints(req)
                .await
                .map(tonic::Response::into_inner),
        )
    };
    let (s, c, r, w, a) = tokio::join!(s, c, r, w, a);
    let mut problems = vec![];
    let subjects = got(s, &mut problems).map(|s| SubjectFigures {
        active: s.active_count,
        restricted: s.restricted_count,
        erased: s.erased_count,
    });
    let consents = got(c, &mut problems).map(|c| {
        c.purposes
            .into_iter()
            .map(|p| PurposeFigures {
                purpose: p.purpose,
                granted: p.granted_count,
                withdrawn: p.withdrawn_count,
            })
            .collect()
    });
    let requests = got(r, &mut problems).map(|r| {
        let mut open = vec![];
        let mut closed = 0;
        for st in r.statuses {
            let status = rights::RequestStatus::try_from(st.status)
                .unwrap_or(rights::RequestStatus::Unspecified);
            match status {
                rights::RequestStatus::Completed | rights::RequestStatus::Rejected => {
                    closed += st.count
                }
                _ => open.push(StatusFigures {
                    status: status_message(status),
                    count: st.count,
                    nearest: date(st.nearest_deadline_time.as_ref()).map(day),
                }),
            }
        }
        let nearest = date(r.nearest_deadline_time.as_ref());
        RequestFigures {
            open,
            overdue: r.overdue_count,
            nearest: nearest.map(day),
            nearest_days: nearest.map(|n| (n - now).num_days()),
            closed,
        }
    });
    let sweeps = got(w, &mut problems).map(|w| SweepFigures {
        last: w.sweep_runs.first().and_then(|run| {
            let started = date(run.start_time.as_ref())?;
            let status = retention::SweepStatus::try_from(run.status)
                .unwrap_or(retention::SweepStatus::Unspecified);
            Some((minute(started), sweep_message(status)))
        }),
        next: date(w.next_scheduled_time.as_ref()).map(minute),
    });
    let checkpoints = got(a, &mut problems).map(|a| a.checkpoints);
    let no_checkpoint = checkpoints.as_ref().is_some_and(Vec::is_empty);
    let checkpoint = checkpoints
        .and_then(|c| c.into_iter().next())
        .map(|cp| CheckpointFigures {
            seq: cp.seq,
            time: date(cp.checkpoint_time.as_ref())
                .map(minute)
                .unwrap_or_default(),
            key_id: cp.key_id,
        });
    Figures {
        subjects,
        consents,
        requests,
        sweeps,
        checkpoint,
        no_checkpoint,
        problems,
    }
}

/// A part's answer, or `None` with its problem noted once in `problems` (a request
/// that could not be made, e.g. a token that is not valid metadata, counts as any
/// other failure; a refusal notes nothing).
fn got<T>(answer: Option<Result<T, tonic::Status>>, problems: &mut Vec<&'static str>) -> Option<T> {
    let e = match answer {
        Some(Ok(v)) => return Some(v),
        Some(Err(e)) => e,
        None => tonic::Status::internal(""),
    };
    if let Some(p) = problem(e.code())
        && !problems.contains(&p)
    {
        problems.push(p);
    }
    None
}
