//! The export file format of `vern audit export` and its offline verification
//! (`vern audit verify`), which reads the file only and runs [`crate::chain`].
//!
//! JSON lines, one object per line, in chain order:
//! - an event: every canonical field by name (`actor` as an object with `sub`,
//!   `roles`, `client`; `occur_time` in RFC 3339 UTC with microseconds; `outcome` as
//!   `SUCCESS`/`DENIED`/`FAILED`), plus `seq`, `prev_hash` and `hash` (hex) and
//!   `append_time` (not hashed);
//! - a checkpoint, right after the event at its seq:
//!   `{"checkpoint": {"tenant_id", "seq", "head_hash", "checkpoint_time", "key_id",
//!   "signature"}}` (hashes and signature hex).

use std::io::BufRead;

use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use vern_proto::audit::v1 as pb;

use crate::chain::{ChainedEvent, Checkpoint, Event, Start, Summary, Verifier};

/// The actor of an exported event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorLine {
    /// Token subject.
    pub sub: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Client.
    pub client: String,
}

/// One exported event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    /// Position in the chain.
    pub seq: i64,
    /// Tenant.
    pub tenant_id: String,
    /// Event id.
    pub event_id: String,
    /// RFC 3339, UTC, microseconds.
    pub occur_time: String,
    /// Who.
    pub actor: ActorLine,
    /// What.
    pub action: String,
    /// Emitting service.
    pub service: String,
    /// Subject concerned.
    pub subject_id: String,
    /// Target kind.
    pub resource_type: String,
    /// Target id.
    pub resource_id: String,
    /// `SUCCESS`, `DENIED` or `FAILED`.
    pub outcome: String,
    /// gRPC status code.
    pub status_code: i32,
    /// Changed field names.
    pub changed_fields: Vec<String>,
    /// Request id.
    pub request_id: String,
    /// Trace id.
    pub trace_id: String,
    /// Detail.
    pub detail: String,
    /// When the audit service chained it (not hashed).
    pub append_time: String,
    /// Hash of the previous event, hex.
    pub prev_hash: String,
    /// This event's hash, hex.
    pub hash: String,
}

/// The body of an exported checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    /// Tenant.
    pub tenant_id: String,
    /// Seq of the head event.
    pub seq: i64,
    /// Hash of the head event, hex.
    pub head_hash: String,
    /// RFC 3339, UTC, microseconds.
    pub checkpoint_time: String,
    /// Signing key id.
    pub key_id: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

/// An exported checkpoint line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointLine {
    /// The checkpoint.
    pub checkpoint: CheckpointBody,
}

/// Microseconds since the epoch as RFC 3339 UTC with six fraction digits.
pub fn rfc3339_micros(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_default()
}

fn parse_micros(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

fn pb_micros(t: Option<&prost_types::Timestamp>) -> i64 {
    t.and_then(vern_kit::time::from_timestamp)
        .map_or(0, |t| t.timestamp_micros())
}

/// The outcome label of an export line, by explicit arms: the labels stay as they are
/// when the protobuf value names change.
fn outcome_name(v: i32) -> String {
    let label = match pb::Outcome::try_from(v) {
        Ok(pb::Outcome::Unspecified) | Err(_) => "UNSPECIFIED",
        Ok(pb::Outcome::Success) => "SUCCESS",
        Ok(pb::Outcome::Denied) => "DENIED",
        Ok(pb::Outcome::Failed) => "FAILED",
    };
    label.to_owned()
}

impl EventLine {
    /// The export line of an event received from ExportEvents.
    pub fn from_pb(e: &pb::AuditEvent) -> Self {
        let actor = e.actor.clone().unwrap_or_default();
        Self {
            seq: e.seq,
            tenant_id: e.tenant_id.clone(),
            event_id: e.event_id.clone(),
            occur_time: rfc3339_micros(pb_micros(e.occur_time.as_ref())),
            actor: ActorLine {
                sub: actor.sub,
                roles: actor.roles,
                client: actor.client,
            },
            action: e.action.clone(),
            service: e.service.clone(),
            subject_id: e.subject_id.clone(),
            resource_type: e.resource_type.clone(),
            resource_id: e.resource_id.clone(),
            outcome: outcome_name(e.outcome),
            status_code: e.status_code,
            changed_fields: e.changed_fields.clone(),
            request_id: e.request_id.clone(),
            trace_id: e.trace_id.clone(),
            detail: e.detail.clone(),
            append_time: rfc3339_micros(pb_micros(e.append_time.as_ref())),
            prev_hash: hex::encode(&e.prev_hash),
            hash: hex::encode(&e.hash),
        }
    }

    /// The chained event this line states; `None` when a hash or time does not parse.
    pub fn to_chained(self) -> Option<ChainedEvent> {
        Some(ChainedEvent {
            prev_hash: hex::decode(&self.prev_hash).ok()?.try_into().ok()?,
            hash: hex::decode(&self.hash).ok()?.try_into().ok()?,
            event: Event {
                occur_micros: parse_micros(&self.occur_time)?,
                tenant_id: self.tenant_id,
                seq: self.seq,
                event_id: self.event_id,
                actor_sub: self.actor.sub,
                actor_roles: self.actor.roles,
                actor_client: self.actor.client,
                action: self.action,
                service: self.service,
                subject_id: self.subject_id,
                resource_type: self.resource_type,
                resource_id: self.resource_id,
                outcome: self.outcome,
                status_code: self.status_code,
                changed_fields: self.changed_fields,
                request_id: self.request_id,
                trace_id: self.trace_id,
                detail: self.detail,
            },
        })
    }
}

impl CheckpointLine {
    /// The export line of a checkpoint received from ExportEvents.
    pub fn from_pb(c: &pb::Checkpoint) -> Self {
        Self {
            checkpoint: CheckpointBody {
                tenant_id: c.tenant_id.clone(),
                seq: c.seq,
                head_hash: hex::encode(&c.head_hash),
                checkpoint_time: rfc3339_micros(pb_micros(c.checkpoint_time.as_ref())),
                key_id: c.key_id.clone(),
                signature: hex::encode(&c.signature),
            },
        }
    }

    /// The export line of a checkpoint.
    pub fn from_checkpoint(c: &Checkpoint) -> Self {
        Self {
            checkpoint: CheckpointBody {
                tenant_id: c.tenant_id.clone(),
                seq: c.seq,
                head_hash: hex::encode(c.head_hash),
                checkpoint_time: rfc3339_micros(c.checkpoint_micros),
                key_id: c.key_id.clone(),
                signature: hex::encode(c.signature),
            },
        }
    }

    /// The checkpoint this line states; `None` when a field does not parse.
    pub fn to_checkpoint(self) -> Option<Checkpoint> {
        let c = self.checkpoint;
        Some(Checkpoint {
            head_hash: hex::decode(&c.head_hash).ok()?.try_into().ok()?,
            signature: hex::decode(&c.signature).ok()?.try_into().ok()?,
            checkpoint_micros: parse_micros(&c.checkpoint_time)?,
            tenant_id: c.tenant_id,
            seq: c.seq,
            key_id: c.key_id,
        })
    }
}

/// What an offline verification found.
#[derive(Debug, Clone)]
pub struct OfflineReport {
    /// The verifier's summary (first failure, counts, head).
    pub summary: Summary,
    /// The tenant of the export, if any event or checkpoint named one.
    pub tenant_id: Option<String>,
    /// Event lines read.
    pub event_lines: u64,
    /// Checkpoint lines read.
    pub checkpoint_lines: u64,
}

/// Verifies an export read from `reader` with the public `keys` (one key, or a
/// [`crate::chain::KeySet`] of the current and retired ones; each checkpoint by its key
/// id): recomputes every hash, checks every link and every checkpoint's signature and
/// head hash. Stops at the first failure. I/O errors are returned; anything wrong with
/// the content is a failure in the report.
pub fn verify_export<R: BufRead>(
    reader: R,
    keys: impl Into<crate::chain::KeySet>,
) -> std::io::Result<OfflineReport> {
    let mut v = Verifier::new(keys, None, Start::FirstEvent);
    let (mut events, mut checkpoints) = (0, 0);
    let mut tenant_id = None;
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let n = i + 1;
        let ok = if text.starts_with("{\"checkpoint\"") {
            checkpoints += 1;
            match serde_json::from_str::<CheckpointLine>(text)
                .ok()
                .and_then(CheckpointLine::to_checkpoint)
            {
                Some(cp) => {
                    tenant_id.get_or_insert_with(|| cp.tenant_id.clone());
                    v.checkpoint(cp)
                }
                None => {
                    v.unreadable(&format!("the checkpoint on line {n}"));
                    false
                }
            }
        } else {
            events += 1;
            match serde_json::from_str::<EventLine>(text)
                .ok()
                .and_then(EventLine::to_chained)
            {
                Some(e) => {
                    tenant_id.get_or_insert_with(|| e.event.tenant_id.clone());
                    v.event(&e)
                }
                None => {
                    v.unreadable(&format!("the event on line {n}"));
                    false
                }
            }
        };
        if !ok {
            break;
        }
    }
    Ok(OfflineReport {
        summary: v.finish(),
        tenant_id,
        event_lines: events,
        checkpoint_lines: checkpoints,
    })
}
