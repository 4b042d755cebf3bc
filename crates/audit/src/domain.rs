//! Rules of the audit service: what a valid event is, how it is normalised before it is
//! chained, and the shapes the use cases return. No tonic or database types here.

use chrono::{DateTime, Utc};
use vern_kit::context::TenantId;
use vern_kit::error::{FieldViolation, Violations};
use vern_kit::validate::optional_text;

use crate::chain::{self, Checkpoint, FailureKind, Hash};

/// Most events one AppendEvents call may carry.
pub const MAX_BATCH: usize = 10_000;

/// How an audited operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// The caller was refused.
    Denied,
    /// It failed; the status code says how.
    Failed,
}

impl Outcome {
    /// The stored (and canonical) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Denied => "DENIED",
            Self::Failed => "FAILED",
        }
    }

    /// The outcome of a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SUCCESS" => Some(Self::Success),
            "DENIED" => Some(Self::Denied),
            "FAILED" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// An event as a service delivers it, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventInput {
    /// UUID assigned by the emitting service.
    pub event_id: String,
    /// Empty or the caller's tenant.
    pub tenant_id: String,
    /// Actor's token subject.
    pub actor_sub: String,
    /// Actor's roles.
    pub actor_roles: Vec<String>,
    /// Actor's client.
    pub actor_client: String,
    /// What was done.
    pub action: String,
    /// The emitting service.
    pub service: String,
    /// The data subject concerned, if any.
    pub subject_id: String,
    /// Kind of the target resource.
    pub resource_type: String,
    /// Id of the target resource.
    pub resource_id: String,
    /// How it ended; `None` when unset or unknown.
    pub outcome: Option<Outcome>,
    /// gRPC status code.
    pub status_code: i32,
    /// Names of changed fields.
    pub changed_fields: Vec<String>,
    /// Request id of the operation.
    pub request_id: String,
    /// W3C trace id.
    pub trace_id: String,
    /// When it happened; `None` when unset or out of range.
    pub occur_time: Option<DateTime<Utc>>,
    /// Non-personal detail.
    pub detail: String,
}

fn bounded(
    v: &mut Violations,
    field: String,
    value: &str,
    max: usize,
    required: bool,
) -> Option<()> {
    if required && value.trim().is_empty() {
        v.add(field, "is required");
        return None;
    }
    v.check(optional_text(&field, value, max))
}

fn names(v: &mut Violations, field: String, list: &[String], max_items: usize, max_len: usize) {
    if list.len() > max_items {
        v.add(
            field.clone(),
            format!("must have at most {max_items} entries"),
        );
        return;
    }
    for (i, n) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if n.trim().is_empty() {
            v.add(f, "must not be empty");
        } else {
            v.check(optional_text(&f, n, max_len));
        }
    }
}

fn sorted_unique(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list.dedup();
    list
}

impl EventInput {
    /// Validates the event at `events[index]` for `tenant`, recording every bad field
    /// (by name, never by value) in `v`, and returns its normalised chain content (seq
    /// still 0): lower-case UUID, microsecond time, sorted and de-duplicated lists.
    pub fn validate(self, index: usize, tenant: &TenantId) -> Result<chain::Event, Violations> {
        let f = |name: &str| format!("events[{index}].{name}");
        let mut violations = Violations::new();
        let v = &mut violations;
        let event_id = match uuid::Uuid::parse_str(&self.event_id) {
            Ok(u) => Some(u.hyphenated().to_string()),
            Err(_) => {
                v.add(f("event_id"), "must be a UUID");
                None
            }
        };
        if !self.tenant_id.is_empty() && self.tenant_id != tenant.as_str() {
            v.add(f("tenant_id"), "must be empty or the caller's tenant");
        }
        bounded(v, f("actor.sub"), &self.actor_sub, 256, false);
        names(v, f("actor.roles"), &self.actor_roles, 16, 64);
        bounded(v, f("actor.client"), &self.actor_client, 256, false);
        bounded(v, f("action"), &self.action, 256, true);
        bounded(v, f("service"), &self.service, 64, true);
        bounded(v, f("subject_id"), &self.subject_id, 128, false);
        bounded(v, f("resource_type"), &self.resource_type, 64, false);
        bounded(v, f("resource_id"), &self.resource_id, 256, false);
        if self.outcome.is_none() {
            v.add(f("outcome"), "is required: SUCCESS, DENIED or FAILED");
        }
        if !(0..=16).contains(&self.status_code) {
            v.add(f("status_code"), "must be a gRPC status code (0-16)");
        }
        names(v, f("changed_fields"), &self.changed_fields, 200, 128);
        bounded(v, f("request_id"), &self.request_id, 128, false);
        bounded(v, f("trace_id"), &self.trace_id, 64, false);
        bounded(v, f("detail"), &self.detail, 2048, false);
        if self.occur_time.is_none() {
            v.add(f("occur_time"), "is required and must be a valid time");
        }
        let (Some(event_id), Some(occur_time), Some(outcome), true) = (
            event_id,
            self.occur_time,
            self.outcome,
            violations.is_empty(),
        ) else {
            return Err(violations);
        };
        Ok(chain::Event {
            tenant_id: tenant.as_str().to_owned(),
            seq: 0,
            event_id,
            occur_micros: occur_time.timestamp_micros(),
            actor_sub: self.actor_sub,
            actor_roles: sorted_unique(self.actor_roles),
            actor_client: self.actor_client,
            action: self.action,
            service: self.service,
            subject_id: self.subject_id,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            outcome: outcome.as_str().to_owned(),
            status_code: self.status_code,
            changed_fields: sorted_unique(self.changed_fields),
            request_id: self.request_id,
            trace_id: self.trace_id,
            detail: self.detail,
        })
    }
}

/// Validates a whole batch: every bad field of every event is reported at once.
pub fn validate_batch(
    tenant: &TenantId,
    events: Vec<EventInput>,
) -> Result<Vec<chain::Event>, vern_kit::ApiError> {
    if events.len() > MAX_BATCH {
        return Err(vern_kit::ApiError::invalid(
            "events",
            format!("must have at most {MAX_BATCH} events"),
        ));
    }
    let mut v = Violations::new();
    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.into_iter().enumerate() {
        match e.validate(i, tenant) {
            Ok(ev) => out.push(ev),
            Err(own) => merge(&mut v, own),
        }
    }
    v.finish()?;
    Ok(out)
}

fn merge(into: &mut Violations, from: Violations) {
    if let Err(vern_kit::ApiError::InvalidArgument(list)) = from.finish() {
        for FieldViolation { field, description } in list {
            into.add(field, description);
        }
    }
}

/// An event as stored in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The chained content, prev_hash and hash.
    pub chained: chain::ChainedEvent,
    /// When the audit service chained it, microseconds since the epoch.
    pub append_micros: i64,
}

/// Where one appended event sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// The event id (normalised).
    pub event_id: String,
    /// Its seq in the tenant's chain.
    pub seq: i64,
    /// True when the event was already in the chain.
    pub duplicate: bool,
}

/// The answer to an append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendOutcome {
    /// One result per event, in request order.
    pub results: Vec<AppendResult>,
    /// Events newly appended.
    pub appended: usize,
    /// Events already in the chain.
    pub duplicates: usize,
    /// The checkpoint made by this append, if one was due.
    pub checkpoint: Option<Checkpoint>,
}

/// QueryEvents filters, ANDed; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events concerning this subject.
    pub subject_id: Option<String>,
    /// Only events by this actor (sub).
    pub actor: Option<String>,
    /// Only events with this action.
    pub action: Option<String>,
    /// Only events that occurred at or after this time (microseconds).
    pub from_micros: Option<i64>,
    /// Only events that occurred before this time (microseconds).
    pub to_micros: Option<i64>,
    /// Only events with this outcome.
    pub outcome: Option<Outcome>,
    /// Only events on this resource id.
    pub resource_id: Option<String>,
}

/// The result of VerifyChain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The first problem, if any.
    pub failure: Option<chain::Failure>,
    /// Hash of the last verified event.
    pub head_hash: Hash,
    /// Events checked.
    pub checked: u64,
    /// Last seq verified.
    pub to_seq: i64,
    /// The checkpoint the chain was checked against (or the one that failed).
    pub checkpoint: Option<Checkpoint>,
}

impl Verification {
    /// True when everything verified.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// The first bad seq, 0 when ok.
    pub fn first_bad_seq(&self) -> i64 {
        self.failure.as_ref().map_or(0, |f| f.seq)
    }

    /// The kind of failure, if any.
    pub fn kind(&self) -> Option<FailureKind> {
        self.failure.as_ref().map(|f| f.kind)
    }
}

/// One item of an export, in chain order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportItem {
    /// An event.
    Event(Box<StoredEvent>),
    /// A checkpoint, right after the event at its seq.
    Checkpoint(Checkpoint),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> EventInput {
        EventInput {
            event_id: "0192F0C1-7A2B-7C3D-8E4F-5A6B7C8D9E0F".into(),
            tenant_id: String::new(),
            actor_sub: "crm".into(),
            actor_roles: vec!["service".into(), "integration".into(), "service".into()],
            action: "CreateSubject".into(),
            service: "subjects".into(),
            outcome: Some(Outcome::Success),
            changed_fields: vec!["phone".into(), "email".into()],
            occur_time: DateTime::from_timestamp(1_767_225_600, 123_456_789),
            ..Default::default()
        }
    }

    #[test]
    fn valid_events_are_normalised() {
        let t = TenantId::new("kultur");
        let e = validate_batch(&t, vec![input()]).expect("valid").remove(0);
        assert_eq!(e.event_id, "0192f0c1-7a2b-7c3d-8e4f-5a6b7c8d9e0f");
        assert_eq!(e.tenant_id, "kultur");
        assert_eq!(e.actor_roles, ["integration", "service"]);
        assert_eq!(e.changed_fields, ["email", "phone"]);
        assert_eq!(e.occur_micros, 1_767_225_600_123_456, "truncated to micros");
        assert_eq!(e.outcome, "SUCCESS");
    }

    #[test]
    fn every_bad_field_is_reported_by_index_without_values() {
        let t = TenantId::new("kultur");
        let bad = EventInput {
            event_id: "not-a-uuid".into(),
            tenant_id: "other".into(),
            action: String::new(),
            service: "subjects".into(),
            outcome: None,
            status_code: 99,
            occur_time: None,
            changed_fields: vec![String::new()],
            detail: "ola@example.no\u{0}".into(),
            ..Default::default()
        };
        let Err(vern_kit::ApiError::InvalidArgument(list)) = validate_batch(&t, vec![input(), bad])
        else {
            panic!("invalid");
        };
        let fields: Vec<_> = list.iter().map(|v| v.field.as_str()).collect();
        for f in [
            "events[1].event_id",
            "events[1].tenant_id",
            "events[1].action",
            "events[1].outcome",
            "events[1].status_code",
            "events[1].changed_fields[0]",
            "events[1].detail",
            "events[1].occur_time",
        ] {
            assert!(fields.contains(&f), "{f} in {fields:?}");
        }
        assert!(list.iter().all(|v| !v.description.contains("ola@")));
    }
}
