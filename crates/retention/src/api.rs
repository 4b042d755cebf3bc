//! gRPC handlers of RetentionService: decode, convert to domain input, call the use
//! cases, convert back. Nothing else.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};
use vern_kit::context::{CallContext, TenantId};
use vern_kit::error::{ApiError, FieldViolation, Violations};
use vern_kit::idempotency::Key;
use vern_kit::page;
use vern_kit::time::{Bounds, to_timestamp};
use vern_proto::retention::v1 as pb;

use crate::domain::{
    self, Action, Anchor, DataCategory, Disposition, Hold, HoldInput, HoldScope, HoldStatus,
    Policy, PolicyInput, SweepStatus, SweepTrigger,
};
use crate::remote::{category_of_pb, category_pb};
use crate::service::{Evaluation, Retention};
use crate::store::PolicyFilter;
use crate::sweep::{SchedulerHandle, Stop, SweepRequest};

/// The RetentionService implementation.
#[derive(Clone, Debug)]
pub struct RetentionApi {
    retention: Retention,
    /// Keeps the scheduler running while the service lives; dropping the last clone
    /// stops it.
    scheduler: Option<Arc<SchedulerHandle>>,
    /// Cuts RunSweep's sweeps off at shutdown (they are recorded INTERRUPTED).
    stop: Option<Stop>,
}

impl RetentionApi {
    /// Handlers over `retention`, owning the scheduler's handle (if any); `stop` is
    /// the server's shutdown signal.
    pub fn new(
        retention: Retention,
        scheduler: Option<Arc<SchedulerHandle>>,
        stop: Option<Stop>,
    ) -> Self {
        Self {
            retention,
            scheduler,
            stop,
        }
    }
}

fn key<M: Message>(
    tenant: &TenantId,
    request_id: &str,
    method: &'static str,
    msg: &M,
) -> Result<Option<Key>, Status> {
    vern_kit::validate::request_id(request_id)
        .map_err(|v| Status::from(ApiError::InvalidArgument(vec![v])))?;
    Ok(Key::new(
        Some(tenant.as_str()),
        request_id,
        method,
        &msg.encode_to_vec(),
    ))
}

fn invalid(v: FieldViolation) -> Status {
    ApiError::InvalidArgument(vec![v]).into()
}

// Protobuf ↔ domain by explicit arms (vern_kit::proto_enum): stored names never follow
// the protobuf value names.
vern_kit::proto_enum!(anchor_to_pb, anchor_of: Anchor => pb::RetentionAnchor {
    CollectedAt, EndOfFinancialYear, EndOfRelationship, ConsentWithdrawn
});
vern_kit::proto_enum!(action_to_pb, action_of: Action => pb::RetentionAction {
    Delete, Anonymise
});

fn category(field: &str, v: i32) -> Result<Option<DataCategory>, FieldViolation> {
    if v == 0 {
        return Ok(None);
    }
    vern_proto::common::v1::DataCategory::try_from(v)
        .ok()
        .and_then(category_of_pb)
        .map(Some)
        .ok_or_else(|| FieldViolation::new(field, "is not a known value"))
}

fn anchor(field: &str, v: i32) -> Result<Option<Anchor>, FieldViolation> {
    match pb::RetentionAnchor::try_from(v) {
        Ok(pb::RetentionAnchor::Unspecified) => Ok(None),
        Ok(a) => Ok(anchor_of(a)),
        Err(_) => Err(FieldViolation::new(field, "is not a known value")),
    }
}

fn anchor_pb(a: Anchor) -> i32 {
    anchor_to_pb(a) as i32
}

fn action(field: &str, v: i32) -> Result<Option<Action>, FieldViolation> {
    match pb::RetentionAction::try_from(v) {
        Ok(pb::RetentionAction::Unspecified) => Ok(None),
        Ok(a) => Ok(action_of(a)),
        Err(_) => Err(FieldViolation::new(field, "is not a known value")),
    }
}

fn action_pb(a: Option<Action>) -> i32 {
    a.map_or(0, |a| action_to_pb(a) as i32)
}

fn policy_pb(p: Policy) -> pb::RetentionPolicy {
    let s = p.spec;
    pb::RetentionPolicy {
        tenant_id: p.tenant_id,
        policy_id: p.policy_id,
        name: s.name,
        category: category_pb(s.category),
        purpose: s.purpose.unwrap_or_default(),
        field: s.field.unwrap_or_default(),
        period: s.period.to_string(),
        anchor: anchor_pb(s.anchor),
        action: action_pb(Some(s.action)),
        legal_reference: s.legal_reference,
        legal_duty: s.legal_duty,
        create_time: Some(to_timestamp(p.create_time)),
        update_time: Some(to_timestamp(p.update_time)),
    }
}

fn hold_pb(h: Hold) -> pb::LegalHold {
    let status = match h.status(vern_kit::time::now()) {
        HoldStatus::Active => pb::HoldStatus::Active,
        HoldStatus::Released => pb::HoldStatus::Released,
        HoldStatus::Expired => pb::HoldStatus::Expired,
    };
    pb::LegalHold {
        tenant_id: h.tenant_id,
        hold_id: h.hold_id,
        scope: match h.scope {
            HoldScope::Subject => pb::HoldScope::Subject as i32,
            HoldScope::Tenant => pb::HoldScope::Tenant as i32,
        },
        subject_id: h.subject_id.unwrap_or_default(),
        reason: h.reason,
        end_time: h.end_time.map(to_timestamp),
        status: status as i32,
        placed_by: h.placed_by,
        create_time: Some(to_timestamp(h.create_time)),
        release_time: h.release_time.map(to_timestamp),
        released_by: h.released_by,
        release_reason: h.release_reason,
    }
}

fn run_pb(r: domain::SweepRun) -> pb::SweepRun {
    pb::SweepRun {
        tenant_id: r.tenant_id,
        sweep_run_id: r.sweep_run_id,
        dry_run: r.dry_run,
        trigger: match r.trigger {
            SweepTrigger::Scheduled => pb::SweepTrigger::Scheduled as i32,
            SweepTrigger::OnDemand => pb::SweepTrigger::OnDemand as i32,
        },
        status: match r.status {
            SweepStatus::Running => pb::SweepStatus::Running,
            SweepStatus::Succeeded => pb::SweepStatus::Succeeded,
            SweepStatus::Partial => pb::SweepStatus::Partial,
            SweepStatus::Failed => pb::SweepStatus::Failed,
            SweepStatus::SkippedHold => pb::SweepStatus::SkippedHold,
            SweepStatus::Interrupted => pb::SweepStatus::Interrupted,
        } as i32,
        requested_by: r.requested_by,
        start_time: Some(to_timestamp(r.start_time)),
        end_time: r.end_time.map(to_timestamp),
        policy_results: r
            .policy_results
            .into_iter()
            .map(|p| pb::PolicySweepResult {
                policy_id: p.policy_id,
                legal_reference: p.legal_reference,
                action: action_pb(p.action),
                matched_count: p.matched_count,
                deleted_count: p.deleted_count,
                anonymised_count: p.anonymised_count,
                kept_count: p.kept_count,
                error: p.error,
            })
            .collect(),
        items: r
            .items
            .into_iter()
            .map(|i| pb::SweepItem {
                policy_id: i.policy_id,
                subject_id: i.subject_id,
                record_id: i.record_id,
                category: category_pb(i.category),
                field: i.field,
                purposes: i.purposes,
                collected_at: Some(to_timestamp(i.collected_at)),
                expire_time: i.expire_time.map(to_timestamp),
                action: action_pb(Some(i.action)),
                reason: i.reason,
            })
            .collect(),
        items_truncated: r.items_truncated,
        held_subject_count: r.held_subject_count,
        error: r.error,
    }
}

fn evaluation_pb(e: Evaluation) -> pb::EvaluateResponse {
    pb::EvaluateResponse {
        subject_id: e.subject_id,
        decisions: e
            .decisions
            .into_iter()
            .map(|(r, d)| pb::RetentionDecision {
                record_id: r.record_id,
                category: category_pb(r.category),
                field: r.field,
                purposes: r.purposes,
                collected_at: Some(to_timestamp(r.collected_at)),
                disposition: match d.disposition {
                    Disposition::MustKeep => pb::Disposition::MustKeep,
                    Disposition::Held => pb::Disposition::Held,
                    Disposition::MayErase => pb::Disposition::MayErase,
                    Disposition::Expired => pb::Disposition::Expired,
                } as i32,
                retain_until_time: d.retain_until.map(to_timestamp),
                policy_id: d.policy_id.unwrap_or_default(),
                legal_reference: d.legal_reference,
                hold_id: d.hold_id.unwrap_or_default(),
                action: action_pb(d.action),
                reason: d.reason,
            })
            .collect(),
        holds: e.holds.into_iter().map(hold_pb).collect(),
        any_kept: e.any_kept,
        retain_until_time: e.retain_until.map(to_timestamp),
        evaluate_time: Some(to_timestamp(e.evaluate_time)),
    }
}

/// The enum fields of a policy, decoded.
type PolicyEnums = (Option<DataCategory>, Option<Anchor>, Option<Action>);

/// Decodes policy fields; with a mask, only the named enum fields are decoded (others
/// may be unset).
fn policy_input(
    prefix: &str,
    category_v: i32,
    anchor_v: i32,
    action_v: i32,
    mask: Option<&[String]>,
) -> Result<PolicyEnums, Status> {
    let wants = |f: &str| mask.is_none_or(|m| m.iter().any(|x| x == f));
    let f = |n: &str| format!("{prefix}{n}");
    let mut v = Violations::new();
    let c = if wants("category") {
        v.check(category(&f("category"), category_v)).flatten()
    } else {
        None
    };
    let an = if wants("anchor") {
        v.check(anchor(&f("anchor"), anchor_v)).flatten()
    } else {
        None
    };
    let ac = if wants("action") {
        v.check(action(&f("action"), action_v)).flatten()
    } else {
        None
    };
    v.finish().map_err(Status::from)?;
    Ok((c, an, ac))
}

fn time_field(
    field: &str,
    t: Option<&prost_types::Timestamp>,
    bounds: Bounds,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    vern_kit::time::field(field, t, bounds).map_err(invalid)
}

#[tonic::async_trait]
impl pb::retention_service_server::RetentionService for RetentionApi {
    async fn create_policy(
        &self,
        req: Request<pb::CreatePolicyRequest>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let idem = key(&tenant, &r.request_id, "CreatePolicy", &r)?;
        let (category, anchor, action) = policy_input("", r.category, r.anchor, r.action, None)?;
        let input = PolicyInput {
            name: r.name,
            category,
            purpose: r.purpose,
            field: r.field,
            period: r.period,
            anchor,
            action,
            legal_reference: r.legal_reference,
            legal_duty: r.legal_duty,
        };
        let p = self.retention.create_policy(&tenant, input, idem).await?;
        Ok(Response::new(policy_pb(p)))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let ctx = CallContext::of(&req)?;
        let p = self
            .retention
            .get_policy(ctx.tenant()?, &req.get_ref().policy_id)
            .await?;
        Ok(Response::new(policy_pb(p)))
    }

    async fn list_policies(
        &self,
        req: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let after = page::decode_token("policies", &r.page_token)?;
        let filter = PolicyFilter {
            category: category("category", r.category).map_err(invalid)?,
            purpose: (!r.purpose.is_empty()).then_some(r.purpose),
        };
        let page = self
            .retention
            .list_policies(ctx.tenant()?, after.as_deref(), limit, filter)
            .await?;
        let next_page_token = page::next_token(
            "policies",
            page.more,
            page.items.last().map(|p| p.policy_id.as_str()),
        );
        Ok(Response::new(pb::ListPoliciesResponse {
            policies: page.items.into_iter().map(policy_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_policy(
        &self,
        req: Request<pb::UpdatePolicyRequest>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let idem = key(&tenant, &r.request_id, "UpdatePolicy", &r)?;
        let p = r
            .policy
            .ok_or_else(|| invalid(FieldViolation::new("policy", "is required")))?;
        vern_kit::validate::own_tenant("policy.tenant_id", &p.tenant_id, tenant.as_str())
            .map_err(invalid)?;
        let mask = r.update_mask.map(|m| m.paths).unwrap_or_default();
        vern_kit::audit::changed_fields(&mask);
        vern_kit::audit::resource("policy", &p.policy_id);
        let (category, anchor, action) =
            policy_input("policy.", p.category, p.anchor, p.action, Some(&mask))?;
        let changes = PolicyInput {
            name: p.name,
            category,
            purpose: p.purpose,
            field: p.field,
            period: p.period,
            anchor,
            action,
            legal_reference: p.legal_reference,
            legal_duty: p.legal_duty,
        };
        let p = self
            .retention
            .update_policy(&tenant, &p.policy_id, &mask, changes, idem)
            .await?;
        Ok(Response::new(policy_pb(p)))
    }

    async fn delete_policy(
        &self,
        req: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let idem = key(&tenant, &r.request_id, "DeletePolicy", &r)?;
        self.retention
            .delete_policy(&tenant, &r.policy_id, idem)
            .await?;
        Ok(Response::new(()))
    }

    async fn place_hold(
        &self,
        req: Request<pb::PlaceHoldRequest>,
    ) -> Result<Response<pb::LegalHold>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let idem = key(&tenant, &r.request_id, "PlaceHold", &r)?;
        let scope = match pb::HoldScope::try_from(r.scope) {
            Ok(pb::HoldScope::Unspecified) => None,
            Ok(pb::HoldScope::Subject) => Some(HoldScope::Subject),
            Ok(pb::HoldScope::Tenant) => Some(HoldScope::Tenant),
            Err(_) => {
                return Err(invalid(FieldViolation::new(
                    "scope",
                    "is not a known value",
                )));
            }
        };
        let input = HoldInput {
            scope,
            subject_id: r.subject_id,
            reason: r.reason,
            end_time: time_field("end_time", r.end_time.as_ref(), Bounds::Business)?,
        };
        let h = self
            .retention
            .place_hold(&tenant, input, &ctx.sub, idem)
            .await?;
        Ok(Response::new(hold_pb(h)))
    }

    async fn get_hold(
        &self,
        req: Request<pb::GetHoldRequest>,
    ) -> Result<Response<pb::LegalHold>, Status> {
        let ctx = CallContext::of(&req)?;
        let h = self
            .retention
            .get_hold(ctx.tenant()?, &req.get_ref().hold_id)
            .await?;
        Ok(Response::new(hold_pb(h)))
    }

    async fn release_hold(
        &self,
        req: Request<pb::ReleaseHoldRequest>,
    ) -> Result<Response<pb::LegalHold>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let idem = key(&tenant, &r.request_id, "ReleaseHold", &r)?;
        let h = self
            .retention
            .release_hold(&tenant, &r.hold_id, &r.reason, &ctx.sub, idem)
            .await?;
        Ok(Response::new(hold_pb(h)))
    }

    async fn list_holds(
        &self,
        req: Request<pb::ListHoldsRequest>,
    ) -> Result<Response<pb::ListHoldsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let before = page::decode_token("holds", &r.page_token)?;
        let page = self
            .retention
            .list_holds(
                ctx.tenant()?,
                before.as_deref(),
                limit,
                &r.subject_id,
                r.include_inactive,
            )
            .await?;
        let next_page_token = page::next_token(
            "holds",
            page.more,
            page.items.last().map(|h| h.hold_id.as_str()),
        );
        Ok(Response::new(pb::ListHoldsResponse {
            holds: page.items.into_iter().map(hold_pb).collect(),
            next_page_token,
        }))
    }

    async fn run_sweep(
        &self,
        req: Request<pb::RunSweepRequest>,
    ) -> Result<Response<pb::SweepRun>, Status> {
        let ctx = CallContext::of(&req)?;
        let tenant = ctx.tenant()?.clone();
        let r = req.into_inner();
        let idem = key(&tenant, &r.request_id, "RunSweep", &r)?;
        let sweep = SweepRequest {
            dry_run: r.dry_run,
            policy_ids: r.policy_ids,
            max_items: r.max_items,
            trigger: SweepTrigger::OnDemand,
            requested_by: ctx.sub.clone(),
            slot: None,
        };
        let run = self
            .retention
            .run_sweep(&tenant, sweep, idem, self.stop.clone())
            .await?;
        Ok(Response::new(run_pb(run)))
    }

    async fn get_sweep_run(
        &self,
        req: Request<pb::GetSweepRunRequest>,
    ) -> Result<Response<pb::SweepRun>, Status> {
        let ctx = CallContext::of(&req)?;
        let id = domain::uuid("sweep_run_id", &req.get_ref().sweep_run_id).map_err(invalid)?;
        let run = self
            .retention
            .store()
            .get_run(ctx.tenant()?.as_str(), &id)
            .await?
            .ok_or(crate::error::RetentionError::SweepRunNotFound)?;
        Ok(Response::new(run_pb(run)))
    }

    async fn list_sweep_runs(
        &self,
        req: Request<pb::ListSweepRunsRequest>,
    ) -> Result<Response<pb::ListSweepRunsResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let limit = page::page_size(r.page_size)?;
        let before = page::decode_token("sweep_runs", &r.page_token)?;
        let page = self
            .retention
            .store()
            .list_runs(
                ctx.tenant()?.as_str(),
                before.as_deref(),
                limit,
                r.exclude_dry_runs,
            )
            .await?;
        let next_page_token = page::next_token(
            "sweep_runs",
            page.more,
            page.items.last().map(|r| r.sweep_run_id.as_str()),
        );
        Ok(Response::new(pb::ListSweepRunsResponse {
            sweep_runs: page.items.into_iter().map(run_pb).collect(),
            next_page_token,
            next_scheduled_time: self
                .scheduler
                .as_ref()
                .and_then(|s| s.next_round(vern_kit::time::now()))
                .map(to_timestamp),
        }))
    }

    async fn evaluate(
        &self,
        req: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        let ctx = CallContext::of(&req)?;
        let r = req.into_inner();
        let at = time_field("evaluate_time", r.evaluate_time.as_ref(), Bounds::Business)?;
        let e = self
            .retention
            .evaluate(ctx.tenant()?, &r.subject_id, at)
            .await?;
        Ok(Response::new(evaluation_pb(e)))
    }
    async fn list_outbox_rows(
        &self,
        req: Request<vern_proto::common::v1::ListOutboxRowsRequest>,
    ) -> Result<Response<vern_proto::common::v1::ListOutboxRowsResponse>, Status> {
        let db = self.retention.store().connection();
        Ok(Response::new(
            vern_kit::outbox::admin::list(db, req.get_ref()).await?,
        ))
    }

    async fn retry_outbox_rows(
        &self,
        req: Request<vern_proto::common::v1::RetryOutboxRowsRequest>,
    ) -> Result<Response<vern_proto::common::v1::RetryOutboxRowsResponse>, Status> {
        let db = self.retention.store().connection();
        Ok(Response::new(
            vern_kit::outbox::admin::retry(db, req.get_ref()).await?,
        ))
    }
}
