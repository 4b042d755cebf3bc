//! gRPC handlers of AuditService: decode, convert to domain input, call the use cases,
//! convert back. Nothing else.

use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};
use vern_kit::context::CallContext;
use vern_kit::error::{ApiError, Violations};
use vern_kit::page;
use vern_kit::time::Bounds;
use vern_proto::audit::v1 as pb;

use crate::chain::{Checkpoint, FailureKind};
use crate::domain::{EventFilter, EventInput, ExportItem, Outcome, StoredEvent, Verification};
use crate::service::AuditLog;

/// Page-token list name of QueryEvents.
const EVENTS_LIST: &str = "audit_events";
/// Page-token list name of ListCheckpoints.
const CHECKPOINTS_LIST: &str = "audit_checkpoints";

/// The AuditService implementation.
#[derive(Clone, Debug)]
pub struct AuditApi {
    log: AuditLog,
}

impl AuditApi {
    /// Handlers over `log`.
    pub fn new(log: AuditLog) -> Self {
        Self { log }
    }

    /// The use cases.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }
}

fn outcome(v: i32) -> Option<Outcome> {
    match pb::Outcome::try_from(v).ok()? {
        pb::Outcome::Success => Some(Outcome::Success),
        pb::Outcome::Denied => Some(Outcome::Denied),
        pb::Outcome::Failed => Some(Outcome::Failed),
        pb::Outcome::Unspecified => None,
    }
}

fn outcome_pb(s: &str) -> pb::Outcome {
    match Outcome::parse(s) {
        Some(Outcome::Success) => pb::Outcome::Success,
        Some(Outcome::Denied) => pb::Outcome::Denied,
        Some(Outcome::Failed) => pb::Outcome::Failed,
        None => pb::Outcome::Unspecified,
    }
}

fn failure_pb(k: FailureKind) -> pb::ChainFailure {
    match k {
        FailureKind::HashMismatch => pb::ChainFailure::HashMismatch,
        FailureKind::LinkMismatch => pb::ChainFailure::LinkMismatch,
        FailureKind::SeqGap => pb::ChainFailure::SeqGap,
        FailureKind::CheckpointMismatch => pb::ChainFailure::CheckpointMismatch,
        FailureKind::BadSignature => pb::ChainFailure::BadSignature,
        FailureKind::UnknownKey => pb::ChainFailure::UnknownKey,
    }
}

fn timestamp(micros: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    })
}

fn micros(field: &str, t: &prost_types::Timestamp) -> Result<i64, Status> {
    vern_kit::time::check(field, t, Bounds::Protobuf, vern_kit::time::now())
        .map(|t| t.timestamp_micros())
        .map_err(|v| ApiError::InvalidArgument(vec![v]).into())
}

fn input(e: pb::AuditEvent) -> EventInput {
    let actor = e.actor.unwrap_or_default();
    EventInput {
        event_id: e.event_id,
        tenant_id: e.tenant_id,
        actor_sub: actor.sub,
        actor_roles: actor.roles,
        actor_client: actor.client,
        action: e.action,
        service: e.service,
        subject_id: e.subject_id,
        resource_type: e.resource_type,
        resource_id: e.resource_id,
        outcome: outcome(e.outcome),
        status_code: e.status_code,
        changed_fields: e.changed_fields,
        request_id: e.request_id,
        trace_id: e.trace_id,
        occur_time: e
            .occur_time
            .as_ref()
            .and_then(vern_kit::time::from_timestamp),
        detail: e.detail,
    }
}

/// A stored event as the API returns it.
pub fn event_pb(s: StoredEvent) -> pb::AuditEvent {
    let e = s.chained.event;
    pb::AuditEvent {
        outcome: outcome_pb(&e.outcome) as i32,
        event_id: e.event_id,
        tenant_id: e.tenant_id,
        seq: e.seq,
        actor: Some(pb::Actor {
            sub: e.actor_sub,
            roles: e.actor_roles,
            client: e.actor_client,
        }),
        action: e.action,
        service: e.service,
        subject_id: e.subject_id,
        resource_type: e.resource_type,
        resource_id: e.resource_id,
        status_code: e.status_code,
        changed_fields: e.changed_fields,
        request_id: e.request_id,
        trace_id: e.trace_id,
        occur_time: timestamp(e.occur_micros),
        detail: e.detail,
        prev_hash: s.chained.prev_hash.to_vec(),
        hash: s.chained.hash.to_vec(),
        append_time: timestamp(s.append_micros),
    }
}

/// A checkpoint as the API returns it.
pub fn checkpoint_pb(c: Checkpoint) -> pb::Checkpoint {
    pb::Checkpoint {
        tenant_id: c.tenant_id,
        seq: c.seq,
        head_hash: c.head_hash.to_vec(),
        checkpoint_time: timestamp(c.checkpoint_micros),
        signature: c.signature.to_vec(),
        key_id: c.key_id,
    }
}

/// A verification as the API returns it.
pub fn verification_pb(v: Verification) -> pb::VerifyChainResponse {
    pb::VerifyChainResponse {
        ok: v.ok(),
        first_bad_seq: v.first_bad_seq(),
        failure: v.kind().map_or(pb::ChainFailure::Unspecified, failure_pb) as i32,
        head_hash: v.head_hash.to_vec(),
        checked: v.checked as i64,
        to_seq: v.to_seq,
        reason: v
            .failure
            .as_ref()
            .map(|f| f.reason.clone())
            .unwrap_or_default(),
        checkpoint: v.checkpoint.map(checkpoint_pb),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn seq_token(list: &str, token: &str) -> Result<Option<i64>, Status> {
    match page::decode_token(list, token)? {
        None => Ok(None),
        Some(k) => k
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::invalid("page_token", "is not a token this list issued").into()),
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn append_events(
        &self,
        req: Request<pb::AppendEventsRequest>,
    ) -> Result<Response<pb::AppendEventsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        vern_kit::validate::request_id(&r.request_id)
            .map_err(|v| Status::from(ApiError::InvalidArgument(vec![v])))?;
        // Event times are the services' clocks: a business time, checked here so the
        // violation says why (the domain only sees a missing time).
        let mut v = Violations::new();
        let now = vern_kit::time::now();
        for (i, e) in r.events.iter().enumerate() {
            if let Some(t) = &e.occur_time {
                v.check(vern_kit::time::check(
                    &format!("events[{i}].occur_time"),
                    t,
                    Bounds::Business,
                    now,
                ));
            }
        }
        v.finish()?;
        let out = self
            .log
            .append(&tenant, r.events.into_iter().map(input).collect())
            .await?;
        Ok(Response::new(pb::AppendEventsResponse {
            appended_count: out.appended as i32,
            duplicate_count: out.duplicates as i32,
            results: out
                .results
                .into_iter()
                .map(|r| pb::AppendResult {
                    event_id: r.event_id,
                    seq: r.seq,
                    duplicate: r.duplicate,
                })
                .collect(),
        }))
    }

    async fn get_event(
        &self,
        req: Request<pb::GetEventRequest>,
    ) -> Result<Response<pb::AuditEvent>, Status> {
        let ctx = CallContext::of(&req)?;
        let e = self
            .log
            .get_event(ctx.tenant()?, &req.get_ref().event_id)
            .await?;
        Ok(Response::new(event_pb(e)))
    }

    async fn query_events(
        &self,
        req: Request<pb::QueryEventsRequest>,
    ) -> Result<Response<pb::QueryEventsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let after = seq_token(EVENTS_LIST, &r.page_token)?.unwrap_or(0);
        let outcome_filter = match r.outcome {
            0 => None,
            v => Some(
                outcome(v).ok_or_else(|| ApiError::invalid("outcome", "is not a known value"))?,
            ),
        };
        let filter = EventFilter {
            subject_id: non_empty(r.subject_id),
            actor: non_empty(r.actor),
            action: non_empty(r.action),
            from_micros: r.from.as_ref().map(|t| micros("from", t)).transpose()?,
            to_micros: r.to.as_ref().map(|t| micros("to", t)).transpose()?,
            outcome: outcome_filter,
            resource_id: non_empty(r.resource_id),
        };
        let page = self.log.query(ctx.tenant()?, &filter, after, limit).await?;
        let last = page.items.last().map(|e| e.chained.event.seq.to_string());
        Ok(Response::new(pb::QueryEventsResponse {
            next_page_token: page::next_token(EVENTS_LIST, page.more, last.as_deref()),
            events: page.items.into_iter().map(event_pb).collect(),
        }))
    }

    async fn verify_chain(
        &self,
        req: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.get_ref();
        let v = self.log.verify(ctx.tenant()?, r.from_seq, r.to_seq).await?;
        Ok(Response::new(verification_pb(v)))
    }

    async fn get_checkpoint(
        &self,
        req: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let ctx = CallContext::of(&req)?;
        let c = self
            .log
            .checkpoint(ctx.tenant()?, req.get_ref().seq)
            .await?;
        Ok(Response::new(checkpoint_pb(c)))
    }

    async fn list_checkpoints(
        &self,
        req: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let before = seq_token(CHECKPOINTS_LIST, &r.page_token)?;
        let page = self
            .log
            .list_checkpoints(ctx.tenant()?, before, limit)
            .await?;
        let last = page.items.last().map(|c| c.seq.to_string());
        Ok(Response::new(pb::ListCheckpointsResponse {
            next_page_token: page::next_token(CHECKPOINTS_LIST, page.more, last.as_deref()),
            checkpoints: page.items.into_iter().map(checkpoint_pb).collect(),
        }))
    }

    async fn export_events(
        &self,
        req: Request<pb::ExportEventsRequest>,
    ) -> Result<Response<BoxStream<pb::ExportEventsResponse>>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let rx = self.log.export(tenant, r.from_seq, r.to_seq, r.follow)?;
        let stream = ReceiverStream::new(rx).map(|item| {
            use pb::export_events_response::Item;
            let item = match item.map_err(Status::from)? {
                ExportItem::Event(e) => Item::Event(event_pb(*e)),
                ExportItem::Checkpoint(c) => Item::Checkpoint(checkpoint_pb(c)),
            };
            Ok(pb::ExportEventsResponse { item: Some(item) })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
