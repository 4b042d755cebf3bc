//! Persistence of policies, legal holds and sweep runs. Every query is scoped by
//! tenant id.

pub mod entities;
pub mod migration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, DatabaseTransaction, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use vern_kit::db::Db;
use vern_kit::db::{DbFailure, DbTarget, classify};
use vern_kit::idempotency::{self, Key, commit_once};

use crate::domain::{
    Action, Anchor, DataCategory, Hold, HoldScope, Period, Policy, PolicySpec, SweepRun,
    SweepStatus, SweepTrigger,
};
use crate::error::RetentionError;
use entities::{hold, policy, sweep_run, sweep_slot};

pub use migration::Migrator;

/// A page of results and whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// True when another page exists.
    pub more: bool,
}

fn page<T>(mut items: Vec<T>, limit: u64) -> Page<T> {
    let more = items.len() as u64 > limit;
    items.truncate(limit as usize);
    Page { items, more }
}

/// Filter of ListPolicies.
#[derive(Debug, Clone, Default)]
pub struct PolicyFilter {
    /// Only this category.
    pub category: Option<DataCategory>,
    /// Only this purpose.
    pub purpose: Option<String>,
}

/// Filter of ListHolds.
#[derive(Debug, Clone, Default)]
pub struct HoldFilter {
    /// Only holds on this subject, and tenant-wide holds.
    pub subject_id: Option<String>,
    /// Also released and expired holds.
    pub include_inactive: bool,
}

/// A running sweep holds its tenant's sweep lease (the RUNNING row) for this long after
/// its last heartbeat; one whose lease expired is taken to have died with its process
/// and is marked INTERRUPTED by the next instance that looks.
pub const SWEEP_LEASE: chrono::Duration = chrono::Duration::minutes(2);

/// How often a running sweep renews its lease (well within [`SWEEP_LEASE`]).
pub const LEASE_RENEWAL: std::time::Duration = std::time::Duration::from_secs(20);

/// The error stored in a run whose lease expired.
const LEASE_EXPIRED: &str = "interrupted: the sweep's instance stopped renewing its lease";

/// The retention service's store.
#[derive(Clone, Debug)]
pub struct RetentionStore {
    db: Db,
}

impl RetentionStore {
    /// Connects to `target` and runs the migrations.
    pub async fn open(target: &DbTarget) -> Result<Self, DbErr> {
        let db = vern_kit::db::connect_and_migrate::<Migrator>(target).await?;
        Ok(Self { db })
    }

    /// The connection.
    pub fn connection(&self) -> &Db {
        &self.db
    }

    /// A stored answer to an earlier call with the same request id.
    pub async fn replay<R: serde::de::DeserializeOwned>(
        &self,
        key: Option<&Key>,
    ) -> Result<Option<R>, RetentionError> {
        Ok(idempotency::replay(&self.db, key).await?)
    }

    /// Inserts a policy.
    pub async fn create_policy(
        &self,
        p: &Policy,
        key: Option<&Key>,
    ) -> Result<Policy, RetentionError> {
        let row = policy_active(p);
        Ok(commit_once(&self.db, key, p.clone(), move |txn| {
            Box::pin(async move {
                row.insert(txn).await?;
                Ok::<_, RetentionError>(())
            })
        })
        .await?)
    }

    /// One policy of a tenant.
    pub async fn get_policy(
        &self,
        tenant: &str,
        policy_id: &str,
    ) -> Result<Option<Policy>, RetentionError> {
        policy::Entity::find_by_id(policy_id.to_owned())
            .filter(policy::Column::TenantId.eq(tenant))
            .one(&self.db)
            .await?
            .map(policy_from_row)
            .transpose()
    }

    /// A page of a tenant's policies in creation order (ids are time-ordered).
    pub async fn list_policies(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u64,
        filter: &PolicyFilter,
    ) -> Result<Page<Policy>, RetentionError> {
        let mut q = policy::Entity::find()
            .filter(policy::Column::TenantId.eq(tenant))
            .order_by_asc(policy::Column::PolicyId);
        if let Some(a) = after {
            q = q.filter(policy::Column::PolicyId.gt(a));
        }
        if let Some(c) = filter.category {
            q = q.filter(policy::Column::Category.eq(c.as_str()));
        }
        if let Some(p) = &filter.purpose {
            q = q.filter(policy::Column::Purpose.eq(p.as_str()));
        }
        let rows = q.limit(limit + 1).all(&self.db).await?;
        let items = rows
            .into_iter()
            .map(policy_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit))
    }

    /// Every policy of a tenant, in creation order.
    pub async fn all_policies(&self, tenant: &str) -> Result<Vec<Policy>, RetentionError> {
        policy::Entity::find()
            .filter(policy::Column::TenantId.eq(tenant))
            .order_by_asc(policy::Column::PolicyId)
            .all(&self.db)
            .await?
            .into_iter()
            .map(policy_from_row)
            .collect()
    }

    /// Tenants that have at least one policy or legal hold (the scheduler sweeps these:
    /// a hold's end can be what a record kept after an erasure waits for).
    pub async fn tenants_with_policies(&self) -> Result<Vec<String>, RetentionError> {
        let mut tenants: Vec<String> = policy::Entity::find()
            .select_only()
            .column(policy::Column::TenantId)
            .distinct()
            .into_tuple::<String>()
            .all(&self.db)
            .await?;
        tenants.extend(
            hold::Entity::find()
                .select_only()
                .column(hold::Column::TenantId)
                .distinct()
                .into_tuple::<String>()
                .all(&self.db)
                .await?,
        );
        tenants.sort();
        tenants.dedup();
        Ok(tenants)
    }

    /// Replaces a policy if it was not changed since `expected`.
    pub async fn update_policy(
        &self,
        p: &Policy,
        expected: DateTime<Utc>,
        key: Option<&Key>,
    ) -> Result<Policy, RetentionError> {
        let s = &p.spec;
        let update = policy::Entity::update_many()
            .col_expr(policy::Column::Name, Expr::value(s.name.clone()))
            .col_expr(
                policy::Column::Category,
                Expr::value(s.category.map(|c| c.as_str().to_owned())),
            )
            .col_expr(policy::Column::Purpose, Expr::value(s.purpose.clone()))
            .col_expr(policy::Column::Field, Expr::value(s.field.clone()))
            .col_expr(policy::Column::Period, Expr::value(s.period.to_string()))
            .col_expr(policy::Column::Anchor, Expr::value(s.anchor.as_str()))
            .col_expr(policy::Column::Action, Expr::value(s.action.as_str()))
            .col_expr(
                policy::Column::LegalReference,
                Expr::value(s.legal_reference.clone()),
            )
            .col_expr(policy::Column::LegalDuty, Expr::value(s.legal_duty))
            .col_expr(policy::Column::UpdateTime, Expr::value(p.update_time))
            .filter(policy::Column::TenantId.eq(p.tenant_id.as_str()))
            .filter(policy::Column::PolicyId.eq(p.policy_id.as_str()))
            .filter(policy::Column::UpdateTime.eq(expected));
        Ok(commit_once(&self.db, key, p.clone(), move |txn| {
            Box::pin(async move {
                if update.exec(txn).await?.rows_affected != 1 {
                    return Err(RetentionError::Conflict);
                }
                Ok(())
            })
        })
        .await?)
    }

    /// Deletes a policy; NOT_FOUND when it does not exist in the tenant.
    pub async fn delete_policy(
        &self,
        tenant: &str,
        policy_id: &str,
        key: Option<&Key>,
    ) -> Result<(), RetentionError> {
        let delete = policy::Entity::delete_many()
            .filter(policy::Column::TenantId.eq(tenant))
            .filter(policy::Column::PolicyId.eq(policy_id));
        commit_once(&self.db, key, (), move |txn| {
            Box::pin(async move {
                if delete.exec(txn).await?.rows_affected != 1 {
                    return Err(RetentionError::PolicyNotFound);
                }
                Ok(())
            })
        })
        .await?;
        Ok(())
    }

    /// Inserts a hold.
    pub async fn place_hold(&self, h: &Hold, key: Option<&Key>) -> Result<Hold, RetentionError> {
        let row = hold_active(h);
        Ok(commit_once(&self.db, key, h.clone(), move |txn| {
            Box::pin(async move {
                row.insert(txn).await?;
                Ok::<_, RetentionError>(())
            })
        })
        .await?)
    }

    /// One hold of a tenant.
    pub async fn get_hold(
        &self,
        tenant: &str,
        hold_id: &str,
    ) -> Result<Option<Hold>, RetentionError> {
        hold::Entity::find_by_id(hold_id.to_owned())
            .filter(hold::Column::TenantId.eq(tenant))
            .one(&self.db)
            .await?
            .map(hold_from_row)
            .transpose()
    }

    /// Records the release of a hold that was not released yet.
    pub async fn release_hold(&self, h: &Hold, key: Option<&Key>) -> Result<Hold, RetentionError> {
        let update = hold::Entity::update_many()
            .col_expr(hold::Column::ReleaseTime, Expr::value(h.release_time))
            .col_expr(hold::Column::ReleasedBy, Expr::value(h.released_by.clone()))
            .col_expr(
                hold::Column::ReleaseReason,
                Expr::value(h.release_reason.clone()),
            )
            .filter(hold::Column::TenantId.eq(h.tenant_id.as_str()))
            .filter(hold::Column::HoldId.eq(h.hold_id.as_str()))
            .filter(hold::Column::ReleaseTime.is_null());
        Ok(commit_once(&self.db, key, h.clone(), move |txn| {
            Box::pin(async move {
                if update.exec(txn).await?.rows_affected != 1 {
                    return Err(RetentionError::HoldReleased);
                }
                Ok(())
            })
        })
        .await?)
    }

    /// A page of holds, newest first.
    pub async fn list_holds(
        &self,
        tenant: &str,
        before: Option<&str>,
        limit: u64,
        filter: &HoldFilter,
        now: DateTime<Utc>,
    ) -> Result<Page<Hold>, RetentionError> {
        let mut q = hold::Entity::find()
            .filter(hold::Column::TenantId.eq(tenant))
            .order_by_desc(hold::Column::HoldId);
        if let Some(b) = before {
            q = q.filter(hold::Column::HoldId.lt(b));
        }
        if let Some(s) = &filter.subject_id {
            q = q.filter(
                Condition::any()
                    .add(hold::Column::SubjectId.eq(s.as_str()))
                    .add(hold::Column::Scope.eq(HoldScope::Tenant.as_str())),
            );
        }
        if !filter.include_inactive {
            q = q.filter(active(now));
        }
        let rows = q.limit(limit + 1).all(&self.db).await?;
        let items = rows
            .into_iter()
            .map(hold_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit))
    }

    /// Every hold of a tenant in force at `now` (optionally: only those affecting one
    /// subject).
    pub async fn active_holds(
        &self,
        tenant: &str,
        subject_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Hold>, RetentionError> {
        let mut q = hold::Entity::find()
            .filter(hold::Column::TenantId.eq(tenant))
            .filter(active(now))
            .order_by_desc(hold::Column::HoldId);
        if let Some(s) = subject_id {
            q = q.filter(
                Condition::any()
                    .add(hold::Column::SubjectId.eq(s))
                    .add(hold::Column::Scope.eq(HoldScope::Tenant.as_str())),
            );
        }
        q.all(&self.db)
            .await?
            .into_iter()
            .map(hold_from_row)
            .collect()
    }

    /// Marks every RUNNING sweep (of any tenant) whose lease expired at `now` as
    /// INTERRUPTED; the answer is how many.
    pub async fn interrupt_expired(&self, now: DateTime<Utc>) -> Result<u64, RetentionError> {
        Ok(expire_runs(&self.db, None, now).await?)
    }

    /// Records the start of a sweep (status RUNNING). FAILED_PRECONDITION while another
    /// sweep of the tenant runs; a running sweep whose lease expired ([`SWEEP_LEASE`]
    /// without a heartbeat: its process died) is marked INTERRUPTED first.
    /// `audit_event` (an encoded `AuditEvent`) is committed with the start, for runs
    /// that no caller's audit scope covers (the scheduler's). With `slot` (the start of
    /// a scheduled interval), the tenant's interval is claimed in the same transaction:
    /// [`RetentionError::SweepClaimed`] when this or a later interval was claimed
    /// already, by any instance.
    pub async fn start_run(
        &self,
        run: &SweepRun,
        key: Option<&Key>,
        audit_event: Option<Vec<u8>>,
        slot: Option<DateTime<Utc>>,
    ) -> Result<SweepRun, RetentionError> {
        expire_runs(&self.db, Some(&run.tenant_id), run.start_time).await?;
        let row = run_active(run)?;
        let tenant = run.tenant_id.clone();
        let run_id = run.sweep_run_id.clone();
        let started = commit_once(&self.db, key, run.clone(), move |txn| {
            Box::pin(async move {
                if let Some(slot) = slot
                    && !claim_slot(txn, &tenant, slot, &run_id).await?
                {
                    return Err(RetentionError::SweepClaimed);
                }
                row.insert(txn).await.map_err(|e| {
                    if classify(&e) == DbFailure::UniqueViolation {
                        RetentionError::SweepRunning
                    } else {
                        RetentionError::Db(e)
                    }
                })?;
                if let Some(event) = audit_event {
                    vern_kit::outbox::enqueue(txn, &tenant, vern_kit::audit::AUDIT_TOPIC, event)
                        .await?;
                }
                Ok::<_, RetentionError>(())
            })
        })
        .await;
        match started {
            Ok(r) => Ok(r),
            // The unique index refused a second RUNNING row of the tenant.
            Err(vern_kit::ApiError::FailedPrecondition(v))
                if v.iter().any(|x| x.kind == "SWEEP_RUNNING") =>
            {
                Err(RetentionError::SweepRunning)
            }
            Err(vern_kit::ApiError::FailedPrecondition(v))
                if v.iter().any(|x| x.kind == "SWEEP_CLAIMED") =>
            {
                Err(RetentionError::SweepClaimed)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Renews a running sweep's lease. False when the run is no longer RUNNING (its
    /// lease expired and another instance marked it): the sweep must stop.
    pub async fn heartbeat(
        &self,
        tenant: &str,
        sweep_run_id: &str,
    ) -> Result<bool, RetentionError> {
        let renewed = sweep_run::Entity::update_many()
            .col_expr(
                sweep_run::Column::HeartbeatTime,
                Expr::value(vern_kit::time::now()),
            )
            .filter(sweep_run::Column::TenantId.eq(tenant))
            .filter(sweep_run::Column::SweepRunId.eq(sweep_run_id))
            .filter(sweep_run::Column::Status.eq(SweepStatus::Running.as_str()))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(renewed == 1)
    }

    /// Stores the outcome of a sweep (which releases the tenant's sweep lease). False
    /// when another instance had marked the run INTERRUPTED (its lease expired): its
    /// status stays so, and only what the sweep did is added.
    pub async fn finish_run(&self, run: &SweepRun) -> Result<bool, RetentionError> {
        let counts = |u: sea_orm::UpdateMany<sweep_run::Entity>| -> Result<_, DbErr> {
            Ok(u.col_expr(
                sweep_run::Column::PolicyResults,
                Expr::value(json(&run.policy_results)?),
            )
            .col_expr(sweep_run::Column::Items, Expr::value(json(&run.items)?))
            .col_expr(
                sweep_run::Column::ItemsTruncated,
                Expr::value(run.items_truncated),
            )
            .col_expr(
                sweep_run::Column::HeldSubjectCount,
                Expr::value(run.held_subject_count),
            )
            .filter(sweep_run::Column::TenantId.eq(run.tenant_id.as_str()))
            .filter(sweep_run::Column::SweepRunId.eq(run.sweep_run_id.as_str())))
        };
        let finished = counts(sweep_run::Entity::update_many())?
            .col_expr(sweep_run::Column::Status, Expr::value(run.status.as_str()))
            .col_expr(sweep_run::Column::EndTime, Expr::value(run.end_time))
            .col_expr(
                sweep_run::Column::HeartbeatTime,
                Expr::value(vern_kit::time::now()),
            )
            .col_expr(sweep_run::Column::Error, Expr::value(run.error.clone()))
            .filter(sweep_run::Column::Status.eq(SweepStatus::Running.as_str()))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1;
        if !finished {
            counts(sweep_run::Entity::update_many())?
                .exec(&self.db)
                .await?;
        }
        Ok(finished)
    }

    /// One sweep run of a tenant, with its items.
    pub async fn get_run(
        &self,
        tenant: &str,
        sweep_run_id: &str,
    ) -> Result<Option<SweepRun>, RetentionError> {
        sweep_run::Entity::find_by_id(sweep_run_id.to_owned())
            .filter(sweep_run::Column::TenantId.eq(tenant))
            .one(&self.db)
            .await?
            .map(|r| run_from_row(r, true))
            .transpose()
    }

    /// A page of sweep runs, newest first, without items.
    pub async fn list_runs(
        &self,
        tenant: &str,
        before: Option<&str>,
        limit: u64,
        exclude_dry_runs: bool,
    ) -> Result<Page<SweepRun>, RetentionError> {
        let mut q = sweep_run::Entity::find()
            .filter(sweep_run::Column::TenantId.eq(tenant))
            .order_by_desc(sweep_run::Column::SweepRunId);
        if let Some(b) = before {
            q = q.filter(sweep_run::Column::SweepRunId.lt(b));
        }
        if exclude_dry_runs {
            q = q.filter(sweep_run::Column::DryRun.eq(false));
        }
        let rows = q.limit(limit + 1).all(&self.db).await?;
        let items = rows
            .into_iter()
            .map(|r| run_from_row(r, false))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit))
    }
}

/// Holds in force at `now`: not released, no end or an end after `now`.
fn active(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(hold::Column::ReleaseTime.is_null())
        .add(
            Condition::any()
                .add(hold::Column::EndTime.is_null())
                .add(Expr::col(hold::Column::EndTime).gt(now)),
        )
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, DbErr> {
    serde_json::to_string(v).map_err(|e| DbErr::Json(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, DbErr> {
    serde_json::from_str(s).map_err(|e| DbErr::Json(e.to_string()))
}

fn corrupt(what: &str) -> DbErr {
    DbErr::Type(format!("unknown stored value in {what}"))
}

fn policy_active(p: &Policy) -> policy::ActiveModel {
    let s = &p.spec;
    policy::ActiveModel {
        policy_id: Set(p.policy_id.clone()),
        tenant_id: Set(p.tenant_id.clone()),
        name: Set(s.name.clone()),
        category: Set(s.category.map(|c| c.as_str().to_owned())),
        purpose: Set(s.purpose.clone()),
        field: Set(s.field.clone()),
        period: Set(s.period.to_string()),
        anchor: Set(s.anchor.as_str().to_owned()),
        action: Set(s.action.as_str().to_owned()),
        legal_reference: Set(s.legal_reference.clone()),
        legal_duty: Set(s.legal_duty),
        create_time: Set(p.create_time),
        update_time: Set(p.update_time),
    }
}

fn policy_from_row(m: policy::Model) -> Result<Policy, RetentionError> {
    let category = match &m.category {
        Some(c) => Some(DataCategory::parse(c).ok_or_else(|| corrupt("policies.category"))?),
        None => None,
    };
    Ok(Policy {
        spec: PolicySpec {
            name: m.name,
            category,
            purpose: m.purpose,
            field: m.field,
            period: Period::parse(&m.period).map_err(|_| corrupt("policies.period"))?,
            anchor: Anchor::parse(&m.anchor).ok_or_else(|| corrupt("policies.anchor"))?,
            action: Action::parse(&m.action).ok_or_else(|| corrupt("policies.action"))?,
            legal_reference: m.legal_reference,
            legal_duty: m.legal_duty,
        },
        tenant_id: m.tenant_id,
        policy_id: m.policy_id,
        create_time: m.create_time,
        update_time: m.update_time,
    })
}

fn hold_active(h: &Hold) -> hold::ActiveModel {
    hold::ActiveModel {
        hold_id: Set(h.hold_id.clone()),
        tenant_id: Set(h.tenant_id.clone()),
        scope: Set(h.scope.as_str().to_owned()),
        subject_id: Set(h.subject_id.clone()),
        reason: Set(h.reason.clone()),
        end_time: Set(h.end_time),
        placed_by: Set(h.placed_by.clone()),
        create_time: Set(h.create_time),
        release_time: Set(h.release_time),
        released_by: Set(h.released_by.clone()),
        release_reason: Set(h.release_reason.clone()),
    }
}

fn hold_from_row(m: hold::Model) -> Result<Hold, RetentionError> {
    Ok(Hold {
        scope: HoldScope::parse(&m.scope).ok_or_else(|| corrupt("holds.scope"))?,
        tenant_id: m.tenant_id,
        hold_id: m.hold_id,
        subject_id: m.subject_id,
        reason: m.reason,
        end_time: m.end_time,
        placed_by: m.placed_by,
        create_time: m.create_time,
        release_time: m.release_time,
        released_by: m.released_by,
        release_reason: m.release_reason,
    })
}

/// Marks RUNNING sweeps (of `tenant`, or of every tenant) whose lease expired at `now`
/// as INTERRUPTED.
async fn expire_runs(db: &Db, tenant: Option<&str>, now: DateTime<Utc>) -> Result<u64, DbErr> {
    let mut q = sweep_run::Entity::update_many()
        .col_expr(
            sweep_run::Column::Status,
            Expr::value(SweepStatus::Interrupted.as_str()),
        )
        .col_expr(sweep_run::Column::Error, Expr::value(LEASE_EXPIRED))
        .col_expr(sweep_run::Column::EndTime, Expr::value(Some(now)))
        .filter(sweep_run::Column::Status.eq(SweepStatus::Running.as_str()))
        .filter(sweep_run::Column::HeartbeatTime.lt(now - SWEEP_LEASE));
    if let Some(t) = tenant {
        q = q.filter(sweep_run::Column::TenantId.eq(t));
    }
    Ok(q.exec(db).await?.rows_affected)
}

/// Claims the scheduled interval starting at `slot` for `tenant`: true unless this or a
/// later interval was claimed already. Two conditional writes, each atomic (a
/// concurrent claimer waits on the row and then finds the condition false).
async fn claim_slot(
    txn: &DatabaseTransaction,
    tenant: &str,
    slot: DateTime<Utc>,
    run_id: &str,
) -> Result<bool, DbErr> {
    let now = vern_kit::time::now();
    let advanced = sweep_slot::Entity::update_many()
        .col_expr(sweep_slot::Column::SlotStart, Expr::value(slot))
        .col_expr(sweep_slot::Column::SweepRunId, Expr::value(run_id))
        .col_expr(sweep_slot::Column::ClaimTime, Expr::value(now))
        .filter(sweep_slot::Column::TenantId.eq(tenant))
        .filter(sweep_slot::Column::SlotStart.lt(slot))
        .exec(txn)
        .await?
        .rows_affected;
    if advanced == 1 {
        return Ok(true);
    }
    let inserted = sweep_slot::Entity::insert(sweep_slot::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        slot_start: Set(slot),
        sweep_run_id: Set(run_id.to_owned()),
        claim_time: Set(now),
    })
    .on_conflict_do_nothing_on([sweep_slot::Column::TenantId])
    .exec_without_returning(txn)
    .await?;
    Ok(matches!(inserted, sea_orm::TryInsertResult::Inserted(1)))
}

fn run_active(r: &SweepRun) -> Result<sweep_run::ActiveModel, DbErr> {
    Ok(sweep_run::ActiveModel {
        sweep_run_id: Set(r.sweep_run_id.clone()),
        tenant_id: Set(r.tenant_id.clone()),
        dry_run: Set(r.dry_run),
        trigger: Set(r.trigger.as_str().to_owned()),
        status: Set(r.status.as_str().to_owned()),
        requested_by: Set(r.requested_by.clone()),
        start_time: Set(r.start_time),
        end_time: Set(r.end_time),
        heartbeat_time: Set(r.start_time),
        policy_results: Set(json(&r.policy_results)?),
        items: Set(json(&r.items)?),
        items_truncated: Set(r.items_truncated),
        held_subject_count: Set(r.held_subject_count),
        error: Set(r.error.clone()),
    })
}

fn run_from_row(m: sweep_run::Model, with_items: bool) -> Result<SweepRun, RetentionError> {
    Ok(SweepRun {
        trigger: SweepTrigger::parse(&m.trigger).ok_or_else(|| corrupt("sweep_runs.trigger"))?,
        status: SweepStatus::parse(&m.status).ok_or_else(|| corrupt("sweep_runs.status"))?,
        policy_results: from_json(&m.policy_results)?,
        items: if with_items {
            from_json(&m.items)?
        } else {
            vec![]
        },
        tenant_id: m.tenant_id,
        sweep_run_id: m.sweep_run_id,
        dry_run: m.dry_run,
        requested_by: m.requested_by,
        start_time: m.start_time,
        end_time: m.end_time,
        items_truncated: m.items_truncated,
        held_subject_count: m.held_subject_count,
        error: m.error,
    })
}
