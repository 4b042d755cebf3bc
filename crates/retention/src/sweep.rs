//! Sweeps: applying the tenant's policies through SubjectService.PurgeRecords, on
//! demand (RunSweep) and on a schedule ([`Scheduler`]).
//!
//! A sweep records its run first (status RUNNING; at most one per tenant, enforced by
//! the database so it holds across instances; the row is the tenant's sweep lease,
//! renewed every [`LEASE_RENEWAL`] while the sweep runs), then per policy:
//! 1. counts the records whose period has passed (a dry-run purge with the policy's own
//!    expiry filters): `matched_count`;
//! 2. purges (or, on a dry run, lists) the records with the policy's filters ANDed with
//!    the expiry of every overlapping legal-duty policy (see the rules in
//!    [`crate::domain`]), never touching subjects under a legal hold;
//! 3. counts what was left, `matched - purged`, as kept.
//!
//! CONSENT_WITHDRAWN policies first ask ConsentService for the subjects whose consent
//! for the purpose was withdrawn or objected to before the cut-off. Finally, subjects
//! with records kept after an erasure whose end has passed (or that have none) are
//! decided again, and what nothing keeps any more is erased (so such subjects become
//! ERASED); they appear as a result with an empty policy_id. A tenant-wide legal hold
//! stops the whole sweep (SKIPPED_HOLD).
//!
//! A sweep cut off by its service's shutdown is recorded INTERRUPTED with what it had
//! done; one whose instance died is marked INTERRUPTED by the next instance once its
//! lease expires ([`crate::store::SWEEP_LEASE`]). The [`Scheduler`] of every instance wakes at the
//! same interval boundaries and claims each tenant's interval in the database, so each
//! interval's scheduled sweep of a tenant runs once, whatever the number of instances.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use tokio::sync::watch;
use vern_kit::context::TenantId;
use vern_kit::error::Violations;
use vern_kit::idempotency::Key;

use crate::domain::{
    self, Action, Disposition, Expiry, HoldScope, Policy, PolicyResult, SweepItem, SweepRun,
    SweepStatus, SweepTrigger,
};
use crate::error::RetentionError;
use crate::remote::{EraseCall, KeptRecord, PurgeCall, PurgeOutcome, PurgedRecord};
use crate::service::Retention;
use crate::store::LEASE_RENEWAL;

/// Most subject ids one PurgeRecords call takes (its limit).
const MAX_IDS: usize = 10_000;
/// Records per real purge call.
const PURGE_BATCH: i32 = 1000;
/// Default and largest number of items a dry run lists.
pub const DEFAULT_MAX_ITEMS: usize = 1000;
/// Largest number of items a dry run lists.
pub const MAX_ITEMS: usize = 10_000;

/// What a sweep is asked to do.
#[derive(Debug, Clone)]
pub struct SweepRequest {
    /// List only.
    pub dry_run: bool,
    /// Only these policies (empty: all).
    pub policy_ids: Vec<String>,
    /// Dry run: most items listed (0: default).
    pub max_items: i32,
    /// Who started it.
    pub trigger: SweepTrigger,
    /// The caller (empty for scheduled runs).
    pub requested_by: String,
    /// Scheduled runs: the start of the interval this run claims for the tenant.
    pub slot: Option<DateTime<Utc>>,
}

/// Turns true when the sweeps it is given to must stop (service shutdown).
pub type Stop = watch::Receiver<bool>;

/// Resolves once `stop` is true; never without one, or once its sender is gone without
/// saying so.
async fn stopped(stop: Option<Stop>) {
    if let Some(mut s) = stop
        && s.wait_for(|v| *v).await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await
}

/// Why a sweep ended before it finished.
enum Cut {
    Shutdown,
    LeaseLost,
}

/// Which subjects a purge covers: all, or only these (possibly none).
#[derive(Debug, Clone)]
enum Subjects {
    All,
    Only(Vec<String>),
}

struct Ctx<'a> {
    tenant: &'a str,
    run_id: String,
    dry_run: bool,
    held: Vec<String>,
    items: Vec<SweepItem>,
    /// Records already listed (a record several policies expire is listed once, under
    /// the first).
    listed: HashSet<String>,
    max_items: usize,
    truncated: bool,
    calls: u64,
}

impl Retention {
    /// RunSweep (and the scheduler's runs): records a run and applies the policies.
    /// When `stop` turns true the sweep is cut off where it is and recorded
    /// INTERRUPTED (service shutdown).
    ///
    /// The work after the run is recorded runs in a task of its own, so a caller that
    /// gives up (deadline, disconnect) does not leave the run RUNNING: it finishes and
    /// is recorded, and GetSweepRun shows it.
    pub async fn run_sweep(
        &self,
        tenant: &TenantId,
        req: SweepRequest,
        key: Option<Key>,
        stop: Option<Stop>,
    ) -> Result<SweepRun, RetentionError> {
        let mut v = Violations::new();
        let mut wanted = vec![];
        for (i, id) in req.policy_ids.iter().enumerate() {
            if let Some(id) = v.check(domain::uuid(&format!("policy_ids[{i}]"), id)) {
                wanted.push(id);
            }
        }
        let max_items = match req.max_items {
            n if n < 0 => {
                v.add("max_items", "must not be negative");
                0
            }
            0 => DEFAULT_MAX_ITEMS,
            n => (n as usize).min(MAX_ITEMS),
        };
        v.finish()?;
        let t = tenant.as_str();
        if let Some(r) = self.store.replay::<SweepRun>(key.as_ref()).await? {
            vern_kit::audit::resource("sweep_run", &r.sweep_run_id);
            return Ok(self.store.get_run(t, &r.sweep_run_id).await?.unwrap_or(r));
        }
        let all = self.store.all_policies(t).await?;
        let mut selected: Vec<Policy> = vec![];
        if wanted.is_empty() {
            selected = all.clone();
        } else {
            let mut v = Violations::new();
            for (i, id) in wanted.iter().enumerate() {
                match all.iter().find(|p| &p.policy_id == id) {
                    Some(p) if !selected.contains(p) => selected.push(p.clone()),
                    Some(_) => {}
                    None => v.add(format!("policy_ids[{i}]"), "is not a policy of this tenant"),
                }
            }
            v.finish()?;
        }
        let mut run = SweepRun {
            tenant_id: t.to_owned(),
            sweep_run_id: uuid::Uuid::now_v7().to_string(),
            dry_run: req.dry_run,
            trigger: req.trigger,
            status: SweepStatus::Running,
            requested_by: req.requested_by,
            start_time: vern_kit::time::now(),
            end_time: None,
            policy_results: vec![],
            items: vec![],
            items_truncated: false,
            held_subject_count: 0,
            error: String::new(),
        };
        vern_kit::audit::resource("sweep_run", &run.sweep_run_id);
        let event = (req.trigger == SweepTrigger::Scheduled).then(|| scheduled_event(&run));
        self.store
            .start_run(&run, key.as_ref(), event, req.slot)
            .await?;
        let this = self.clone();
        let every_policy = wanted.is_empty();
        let dry_run = req.dry_run;
        let task = tokio::spawn(async move {
            let tenant = run.tenant_id.clone();
            let mut ctx = Ctx {
                tenant: &tenant,
                run_id: run.sweep_run_id.clone(),
                dry_run,
                held: vec![],
                items: vec![],
                listed: HashSet::new(),
                max_items,
                truncated: false,
                calls: 0,
            };
            let run_id = run.sweep_run_id.clone();
            // Dropping the sweep's future at a cut leaves at most one call to the
            // subjects service unanswered; its request id makes a repeat harmless.
            let outcome = tokio::select! {
                r = this.execute(&mut ctx, &mut run, &all, &selected, every_policy) => Ok(r),
                cut = this.hold_lease(&tenant, &run_id, stop) => Err(cut),
            };
            match outcome {
                Ok(Ok(status)) => run.status = status,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "sweep failed");
                    run.status = SweepStatus::Failed;
                    run.error = failure_text(&e);
                }
                Err(cut) => {
                    run.status = SweepStatus::Interrupted;
                    run.error = match cut {
                        Cut::Shutdown => "interrupted: the service shut down".into(),
                        Cut::LeaseLost => "interrupted: the sweep lost its lease".into(),
                    };
                    for p in selected.iter().skip(run.policy_results.len()) {
                        run.policy_results.push(PolicyResult {
                            policy_id: p.policy_id.clone(),
                            legal_reference: p.spec.legal_reference.clone(),
                            action: Some(p.spec.action),
                            error: "not applied: the sweep was interrupted".into(),
                            ..Default::default()
                        });
                    }
                    tracing::warn!(reason = %run.error, "sweep interrupted");
                }
            }
            run.items = ctx.items;
            run.items_truncated = ctx.truncated;
            run.end_time = Some(vern_kit::time::now());
            if !this.store.finish_run(&run).await? {
                tracing::warn!("sweep finished after another instance marked it interrupted");
                run.status = SweepStatus::Interrupted;
            }
            if !run.dry_run {
                let purged: i64 = run
                    .policy_results
                    .iter()
                    .map(|r| r.deleted_count + r.anonymised_count)
                    .sum();
                tracing::info!(status = run.status.as_str(), purged, "sweep finished");
            }
            Ok::<_, RetentionError>(run)
        });
        task.await
            .map_err(|_| RetentionError::Api(vern_kit::ApiError::Internal("sweep task")))?
    }

    /// Renews the run's lease until `stop` turns true or the lease is lost (another
    /// instance took the run for dead); never returns otherwise.
    async fn hold_lease(&self, tenant: &str, run_id: &str, stop: Option<Stop>) -> Cut {
        let stop = stopped(stop);
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(LEASE_RENEWAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the lease was taken at the start.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut stop => return Cut::Shutdown,
                _ = tick.tick() => match self.store.heartbeat(tenant, run_id).await {
                    Ok(true) => {}
                    Ok(false) => return Cut::LeaseLost,
                    // A passing database failure: the lease holds until it expires.
                    Err(e) => tracing::warn!(error = %e, "sweep lease renewal failed"),
                },
            }
        }
    }

    async fn execute(
        &self,
        ctx: &mut Ctx<'_>,
        run: &mut SweepRun,
        all: &[Policy],
        selected: &[Policy],
        every_policy: bool,
    ) -> Result<SweepStatus, RetentionError> {
        let now = run.start_time;
        let holds = self.store.active_holds(ctx.tenant, None, now).await?;
        if holds.iter().any(|h| h.scope == HoldScope::Tenant) {
            return Ok(SweepStatus::SkippedHold);
        }
        let held: BTreeSet<String> = holds.into_iter().filter_map(|h| h.subject_id).collect();
        if held.len() > MAX_IDS {
            run.error = format!("more than {MAX_IDS} subjects under legal hold");
            return Ok(SweepStatus::Failed);
        }
        run.held_subject_count = held.len() as i64;
        ctx.held = held.into_iter().collect();
        for p in selected {
            let result = match self.apply_policy(ctx, p, all, now).await {
                Ok(r) => r,
                Err(e) => PolicyResult {
                    policy_id: p.policy_id.clone(),
                    legal_reference: p.spec.legal_reference.clone(),
                    action: Some(p.spec.action),
                    error: failure_text(&e),
                    ..Default::default()
                },
            };
            run.policy_results.push(result);
        }
        if every_policy {
            let r = match self.sweep_after_erasure(ctx, now).await {
                Ok(r) => r,
                Err(e) => PolicyResult {
                    legal_reference: AFTER_ERASURE.into(),
                    action: Some(Action::Delete),
                    error: failure_text(&e),
                    ..Default::default()
                },
            };
            if r.matched_count > 0 || !r.error.is_empty() {
                run.policy_results.push(r);
            }
        }
        Ok(domain::run_status(&run.policy_results))
    }

    /// The subjects a CONSENT_WITHDRAWN condition allows.
    async fn subjects_for(&self, tenant: &str, e: &Expiry) -> Result<Subjects, RetentionError> {
        let mut set: Option<HashSet<String>> = None;
        for (purpose, before) in &e.withdrawn {
            let ids: HashSet<String> = self
                .upstream
                .withdrawals(tenant, None, Some(purpose), Some(*before))
                .await?
                .into_iter()
                // Not only trusted to the server's filter: a withdrawal at or after the
                // cut-off keeps its data until its period has run.
                .filter(|w| &w.purpose == purpose && w.time < *before)
                .map(|w| w.subject_id)
                .collect();
            set = Some(match set {
                None => ids,
                Some(s) => s.intersection(&ids).cloned().collect(),
            });
        }
        Ok(match set {
            None => Subjects::All,
            Some(s) => {
                let mut v: Vec<String> = s.into_iter().collect();
                v.sort();
                Subjects::Only(v)
            }
        })
    }

    fn call(&self, ctx: &mut Ctx<'_>, base: &PurgeCall, dry_run: bool) -> PurgeCall {
        let mut c = base.clone();
        c.dry_run = dry_run;
        if !dry_run {
            ctx.calls += 1;
            c.request_id = format!("sweep-{}-{}", ctx.run_id, ctx.calls);
        }
        c
    }

    /// Calls PurgeRecords for every chunk of `subjects`: on a dry run once per chunk
    /// (listing up to `list` items), otherwise until nothing more matches. Returns the
    /// total matched (dry) or purged (real) count and the listed items.
    async fn purge_all(
        &self,
        ctx: &mut Ctx<'_>,
        base: PurgeCall,
        subjects: &Subjects,
        dry_run: bool,
        list: usize,
    ) -> Result<(i64, Vec<PurgedRecord>), RetentionError> {
        let chunks: Vec<Vec<String>> = match subjects {
            Subjects::All => vec![vec![]],
            Subjects::Only(ids) if ids.is_empty() => return Ok((0, vec![])),
            Subjects::Only(ids) => ids.chunks(MAX_IDS).map(<[String]>::to_vec).collect(),
        };
        let mut total = 0;
        let mut items = vec![];
        for chunk in chunks {
            let mut call = base.clone();
            call.subject_ids = chunk;
            if dry_run {
                let want = list.saturating_sub(items.len());
                call.limit = want.clamp(1, MAX_ITEMS) as i32;
                let out: PurgeOutcome = self
                    .upstream
                    .purge(ctx.tenant, self.call(ctx, &call, true))
                    .await?;
                total += out.matched_count;
                items.extend(out.items.into_iter().take(want));
            } else {
                call.limit = PURGE_BATCH;
                loop {
                    let out = self
                        .upstream
                        .purge(ctx.tenant, self.call(ctx, &call, false))
                        .await?;
                    total += out.purged_count;
                    if !out.truncated || out.purged_count == 0 {
                        break;
                    }
                }
            }
        }
        Ok((total, items))
    }

    async fn apply_policy(
        &self,
        ctx: &mut Ctx<'_>,
        p: &Policy,
        all: &[Policy],
        now: DateTime<Utc>,
    ) -> Result<PolicyResult, RetentionError> {
        let s = &p.spec;
        let out_of_range =
            || RetentionError::Api(vern_kit::ApiError::Internal("period out of range"));
        let own = domain::expiry(s, now).ok_or_else(out_of_range)?;
        let mut full = own.clone();
        for d in domain::guarding_duties(p, all) {
            full = full.and(&domain::expiry(&d.spec, now).ok_or_else(out_of_range)?);
        }
        let base = |e: &Expiry| PurgeCall {
            category: s.category,
            purpose: s.purpose.clone(),
            field: s.field.clone(),
            // PurgeRecords needs a time filter; "collected before now" matches all.
            older_than: Some(e.older_than.unwrap_or(now)),
            relationship_end_before: e.relationship_end_before,
            retain_until_before: None,
            include_open_ended: false,
            subject_ids: vec![],
            exclude_subject_ids: vec![],
            action: s.action,
            dry_run: true,
            limit: 1,
            policy_id: p.policy_id.clone(),
            request_id: String::new(),
        };
        let own_subjects = self.subjects_for(ctx.tenant, &own).await?;
        let (matched, _) = self
            .purge_all(ctx, base(&own), &own_subjects, true, 0)
            .await?;
        let full_subjects = if full.withdrawn == own.withdrawn {
            own_subjects
        } else {
            self.subjects_for(ctx.tenant, &full).await?
        };
        let mut go = base(&full);
        go.exclude_subject_ids = ctx.held.clone();
        let room = ctx.max_items.saturating_sub(ctx.items.len());
        let (count, listed) = self
            .purge_all(ctx, go, &full_subjects, ctx.dry_run, room)
            .await?;
        if ctx.dry_run {
            if count as usize > listed.len() {
                ctx.truncated = true;
            }
            let cutoff = full
                .older_than
                .or(full.relationship_end_before)
                .or(full.withdrawn.first().map(|w| w.1));
            for r in listed {
                if !ctx.listed.insert(r.record_id.clone()) {
                    continue;
                }
                let expire = domain::item_expire_time(s, r.collected_at);
                ctx.items
                    .push(item(p, r, expire, domain::sweep_reason(p, expire, cutoff)));
            }
        }
        let (deleted, anonymised) = match (ctx.dry_run, s.action) {
            (true, _) => (0, 0),
            (false, Action::Delete) => (count, 0),
            (false, Action::Anonymise) => (0, count),
        };
        Ok(PolicyResult {
            policy_id: p.policy_id.clone(),
            legal_reference: s.legal_reference.clone(),
            action: Some(s.action),
            matched_count: matched,
            deleted_count: deleted,
            anonymised_count: anonymised,
            kept_count: (matched - count).max(0),
            error: String::new(),
        })
    }

    /// Records kept, restricted, after an erasure whose end has passed, or that were
    /// kept without an end (an open-ended hold, a duty whose start was not known): each
    /// such subject, unless held, is evaluated again as at its erasure. Records no duty
    /// or hold keeps any more are erased through EraseSubject, which keeps the others
    /// with their new end (`retain`) and erases the subject once nothing is kept. So a
    /// hold's end is not taken for a duty's end: a bookkeeping record held past a hold
    /// stays until its bookkeeping period ends, and a record held until released goes
    /// after the release.
    async fn sweep_after_erasure(
        &self,
        ctx: &mut Ctx<'_>,
        now: DateTime<Utc>,
    ) -> Result<PolicyResult, RetentionError> {
        let due = PurgeCall {
            category: None,
            purpose: None,
            field: None,
            older_than: None,
            relationship_end_before: None,
            retain_until_before: Some(now),
            include_open_ended: true,
            subject_ids: vec![],
            exclude_subject_ids: ctx.held.clone(),
            action: Action::Delete,
            dry_run: true,
            limit: 1,
            policy_id: String::new(),
            request_id: String::new(),
        };
        // Up to MAX_ITEMS records a sweep; the next sweep goes on with the rest.
        let (matched, listed) = self
            .purge_all(ctx, due, &Subjects::All, true, MAX_ITEMS)
            .await?;
        let mut result = PolicyResult {
            legal_reference: AFTER_ERASURE.into(),
            action: Some(Action::Delete),
            matched_count: matched,
            ..Default::default()
        };
        let subjects: BTreeSet<String> = listed.into_iter().map(|r| r.subject_id).collect();
        let mut erased = 0;
        for subject_id in subjects {
            let eval = match self.evaluate_at(ctx.tenant, subject_id.clone(), now).await {
                Ok(e) => e,
                // Erased meanwhile.
                Err(RetentionError::SubjectNotFound) => continue,
                Err(e) => return Err(e),
            };
            let (keep, go): (Vec<_>, Vec<_>) = eval.decisions.into_iter().partition(|(_, d)| {
                matches!(d.disposition, Disposition::MustKeep | Disposition::Held)
            });
            let retain: Vec<KeptRecord> = keep
                .iter()
                .map(|(_, d)| KeptRecord {
                    record_id: d.record_id.clone(),
                    retain_until: d.retain_until,
                    legal_reference: if d.legal_reference.trim().is_empty() {
                        AFTER_ERASURE_KEPT.into()
                    } else {
                        d.legal_reference.clone()
                    },
                })
                .collect();
            // Nothing to do when every record stays with the end it has (an open-ended
            // duty, looked at again at every sweep until it gets an end).
            let unchanged = go.is_empty()
                && keep
                    .iter()
                    .zip(&retain)
                    .all(|((r, _), k)| r.restricted && r.retain_until == k.retain_until);
            if unchanged {
                continue;
            }
            if ctx.dry_run {
                for (r, _) in go {
                    if ctx.items.len() >= ctx.max_items {
                        ctx.truncated = true;
                        break;
                    }
                    if !ctx.listed.insert(r.record_id.clone()) {
                        continue;
                    }
                    ctx.items.push(SweepItem {
                        policy_id: String::new(),
                        subject_id: subject_id.clone(),
                        record_id: r.record_id,
                        category: r.category,
                        field: r.field,
                        purposes: r.purposes,
                        collected_at: r.collected_at,
                        expire_time: None,
                        action: Action::Delete,
                        reason: "kept after erasure; no duty or hold keeps it any more".into(),
                    });
                }
                continue;
            }
            let call = EraseCall {
                request_id: format!("sweep-{}-erase-{subject_id}", ctx.run_id),
                subject_id,
                retain,
            };
            erased += self.upstream.erase(ctx.tenant, call).await?;
        }
        result.deleted_count = erased;
        result.kept_count = (matched - erased).max(0);
        Ok(result)
    }
}

/// The legal reference shown for records kept after an erasure.
pub const AFTER_ERASURE: &str = "retention duty after erasure ended";
/// The reference of a record kept again whose deciding duty names none.
const AFTER_ERASURE_KEPT: &str = "retention duty";

fn item(p: &Policy, r: PurgedRecord, expire: Option<DateTime<Utc>>, reason: String) -> SweepItem {
    SweepItem {
        policy_id: p.policy_id.clone(),
        subject_id: r.subject_id,
        record_id: r.record_id,
        category: r.category,
        field: r.field,
        purposes: r.purposes,
        collected_at: r.collected_at,
        expire_time: expire,
        action: p.spec.action,
        reason,
    }
}

/// A failure as stored in a run: the kind, never upstream message text.
fn failure_text(e: &RetentionError) -> String {
    match e {
        RetentionError::Upstream(s) => format!("the {s} service could not be reached or refused"),
        RetentionError::Db(_) => "database error".into(),
        other => other.to_string(),
    }
}

/// The audit event of a scheduled sweep (no caller scope exists to produce one).
fn scheduled_event(run: &SweepRun) -> Vec<u8> {
    use vern_proto::audit::v1 as apb;
    apb::AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: run.tenant_id.clone(),
        actor: Some(apb::Actor {
            sub: SCHEDULER_SUB.into(),
            roles: vec!["service".into()],
            client: String::new(),
        }),
        action: "RunSweep".into(),
        service: "retention".into(),
        resource_type: "sweep_run".into(),
        resource_id: run.sweep_run_id.clone(),
        outcome: apb::Outcome::Success as i32,
        detail: "scheduled".into(),
        occur_time: Some(vern_kit::time::to_timestamp(run.start_time)),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The actor of scheduled sweeps in the audit trail.
pub const SCHEDULER_SUB: &str = "retention-scheduler";

/// Runs scheduled sweeps of every tenant that has policies, once per interval across
/// all instances: intervals are aligned to the Unix epoch, every instance wakes at
/// their boundaries, and the instance whose claim of a tenant's interval commits first
/// sweeps it; the others skip it.
#[derive(Clone, Debug)]
pub struct Scheduler {
    retention: Retention,
    relay: Option<vern_kit::outbox::Relay>,
    interval: Duration,
}

impl Scheduler {
    /// A scheduler over `retention` sweeping every `interval`; `relay` is nudged after
    /// audit events are written.
    pub fn new(
        retention: Retention,
        relay: Option<vern_kit::outbox::Relay>,
        interval: Duration,
    ) -> Self {
        Self {
            retention,
            relay,
            interval: interval.max(Duration::from_millis(1)),
        }
    }

    /// The start of the interval `t` falls in.
    pub fn slot_of(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let every = i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX);
        let ms = t.timestamp_millis();
        DateTime::from_timestamp_millis(ms - ms.rem_euclid(every)).unwrap_or(t)
    }

    /// One round, for the interval starting at `slot`: marks sweeps whose instance died
    /// (lease expired) INTERRUPTED, then sweeps each tenant with policies whose interval
    /// no instance has claimed yet. A tenant whose sweep is running is skipped. Returns
    /// the runs recorded here.
    pub async fn run_once(&self, slot: DateTime<Utc>, stop: Option<Stop>) -> Vec<SweepRun> {
        self.expire_leases().await;
        let tenants = match self.retention.store.tenants_with_policies().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "scheduled sweep: listing tenants failed");
                return vec![];
            }
        };
        let mut runs = vec![];
        for t in tenants {
            if stop.as_ref().is_some_and(|s| *s.borrow()) {
                break;
            }
            let req = SweepRequest {
                dry_run: false,
                policy_ids: vec![],
                max_items: 0,
                trigger: SweepTrigger::Scheduled,
                requested_by: String::new(),
                slot: Some(slot),
            };
            match self
                .retention
                .run_sweep(&TenantId::new(t.clone()), req, None, stop.clone())
                .await
            {
                Ok(run) => runs.push(run),
                Err(RetentionError::SweepClaimed) => {
                    tracing::debug!(tenant = %t, "scheduled sweep skipped: another instance has it")
                }
                Err(RetentionError::SweepRunning) => {
                    tracing::info!(tenant = %t, "scheduled sweep skipped: a sweep is running")
                }
                Err(e) => tracing::warn!(tenant = %t, error = %e, "scheduled sweep failed"),
            }
        }
        if let Some(r) = &self.relay {
            r.nudge();
        }
        runs
    }

    /// Marks sweeps whose instance died (lease expired) INTERRUPTED.
    async fn expire_leases(&self) {
        match self
            .retention
            .store
            .interrupt_expired(vern_kit::time::now())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(runs = n, "sweeps whose instance died marked interrupted"),
            Err(e) => tracing::warn!(error = %e, "scheduled sweep: expiring leases failed"),
        }
    }

    /// Starts the loop: a round at every interval boundary (the first one at most an
    /// interval after start) until the handle is stopped or dropped. Between rounds,
    /// sweeps whose instance died are marked INTERRUPTED every [`LEASE_RENEWAL`] × 3,
    /// so none shows RUNNING for long.
    pub fn spawn(self) -> SchedulerHandle {
        let interval = self.interval;
        let (stop, rx) = watch::channel(false);
        let mut halt = rx.clone();
        let task = tokio::spawn(async move {
            let mut expiry = tokio::time::interval(LEASE_RENEWAL * 3);
            expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let now = vern_kit::time::now();
                // An interval too long to add to a date never comes round.
                let next = chrono::Duration::from_std(self.interval)
                    .ok()
                    .and_then(|d| self.slot_of(now).checked_add_signed(d));
                let wait = next.map(|n| (n - now).to_std().unwrap_or_default());
                tokio::select! {
                    // The guard wait_for answers is not Send: dropped inside.
                    _ = async { drop(halt.wait_for(|v| *v).await) } => break,
                    _ = expiry.tick() => {
                        self.expire_leases().await;
                        continue;
                    }
                    Some(next) = async move { tokio::time::sleep(wait?).await; next } => {
                        // The boundary slept to, also when the timer fired a little
                        // early by the wall clock (a late wake-up runs the interval it
                        // woke in).
                        let slot = self.slot_of(vern_kit::time::now().max(next));
                        self.run_once(slot, Some(rx.clone())).await;
                    }
                }
                if *rx.borrow() {
                    break;
                }
            }
            tracing::debug!("retention scheduler stopped");
        });
        SchedulerHandle {
            stop,
            task: std::sync::Mutex::new(Some(task)),
            interval,
        }
    }
}

/// Stops the scheduler loop when stopped or dropped. A sweep in progress is cut off and
/// recorded INTERRUPTED; [`SchedulerHandle::stop`] waits until it is recorded.
#[derive(Debug)]
pub struct SchedulerHandle {
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    interval: Duration,
}

impl SchedulerHandle {
    /// The next interval boundary after `now` (intervals are aligned to the Unix
    /// epoch): when the scheduler next sweeps the tenants with policies. `None` for an
    /// interval too long to add to a date.
    pub fn next_round(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let every = i64::try_from(self.interval.as_millis()).ok()?.max(1);
        let ms = now.timestamp_millis();
        DateTime::from_timestamp_millis(ms - ms.rem_euclid(every))?
            .checked_add_signed(chrono::Duration::milliseconds(every))
    }

    /// Stops the loop and waits for it to end (its running sweep recorded).
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let task = match self.task.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Drop for SchedulerHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
