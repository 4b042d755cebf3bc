//! Persistence of the chains: events, chain heads and signed checkpoints. Every query is
//! scoped by tenant.
//!
//! An append runs in one transaction: it locks the tenant's `chain_heads` row (on
//! SQLite the first write takes the database's write lock; on PostgreSQL the row lock),
//! skips events already chained, inserts the new ones with their seq and hashes,
//! optionally a checkpoint, and moves the head with compare-and-set on `seq`.

pub mod entities;
pub mod migration;

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
    TryInsertResult,
};
use vern_kit::db::Db;
use vern_kit::db::{DbFailure, DbTarget, classify};

use crate::chain::{self, ChainedEvent, Checkpoint, Hash, ZERO_HASH};
use crate::domain::{AppendOutcome, AppendResult, EventFilter, StoredEvent};
use crate::error::AuditError;
use crate::keys::AuditSigner;
use entities::{audit_event, chain_head, checkpoint};

pub use migration::Migrator;

/// Rows per INSERT statement (21 parameters each: SQLite allows 32,766, PostgreSQL
/// 65,535).
const INSERT_CHUNK: usize = 1000;
/// Ids per `IN (…)` lookup.
const LOOKUP_CHUNK: usize = 1000;

/// A page of results and whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// True when another page exists.
    pub more: bool,
}

/// A tenant's chain head as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Seq of the last event (0: empty chain).
    pub seq: i64,
    /// Its hash (zeros for an empty chain).
    pub hash: Hash,
    /// Seq of the latest checkpoint (0: none).
    pub checkpoint_seq: i64,
}

impl Head {
    const EMPTY: Head = Head {
        seq: 0,
        hash: ZERO_HASH,
        checkpoint_seq: 0,
    };
}

/// The audit service's store.
#[derive(Clone, Debug)]
pub struct AuditStore {
    db: Db,
}

impl AuditStore {
    /// Connects to `target` and runs the migrations.
    pub async fn open(target: &DbTarget) -> Result<Self, DbErr> {
        let db = vern_kit::db::connect_and_migrate::<Migrator>(target).await?;
        Ok(Self { db })
    }

    /// The connection.
    pub fn connection(&self) -> &Db {
        &self.db
    }

    /// Appends the validated `events` (seq 0) to `tenant`'s chain in one transaction.
    /// Events already chained (by event id, also within the batch) are reported as
    /// duplicates with their seq. Signs a checkpoint of the new head when at least
    /// `checkpoint_every` events follow the latest one. [`AuditError::Conflict`] when
    /// another writer moved the head meanwhile: retry.
    ///
    /// Most batches are new events, so the first attempt chains every event and
    /// inserts with `ON CONFLICT (tenant_id, event_id) DO NOTHING`: if every row went
    /// in, no lookup was needed. If some were already chained (a redelivery), that
    /// transaction is rolled back and a second one looks the batch's ids up first.
    pub async fn append(
        &self,
        tenant: &str,
        events: &[chain::Event],
        signer: &AuditSigner,
        checkpoint_every: i64,
    ) -> Result<AppendOutcome, AuditError> {
        if let Some(out) = self
            .append_once(tenant, events, signer, checkpoint_every, false)
            .await?
        {
            return Ok(out);
        }
        self.append_once(tenant, events, signer, checkpoint_every, true)
            .await?
            .ok_or(AuditError::Conflict)
    }

    /// One append transaction; `None` when, without `look_up`, an event turned out to
    /// be chained already (nothing was committed).
    async fn append_once(
        &self,
        tenant: &str,
        events: &[chain::Event],
        signer: &AuditSigner,
        checkpoint_every: i64,
        look_up: bool,
    ) -> Result<Option<AppendOutcome>, AuditError> {
        let txn = self.db.begin().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            // Every statement here has one right plan whatever its parameters (primary
            // key, unique index, a 500-row VALUES list). Without this, each pooled
            // connection plans the 10,500-parameter INSERT afresh for its first five
            // executions (about 40 ms each, measured) before it settles on the generic
            // plan, and a chain without statistics yet gets a custom plan for the id
            // lookup that filters the tenant's whole chain.
            txn.execute_unprepared("SET LOCAL plan_cache_mode = force_generic_plan")
                .await?;
        }
        let head = lock_head(&txn, tenant).await?;
        let existing = if look_up {
            existing_ids(&txn, tenant, events).await?
        } else {
            HashMap::new()
        };
        let now = vern_kit::time::now().timestamp_micros();
        let mut seen: HashMap<&str, i64> = HashMap::with_capacity(events.len());
        let mut results = Vec::with_capacity(events.len());
        let mut rows = Vec::with_capacity(events.len());
        let (mut seq, mut prev) = (head.seq, head.hash);
        let mut scratch = Vec::with_capacity(512);
        for e in events {
            let known = existing
                .get(e.event_id.as_str())
                .or_else(|| seen.get(e.event_id.as_str()));
            if let Some(&s) = known {
                results.push(AppendResult {
                    event_id: e.event_id.clone(),
                    seq: s,
                    duplicate: true,
                });
                continue;
            }
            seq += 1;
            let mut ev = e.clone();
            ev.seq = seq;
            let hash = chain::next_hash(&prev, &ev, &mut scratch);
            seen.insert(e.event_id.as_str(), seq);
            results.push(AppendResult {
                event_id: e.event_id.clone(),
                seq,
                duplicate: false,
            });
            rows.push(event_row(ev, prev, hash, now)?);
            prev = hash;
        }
        let appended = rows.len();
        let mut inserted = 0;
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(INSERT_CHUNK));
            let want = rows.len() as u64;
            let insert = audit_event::Entity::insert_many(rows);
            let got = if look_up {
                insert
                    .exec_without_returning(&txn)
                    .await
                    .map_err(conflict_or_db)?
            } else {
                match insert
                    .on_conflict_do_nothing_on([
                        audit_event::Column::TenantId,
                        audit_event::Column::EventId,
                    ])
                    .exec_without_returning(&txn)
                    .await
                    .map_err(conflict_or_db)?
                {
                    TryInsertResult::Inserted(k) => k,
                    TryInsertResult::Conflicted | TryInsertResult::Empty => 0,
                }
            };
            inserted += got;
            if got != want {
                break;
            }
            rows = rest;
        }
        if inserted != appended as u64 {
            // Some event was chained before: roll back (drop) and look ids up.
            return Ok(None);
        }
        let mut made = None;
        let mut checkpoint_seq = head.checkpoint_seq;
        if seq > head.seq && seq - head.checkpoint_seq >= checkpoint_every {
            let cp = Checkpoint::sign(signer.signing_key(), tenant, seq, prev, now);
            insert_checkpoint(&txn, &cp).await?;
            checkpoint_seq = seq;
            made = Some(cp);
        }
        if seq > head.seq {
            move_head(&txn, tenant, head.seq, seq, prev, checkpoint_seq, now).await?;
        }
        txn.commit().await?;
        Ok(Some(AppendOutcome {
            duplicates: results.len() - appended,
            appended,
            results,
            checkpoint: made,
        }))
    }

    /// Signs and stores a checkpoint of `tenant`'s head if events follow the latest
    /// checkpoint; `None` otherwise.
    pub async fn checkpoint_head(
        &self,
        tenant: &str,
        signer: &AuditSigner,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let txn = self.db.begin().await?;
        let head = lock_head(&txn, tenant).await?;
        if head.seq <= head.checkpoint_seq {
            return Ok(None);
        }
        let now = vern_kit::time::now().timestamp_micros();
        let cp = Checkpoint::sign(signer.signing_key(), tenant, head.seq, head.hash, now);
        insert_checkpoint(&txn, &cp).await?;
        move_head(&txn, tenant, head.seq, head.seq, head.hash, head.seq, now).await?;
        txn.commit().await?;
        Ok(Some(cp))
    }

    /// Tenants with events after their latest checkpoint.
    pub async fn tenants_needing_checkpoint(&self) -> Result<Vec<String>, AuditError> {
        Ok(chain_head::Entity::find()
            .select_only()
            .column(chain_head::Column::TenantId)
            .filter(
                Expr::col(chain_head::Column::Seq).gt(Expr::col(chain_head::Column::CheckpointSeq)),
            )
            .order_by_asc(chain_head::Column::TenantId)
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }

    /// The recorded head of `tenant`'s chain (empty when it has none).
    pub async fn head(&self, tenant: &str) -> Result<Head, AuditError> {
        match chain_head::Entity::find_by_id(tenant.to_owned())
            .one(&self.db)
            .await?
        {
            Some(row) => head_from_row(&row),
            None => Ok(Head::EMPTY),
        }
    }

    /// The highest seq stored for `tenant` (0 when none).
    pub async fn max_seq(&self, tenant: &str) -> Result<i64, AuditError> {
        let max: Option<Option<i64>> = audit_event::Entity::find()
            .select_only()
            .column_as(audit_event::Column::Seq.max(), "max_seq")
            .filter(audit_event::Column::TenantId.eq(tenant))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(max.flatten().unwrap_or(0))
    }

    /// The stored hash of the event at `seq`, if it exists and is readable.
    pub async fn hash_at(&self, tenant: &str, seq: i64) -> Result<Option<Hash>, AuditError> {
        let row: Option<Vec<u8>> = audit_event::Entity::find()
            .select_only()
            .column(audit_event::Column::Hash)
            .filter(audit_event::Column::TenantId.eq(tenant))
            .filter(audit_event::Column::Seq.eq(seq))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(row.and_then(|h| h.try_into().ok()))
    }

    /// One event by id.
    pub async fn get_event(
        &self,
        tenant: &str,
        event_id: &str,
    ) -> Result<Option<StoredEvent>, AuditError> {
        audit_event::Entity::find()
            .filter(audit_event::Column::TenantId.eq(tenant))
            .filter(audit_event::Column::EventId.eq(event_id))
            .one(&self.db)
            .await?
            .map(|r| stored_from_row(r).map_err(|_| AuditError::Corrupt("audit_events")))
            .transpose()
    }

    /// A page of events matching `filter`, in seq order after `after_seq`.
    pub async fn query(
        &self,
        tenant: &str,
        filter: &EventFilter,
        after_seq: i64,
        limit: u64,
    ) -> Result<Page<StoredEvent>, AuditError> {
        use audit_event::Column as C;
        let mut q = audit_event::Entity::find()
            .filter(C::TenantId.eq(tenant))
            .filter(C::Seq.gt(after_seq))
            .order_by_asc(C::Seq);
        if let Some(s) = &filter.subject_id {
            q = q.filter(C::SubjectId.eq(s.as_str()));
        }
        if let Some(a) = &filter.actor {
            q = q.filter(C::ActorSub.eq(a.as_str()));
        }
        if let Some(a) = &filter.action {
            q = q.filter(C::Action.eq(a.as_str()));
        }
        if let Some(t) = filter.from_micros {
            q = q.filter(C::OccurTimeUs.gte(t));
        }
        if let Some(t) = filter.to_micros {
            q = q.filter(C::OccurTimeUs.lt(t));
        }
        if let Some(o) = filter.outcome {
            q = q.filter(C::Outcome.eq(o.as_str()));
        }
        if let Some(r) = &filter.resource_id {
            q = q.filter(C::ResourceId.eq(r.as_str()));
        }
        let rows = q.limit(limit + 1).all(&self.db).await?;
        let more = rows.len() as u64 > limit;
        let items = rows
            .into_iter()
            .take(limit as usize)
            .map(|r| stored_from_row(r).map_err(|_| AuditError::Corrupt("audit_events")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, more })
    }

    /// Up to `limit` events with `from_seq <= seq <= to_seq`, in seq order; each row
    /// decoded, or `Err(seq)` when it cannot be read.
    pub async fn events_range(
        &self,
        tenant: &str,
        from_seq: i64,
        to_seq: i64,
        limit: u64,
    ) -> Result<Vec<Result<StoredEvent, i64>>, AuditError> {
        use audit_event::Column as C;
        let rows = audit_event::Entity::find()
            .filter(C::TenantId.eq(tenant))
            .filter(C::Seq.gte(from_seq))
            .filter(C::Seq.lte(to_seq))
            .order_by_asc(C::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let seq = r.seq;
                stored_from_row(r).map_err(|_| seq)
            })
            .collect())
    }

    /// Checkpoints with `from_seq <= seq <= to_seq`, oldest first.
    pub async fn checkpoints_range(
        &self,
        tenant: &str,
        from_seq: i64,
        to_seq: i64,
    ) -> Result<Vec<Checkpoint>, AuditError> {
        checkpoint::Entity::find()
            .filter(checkpoint::Column::TenantId.eq(tenant))
            .filter(checkpoint::Column::Seq.gte(from_seq))
            .filter(checkpoint::Column::Seq.lte(to_seq))
            .order_by_asc(checkpoint::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(checkpoint_from_row)
            .collect()
    }

    /// The checkpoint at `seq`, or the latest when `seq` is 0.
    pub async fn checkpoint(
        &self,
        tenant: &str,
        seq: i64,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let mut q = checkpoint::Entity::find().filter(checkpoint::Column::TenantId.eq(tenant));
        q = if seq == 0 {
            q.order_by_desc(checkpoint::Column::Seq)
        } else {
            q.filter(checkpoint::Column::Seq.eq(seq))
        };
        q.one(&self.db).await?.map(checkpoint_from_row).transpose()
    }

    /// A page of checkpoints, newest first, before `before_seq` (if set).
    pub async fn list_checkpoints(
        &self,
        tenant: &str,
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<Page<Checkpoint>, AuditError> {
        let mut q = checkpoint::Entity::find()
            .filter(checkpoint::Column::TenantId.eq(tenant))
            .order_by_desc(checkpoint::Column::Seq);
        if let Some(b) = before_seq {
            q = q.filter(checkpoint::Column::Seq.lt(b));
        }
        let rows = q.limit(limit + 1).all(&self.db).await?;
        let more = rows.len() as u64 > limit;
        let items = rows
            .into_iter()
            .take(limit as usize)
            .map(checkpoint_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, more })
    }
}

/// Makes sure the tenant's head row exists and locks it for this transaction: the
/// insert takes SQLite's write lock at once (no read-to-write upgrade to fail later);
/// on PostgreSQL `FOR UPDATE` holds the row until commit.
async fn lock_head(txn: &DatabaseTransaction, tenant: &str) -> Result<Head, AuditError> {
    chain_head::Entity::insert(chain_head::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        seq: Set(0),
        head_hash: Set(ZERO_HASH.to_vec()),
        checkpoint_seq: Set(0),
        update_time_us: Set(0),
    })
    .on_conflict_do_nothing_on([chain_head::Column::TenantId])
    .exec_without_returning(txn)
    .await?;
    let row = chain_head::Entity::find_by_id(tenant.to_owned())
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(AuditError::Conflict)?;
    head_from_row(&row)
}

/// Compare-and-set of the head: fails with [`AuditError::Conflict`] unless the head is
/// still at `expected_seq`.
async fn move_head(
    txn: &DatabaseTransaction,
    tenant: &str,
    expected_seq: i64,
    seq: i64,
    hash: Hash,
    checkpoint_seq: i64,
    now: i64,
) -> Result<(), AuditError> {
    use chain_head::Column as C;
    let res = chain_head::Entity::update_many()
        .col_expr(C::Seq, Expr::value(seq))
        .col_expr(C::HeadHash, Expr::value(hash.to_vec()))
        .col_expr(C::CheckpointSeq, Expr::value(checkpoint_seq))
        .col_expr(C::UpdateTimeUs, Expr::value(now))
        .filter(C::TenantId.eq(tenant))
        .filter(C::Seq.eq(expected_seq))
        .exec(txn)
        .await?;
    if res.rows_affected != 1 {
        return Err(AuditError::Conflict);
    }
    Ok(())
}

async fn insert_checkpoint(txn: &DatabaseTransaction, cp: &Checkpoint) -> Result<(), AuditError> {
    checkpoint::Entity::insert(checkpoint::ActiveModel {
        tenant_id: Set(cp.tenant_id.clone()),
        seq: Set(cp.seq),
        head_hash: Set(cp.head_hash.to_vec()),
        checkpoint_time_us: Set(cp.checkpoint_micros),
        key_id: Set(cp.key_id.clone()),
        signature: Set(cp.signature.to_vec()),
    })
    .exec_without_returning(txn)
    .await
    .map_err(conflict_or_db)?;
    Ok(())
}

/// The seqs of the batch's event ids already in the chain.
///
/// On PostgreSQL the ids go in one text parameter split by `string_to_array`: a
/// prepared `IN ($2, …, $501)` gets a generic plan that filters the tenant's whole
/// chain instead of probing the (tenant_id, event_id) index (measured: 650 ms per
/// 500-id lookup at 60k events, against 2 ms). Event ids are validated UUIDs, so a
/// comma never occurs in one.
async fn existing_ids(
    txn: &impl ConnectionTrait,
    tenant: &str,
    events: &[chain::Event],
) -> Result<HashMap<String, i64>, AuditError> {
    let mut found = HashMap::new();
    for chunk in events.chunks(LOOKUP_CHUNK) {
        let rows: Vec<(String, i64)> = if txn.get_database_backend() == DbBackend::Postgres {
            let ids = chunk
                .iter()
                .map(|e| e.event_id.as_str())
                .collect::<Vec<_>>()
                .join(",");
            let stmt = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT event_id, seq FROM audit_events \
                 WHERE tenant_id = $1 AND event_id = ANY(string_to_array($2, ','))",
                [tenant.into(), ids.into()],
            );
            txn.query_all_raw(stmt)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("", "event_id")?, r.try_get("", "seq")?)))
                .collect::<Result<_, DbErr>>()?
        } else {
            audit_event::Entity::find()
                .select_only()
                .column(audit_event::Column::EventId)
                .column(audit_event::Column::Seq)
                .filter(audit_event::Column::TenantId.eq(tenant))
                .filter(
                    audit_event::Column::EventId.is_in(chunk.iter().map(|e| e.event_id.as_str())),
                )
                .into_tuple()
                .all(txn)
                .await?
        };
        found.extend(rows);
    }
    Ok(found)
}

/// A unique violation means a concurrent writer won: retry.
fn conflict_or_db(e: DbErr) -> AuditError {
    if classify(&e) == DbFailure::UniqueViolation {
        AuditError::Conflict
    } else {
        AuditError::Db(e)
    }
}

fn json(list: &[String]) -> Result<String, AuditError> {
    serde_json::to_string(list).map_err(|_| AuditError::Corrupt("audit_events"))
}

fn event_row(
    e: chain::Event,
    prev: Hash,
    hash: Hash,
    now: i64,
) -> Result<audit_event::ActiveModel, AuditError> {
    Ok(audit_event::ActiveModel {
        actor_roles: Set(json(&e.actor_roles)?),
        changed_fields: Set(json(&e.changed_fields)?),
        tenant_id: Set(e.tenant_id),
        seq: Set(e.seq),
        event_id: Set(e.event_id),
        occur_time_us: Set(e.occur_micros),
        actor_sub: Set(e.actor_sub),
        actor_client: Set(e.actor_client),
        action: Set(e.action),
        service: Set(e.service),
        subject_id: Set(e.subject_id),
        resource_type: Set(e.resource_type),
        resource_id: Set(e.resource_id),
        outcome: Set(e.outcome),
        status_code: Set(e.status_code),
        request_id: Set(e.request_id),
        trace_id: Set(e.trace_id),
        detail: Set(e.detail),
        prev_hash: Set(prev.to_vec()),
        hash: Set(hash.to_vec()),
        append_time_us: Set(now),
    })
}

/// A stored row that does not decode.
#[derive(Debug)]
pub struct Unreadable;

fn stored_from_row(r: audit_event::Model) -> Result<StoredEvent, Unreadable> {
    let actor_roles: Vec<String> = serde_json::from_str(&r.actor_roles).map_err(|_| Unreadable)?;
    let changed_fields: Vec<String> =
        serde_json::from_str(&r.changed_fields).map_err(|_| Unreadable)?;
    Ok(StoredEvent {
        chained: ChainedEvent {
            prev_hash: r.prev_hash.try_into().map_err(|_| Unreadable)?,
            hash: r.hash.try_into().map_err(|_| Unreadable)?,
            event: chain::Event {
                tenant_id: r.tenant_id,
                seq: r.seq,
                event_id: r.event_id,
                occur_micros: r.occur_time_us,
                actor_sub: r.actor_sub,
                actor_roles,
                actor_client: r.actor_client,
                action: r.action,
                service: r.service,
                subject_id: r.subject_id,
                resource_type: r.resource_type,
                resource_id: r.resource_id,
                outcome: r.outcome,
                status_code: r.status_code,
                changed_fields,
                request_id: r.request_id,
                trace_id: r.trace_id,
                detail: r.detail,
            },
        },
        append_micros: r.append_time_us,
    })
}

fn head_from_row(r: &chain_head::Model) -> Result<Head, AuditError> {
    Ok(Head {
        seq: r.seq,
        hash: r
            .head_hash
            .clone()
            .try_into()
            .map_err(|_| AuditError::Corrupt("chain_heads"))?,
        checkpoint_seq: r.checkpoint_seq,
    })
}

/// A checkpoint row. A hash or signature of the wrong length (a tampered row) reads as
/// zeros, so verification reports it instead of failing the call.
fn checkpoint_from_row(r: checkpoint::Model) -> Result<Checkpoint, AuditError> {
    Ok(Checkpoint {
        head_hash: r.head_hash.try_into().unwrap_or([0; 32]),
        signature: r.signature.try_into().unwrap_or([0; 64]),
        tenant_id: r.tenant_id,
        seq: r.seq,
        checkpoint_micros: r.checkpoint_time_us,
        key_id: r.key_id,
    })
}
