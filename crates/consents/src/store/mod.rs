//! Persistence of consent events and the two projections Check reads: the consent state
//! per (subject, purpose) and the state of each subject. Every query is scoped by tenant.

pub mod cache;
pub mod entities;
pub mod migration;
mod purposes;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, JoinType, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use vern_kit::ApiError;
use vern_kit::db::Db;
use vern_kit::db::{DbFailure, DbTarget, classify};
use vern_kit::idempotency::{self, Key, commit_once};
use vern_seal::crypto::DataKey;
use vern_seal::keyring::Keyring;

use crate::domain::{
    Channel, CompellingGrounds, ConsentAction, ConsentEvent, ConsentState, GroundsDecision,
    LatestEvent, SubjectChange, SubjectStatus, status_for,
};
use crate::error::ConsentError;
use crate::seal::Sealer;
use entities::{consent_event, consent_key, consent_state, objection_decision, subject_state};

pub use cache::CacheStats;
pub use migration::Migrator;

/// A page of results and whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// True when another page exists.
    pub more: bool,
}

/// A stored consent state with the details shown by GetConsentState.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    /// Subject.
    pub subject_id: String,
    /// Purpose key.
    pub purpose: String,
    /// The derived state.
    pub state: ConsentState,
    /// Notice version of the latest event.
    pub notice_version: String,
    /// Channel of the latest event.
    pub channel: Channel,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// The compelling-grounds decision overriding the standing objection, when there
    /// is one (attached by the use cases that answer with it).
    pub grounds: Option<GroundsDecision>,
}

/// What Check needs about one subject: its state and its consent state for the purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRow {
    /// The subject's state (from the subjects service's notifications).
    pub subject: SubjectStatus,
    /// The consent state for the purpose (default when nothing recorded).
    pub consent: ConsentState,
}

/// The stored idempotency answer of RecordConsent: ids only, never the evidence. A
/// retry reads the event again by id (and opens its seal). Answers stored before
/// m0002 (the whole event) read as this too: unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    /// The recorded event.
    pub event_id: String,
    /// Its subject.
    pub subject_id: String,
}

/// The stored idempotency answer of RecordCompellingGrounds: ids only, never the
/// reason (a statement about the subject's case). A retry reads the decision again by
/// id (and opens its seal; once the subject is erased its reason reads `""`). Answers
/// stored before m0006 (the whole decision) read as this too: unknown fields are
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroundsRecorded {
    /// The recorded decision.
    pub decision_id: String,
    /// Its subject.
    pub subject_id: String,
}

/// Attempts at a read-modify-write of one consent state before giving up.
const MAX_ATTEMPTS: usize = 5;

/// The consents service's store.
#[derive(Clone, Debug)]
pub struct ConsentStore {
    db: Db,
    sealer: Sealer,
    /// What Check reads, in memory, see [`cache`]. Every write to `subject_states` or
    /// `consent_states` must go through [`ConsentStore::write_then_invalidate`] and, in
    /// its transaction, [`publish_change`].
    cache: Option<Arc<cache::CheckCache>>,
    /// PostgreSQL: how the other replicas' writes reach the cache, and whether it may
    /// be used now ([`vern_kit::notify`]). `None` on SQLite, written by this process
    /// alone.
    listener: Option<Arc<vern_kit::notify::Listener>>,
    /// How Checks were answered ([`ConsentStore::cache_stats`]); kept with or without a
    /// cache, so that a cache never used shows.
    check_counts: Arc<cache::Counters>,
}

/// The channel on which writes of Check's state are announced to every replica.
pub const CHANGES_CHANNEL: &str = "vern_consents_check";

/// The most a Check answered from the cache may lag a write committed on another
/// replica (PostgreSQL). On the writer's own replica an acknowledged write is never
/// answered stale.
pub const CACHE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// Announces a change of `subject`'s Check state to every replica, in the writing
/// transaction (ids only: never personal data).
async fn publish_change(
    txn: &impl ConnectionTrait,
    tenant: &str,
    subject: &str,
) -> Result<(), DbErr> {
    vern_kit::notify::publish(txn, CHANGES_CHANNEL, &format!("{tenant}/{subject}")).await
}

impl ConsentStore {
    /// One page of a master key rotation over the subjects' consent data keys.
    pub async fn rewrap_data_keys(
        &self,
        request: &vern_proto::common::v1::RewrapDataKeysRequest,
    ) -> Result<vern_proto::common::v1::RewrapDataKeysResponse, ApiError> {
        consent_keys()
            .rewrap(&self.db, self.sealer.keyring(), request)
            .await
    }

    /// How many consent data keys each key version wraps.
    pub async fn count_data_keys(
        &self,
    ) -> Result<vern_proto::common::v1::CountDataKeysResponse, ApiError> {
        consent_keys().count(&self.db, self.sealer.keyring()).await
    }

    /// Connects to `target` and runs the migrations; `keyring` protects the evidence.
    pub async fn open(target: &DbTarget, keyring: Keyring) -> Result<Self, DbErr> {
        Self::open_with(target, keyring, true).await
    }

    /// Like [`ConsentStore::open`]; `listen_notify` false (PostgreSQL without
    /// LISTEN/NOTIFY, e.g. behind a transaction-mode pooler) leaves the Check cache off
    /// on PostgreSQL: other replicas' writes could not reach it.
    pub async fn open_with(
        target: &DbTarget,
        keyring: Keyring,
        listen_notify: bool,
    ) -> Result<Self, DbErr> {
        let db = vern_kit::db::connect_and_migrate::<Migrator>(target).await?;
        let cache = Arc::new(cache::CheckCache::new(cache::MAX_SUBJECTS));
        let postgres = db.get_database_backend() == sea_orm::DbBackend::Postgres;
        // PostgreSQL may be shared by replicas: their writes reach the cache as
        // notifications (SQLite: one file that only this process writes).
        let listener = if postgres && !listen_notify {
            None
        } else {
            let cache = cache.clone();
            vern_kit::notify::Listener::spawn(&db, CHANGES_CHANNEL, CACHE_MAX_AGE, move |i| match i
            {
                vern_kit::notify::Invalidation::Key(key) => {
                    if let Some((tenant, subject)) = key.split_once('/') {
                        cache.invalidate(tenant, subject);
                    }
                }
                vern_kit::notify::Invalidation::All => cache.clear(),
            })
            .map(Arc::new)
        };
        Ok(Self {
            db,
            sealer: Sealer::new(keyring),
            cache: (!postgres || listener.is_some()).then_some(cache),
            listener,
            check_counts: Arc::default(),
        })
    }

    /// The Check cache if it may be used now: always on SQLite; on PostgreSQL while
    /// the other replicas' writes are known up to [`CACHE_MAX_AGE`] ago.
    fn usable_cache(&self) -> Option<&cache::CheckCache> {
        let cache = self.cache.as_deref()?;
        match &self.listener {
            None => Some(cache),
            Some(l) => l.freshness().is_fresh().then_some(cache),
        }
    }

    /// How this store's Checks and BatchChecks were answered so far, per subject: from
    /// the Check cache or by a database read.
    pub fn cache_stats(&self) -> CacheStats {
        self.check_counts.stats()
    }

    /// Subjects the Check cache holds now.
    pub fn cached_subjects(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    /// Waits (up to `wait`) until the Check cache may be used; true if it may.
    pub async fn cache_ready(&self, wait: std::time::Duration) -> bool {
        if self.cache.is_none() {
            return false;
        }
        let until = tokio::time::Instant::now() + wait;
        while self.usable_cache().is_none() {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        true
    }

    /// The sealer of this store's personal data.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Runs `write` (a change of `subject`'s `subject_states` or `consent_states`) and
    /// then invalidates the subject's cached Check rows. With a cache the write runs in
    /// a task of its own, carrying the call's audit scope: a cancelled call still
    /// finishes its write and only then invalidates, so no commit can land after the
    /// invalidation and leave a stale answer cached.
    async fn write_then_invalidate<T, F>(
        &self,
        tenant: &str,
        subject: &str,
        write: F,
    ) -> Result<T, ConsentError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, ConsentError>> + Send + 'static,
    {
        let Some(cache) = self.cache.clone() else {
            return write.await;
        };
        let (tenant, subject) = (tenant.to_owned(), subject.to_owned());
        vern_kit::audit::in_own_task(async move {
            let result = write.await;
            cache.invalidate(&tenant, &subject);
            result
        })
        .await
        .map_err(|_| ConsentError::Api(ApiError::Internal("consent write task failed")))?
    }

    /// The connection.
    pub fn connection(&self) -> &Db {
        &self.db
    }

    /// A stored answer to an earlier call with the same request id.
    pub async fn replay<R: serde::de::DeserializeOwned>(
        &self,
        key: Option<&Key>,
    ) -> Result<Option<R>, ConsentError> {
        Ok(idempotency::replay(&self.db, key).await?)
    }

    /// Appends `event` (its evidence sealed under the subject's data key, created on
    /// first use) and folds it into the consent state, in one transaction; the stored
    /// idempotency answer holds ids only. Retries when a concurrent event for the same
    /// (subject, purpose) wins the race. Refused if the projection has the subject
    /// erased by the time the transaction runs (an erasure racing the call).
    pub async fn record_event(
        &self,
        event: &ConsentEvent,
        key: Option<&Key>,
    ) -> Result<ConsentEvent, ConsentError> {
        let (db, event, key) = (self.db.clone(), event.clone(), key.cloned());
        let sealer = self.sealer.clone();
        let (tenant, subject) = (event.tenant_id.clone(), event.subject_id.clone());
        let answer = Recorded {
            event_id: event.event_id.clone(),
            subject_id: event.subject_id.clone(),
        };
        let recorded = {
            let event = event.clone();
            self.write_then_invalidate(&tenant, &subject, async move {
                let mut attempt = 0;
                let result = loop {
                    attempt += 1;
                    let (e, sealer) = (event.clone(), sealer.clone());
                    let result = commit_once(&db, key.as_ref(), answer.clone(), move |txn| {
                        Box::pin(async move {
                            // SQLite: the transaction holds the write lock from BEGIN.
                            let row = sealed_event_row(txn, &sealer, &e).await?;
                            row.insert(txn).await?;
                            refuse_erased(txn, &e.tenant_id, &e.subject_id).await?;
                            fold_into_state(txn, &e).await
                        })
                    })
                    .await;
                    match result {
                        Err(ApiError::Aborted(_)) if attempt < MAX_ATTEMPTS => continue,
                        other => break other,
                    }
                };
                Ok(result?)
            })
            .await?
        };
        if recorded.event_id == event.event_id {
            return Ok(event);
        }
        // A concurrent call with the same request id won: its event is the answer.
        self.event(&tenant, &recorded.event_id)
            .await?
            .ok_or(ConsentError::Api(ApiError::Internal(
                "recorded event missing",
            )))
    }

    /// One event by id, its evidence opened (empty once the subject is erased).
    pub async fn event(
        &self,
        tenant: &str,
        event_id: &str,
    ) -> Result<Option<ConsentEvent>, ConsentError> {
        let Some(row) = consent_event::Entity::find_by_id(event_id.to_owned())
            .filter(consent_event::Column::TenantId.eq(tenant))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let mut events = self
            .open_events(tenant, &row.subject_id.clone(), vec![row])
            .await?;
        Ok(events.pop())
    }

    /// Rows of one subject as events, their evidence opened with the subject's data
    /// key. Without a key (the subject was erased) sealed evidence reads as empty.
    async fn open_events(
        &self,
        tenant: &str,
        subject_id: &str,
        rows: Vec<consent_event::Model>,
    ) -> Result<Vec<ConsentEvent>, ConsentError> {
        let dek = if rows.iter().any(|r| r.evidence_ct.is_some()) {
            subject_key(&self.db, &self.sealer, tenant, subject_id).await?
        } else {
            None
        };
        rows.into_iter()
            .map(|mut m| {
                let sealed = m.evidence_ct.take();
                let mut e = event_from_row(m)?;
                if let Some(ct) = sealed {
                    e.evidence = match &dek {
                        Some(k) => self.sealer.open_evidence(
                            k,
                            &e.tenant_id,
                            &e.subject_id,
                            &e.event_id,
                            &ct,
                        )?,
                        None => String::new(),
                    };
                }
                Ok(e)
            })
            .collect()
    }

    /// Seals the plaintext evidence of rows written before m0002 and the plaintext
    /// compelling-grounds reasons of rows written before m0006 (blanks them for erased
    /// subjects), and reduces stored RecordConsent and RecordCompellingGrounds answers of
    /// those times (whole events and decisions) to ids. Run once at start; a no-op once
    /// done. Returns the number of rows changed.
    pub async fn seal_legacy(&self) -> Result<u64, ConsentError> {
        const PAGE: u64 = 500;
        let mut changed = 0;
        loop {
            let rows = consent_event::Entity::find()
                .filter(consent_event::Column::Evidence.ne(""))
                .order_by_asc(consent_event::Column::TenantId)
                .order_by_asc(consent_event::Column::SubjectId)
                .limit(PAGE)
                .all(&self.db)
                .await?;
            if rows.is_empty() {
                break;
            }
            let groups = by_subject(rows, |r| (r.tenant_id.as_str(), r.subject_id.as_str()));
            for ((tenant, subject), rows) in groups {
                let txn = begin(&self.db).await?;
                let dek = key_unless_erased(&txn, &self.sealer, &tenant, &subject).await?;
                for r in rows {
                    let ct = dek.as_ref().map(|k| {
                        self.sealer
                            .seal_evidence(k, &tenant, &subject, &r.event_id, &r.evidence)
                    });
                    changed += consent_event::Entity::update_many()
                        .col_expr(consent_event::Column::Evidence, Expr::value(""))
                        .col_expr(consent_event::Column::EvidenceCt, Expr::value(ct))
                        .filter(consent_event::Column::EventId.eq(r.event_id.as_str()))
                        .filter(consent_event::Column::Evidence.eq(r.evidence.as_str()))
                        .exec(&txn)
                        .await?
                        .rows_affected;
                }
                txn.commit().await?;
            }
        }
        loop {
            let rows = objection_decision::Entity::find()
                .filter(objection_decision::Column::Reason.ne(""))
                .order_by_asc(objection_decision::Column::TenantId)
                .order_by_asc(objection_decision::Column::SubjectId)
                .limit(PAGE)
                .all(&self.db)
                .await?;
            if rows.is_empty() {
                break;
            }
            let groups = by_subject(rows, |r| (r.tenant_id.as_str(), r.subject_id.as_str()));
            for ((tenant, subject), rows) in groups {
                let txn = begin(&self.db).await?;
                let dek = key_unless_erased(&txn, &self.sealer, &tenant, &subject).await?;
                for r in rows {
                    let ct = dek.as_ref().map(|k| {
                        self.sealer
                            .seal_reason(k, &tenant, &subject, &r.decision_id, &r.reason)
                    });
                    changed += objection_decision::Entity::update_many()
                        .col_expr(objection_decision::Column::Reason, Expr::value(""))
                        .col_expr(objection_decision::Column::ReasonCt, Expr::value(ct))
                        .filter(objection_decision::Column::TenantId.eq(tenant.as_str()))
                        .filter(objection_decision::Column::DecisionId.eq(r.decision_id.as_str()))
                        .filter(objection_decision::Column::Reason.eq(r.reason.as_str()))
                        .exec(&txn)
                        .await?
                        .rows_affected;
                }
                txn.commit().await?;
            }
        }
        // Stored answers of that time held the whole event, evidence included.
        use idempotency::entity as idem;
        let answers = idem::Entity::find()
            .filter(idem::Column::Method.eq("RecordConsent"))
            .filter(idem::Column::Response.like("%\"evidence\"%"))
            .all(&self.db)
            .await?;
        for a in answers {
            let Ok(ids) = serde_json::from_str::<Recorded>(&a.response) else {
                continue;
            };
            let response = serde_json::to_string(&ids).map_err(|e| DbErr::Json(e.to_string()))?;
            changed += idem::Entity::update_many()
                .col_expr(idem::Column::Response, Expr::value(response))
                .filter(idem::Column::Scope.eq(a.scope.as_str()))
                .filter(idem::Column::RequestId.eq(a.request_id.as_str()))
                .exec(&self.db)
                .await?
                .rows_affected;
        }
        // And those of RecordCompellingGrounds the whole decision, reason included.
        changed += reduce_grounds_answers(&self.db, None, None).await?;
        Ok(changed)
    }

    /// The consent state of (subject, purpose), if any event was recorded.
    pub async fn consent_state(
        &self,
        tenant: &str,
        subject_id: &str,
        purpose: &str,
    ) -> Result<Option<StoredState>, ConsentError> {
        let row = consent_state::Entity::find_by_id((
            tenant.to_owned(),
            subject_id.to_owned(),
            purpose.to_owned(),
        ))
        .one(&self.db)
        .await?;
        row.map(stored_state).transpose()
    }

    /// Records a compelling-grounds decision for the standing objection of (subject,
    /// purpose), in one transaction: the decision's history row (its reason sealed under
    /// the subject's data key, created on first use) and the state Check reads.
    /// FAILED_PRECONDITION when no objection stands by the time the transaction runs (a
    /// GRANT may have lifted it meanwhile), or when the projection has the subject
    /// erased. The reason is a statement about the subject's case (personal data): the
    /// stored idempotency answer holds ids only ([`GroundsRecorded`]). Retries when a
    /// concurrent write to the same (subject, purpose) wins the race.
    pub async fn record_grounds(
        &self,
        decision: &GroundsDecision,
        key: Option<&Key>,
    ) -> Result<GroundsDecision, ConsentError> {
        let (db, key) = (self.db.clone(), key.cloned());
        let sealer = self.sealer.clone();
        let (tenant, subject) = (decision.tenant_id.clone(), decision.subject_id.clone());
        let answer = GroundsRecorded {
            decision_id: decision.decision_id.clone(),
            subject_id: decision.subject_id.clone(),
        };
        let recorded = {
            let d = decision.clone();
            self.write_then_invalidate(&tenant, &subject, async move {
                let mut attempt = 0;
                let result = loop {
                    attempt += 1;
                    let (d, sealer) = (d.clone(), sealer.clone());
                    let result = commit_once(&db, key.as_ref(), answer.clone(), move |txn| {
                        Box::pin(async move { insert_grounds(txn, &sealer, &d).await })
                    })
                    .await;
                    match result {
                        Err(ApiError::Aborted(_)) if attempt < MAX_ATTEMPTS => continue,
                        other => break other,
                    }
                };
                Ok(result?)
            })
            .await?
        };
        if recorded.decision_id == decision.decision_id {
            return Ok(decision.clone());
        }
        // A concurrent call with the same request id won: its decision is the answer.
        self.grounds_decision(&tenant, &recorded.decision_id)
            .await?
            .ok_or(ConsentError::Api(ApiError::Internal(
                "recorded decision missing",
            )))
    }

    /// One compelling-grounds decision by id, its reason opened (`""` once the subject
    /// is erased).
    pub async fn grounds_decision(
        &self,
        tenant: &str,
        decision_id: &str,
    ) -> Result<Option<GroundsDecision>, ConsentError> {
        let Some(row) =
            objection_decision::Entity::find_by_id((tenant.to_owned(), decision_id.to_owned()))
                .one(&self.db)
                .await?
        else {
            return Ok(None);
        };
        let subject_id = row.subject_id.clone();
        let mut decisions = self.open_decisions(tenant, &subject_id, vec![row]).await?;
        Ok(decisions.pop())
    }

    /// The compelling-grounds decisions recorded for a subject, oldest first, their
    /// reasons opened (`""` once the subject is erased).
    pub async fn grounds_decisions(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Vec<GroundsDecision>, ConsentError> {
        let mut rows = objection_decision::Entity::find()
            .filter(objection_decision::Column::TenantId.eq(tenant))
            .filter(objection_decision::Column::SubjectId.eq(subject_id))
            .all(&self.db)
            .await?;
        rows.sort_by(|a, b| (a.decide_time, &a.decision_id).cmp(&(b.decide_time, &b.decision_id)));
        self.open_decisions(tenant, subject_id, rows).await
    }

    /// Rows of one subject as decisions, their reasons opened with the subject's data
    /// key. Without a key (the subject was erased) a sealed reason reads as empty; rows
    /// not sealed yet keep their plaintext reason.
    async fn open_decisions(
        &self,
        tenant: &str,
        subject_id: &str,
        rows: Vec<objection_decision::Model>,
    ) -> Result<Vec<GroundsDecision>, ConsentError> {
        let dek = if rows.iter().any(|r| r.reason_ct.is_some()) {
            subject_key(&self.db, &self.sealer, tenant, subject_id).await?
        } else {
            None
        };
        rows.into_iter()
            .map(|mut m| {
                let sealed = m.reason_ct.take();
                let mut d = decision_from_row(m);
                if let Some(ct) = sealed {
                    d.reason = match &dek {
                        Some(k) => self.sealer.open_reason(
                            k,
                            &d.tenant_id,
                            &d.subject_id,
                            &d.decision_id,
                            &ct,
                        )?,
                        None => String::new(),
                    };
                }
                Ok(d)
            })
            .collect()
    }

    /// Per purpose of `tenant`: subjects whose consent is given now (a GRANT not
    /// expired at `now`) and subjects whose latest event withdrew it. Two grouped
    /// counts; purposes without either are left out.
    pub async fn consent_stats(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, i64, i64)>, ConsentError> {
        let count = |action: ConsentAction| {
            consent_state::Entity::find()
                .select_only()
                .column(consent_state::Column::Purpose)
                .column_as(consent_state::Column::SubjectId.count(), "n")
                .filter(consent_state::Column::TenantId.eq(tenant))
                .filter(consent_state::Column::LatestAction.eq(action.as_str()))
                .group_by(consent_state::Column::Purpose)
        };
        let granted: Vec<(String, i64)> = count(ConsentAction::Grant)
            .filter(
                Condition::any()
                    .add(consent_state::Column::LatestExpiresAt.is_null())
                    .add(consent_state::Column::LatestExpiresAt.gt(now)),
            )
            .into_tuple()
            .all(&self.db)
            .await?;
        let withdrawn: Vec<(String, i64)> = count(ConsentAction::Withdraw)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut out: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        for (p, n) in granted {
            out.entry(p).or_default().0 = n;
        }
        for (p, n) in withdrawn {
            out.entry(p).or_default().1 = n;
        }
        Ok(out.into_iter().map(|(p, (g, w))| (p, g, w)).collect())
    }

    /// A page of consent states, by (subject, purpose).
    pub async fn list_states(
        &self,
        tenant: &str,
        subject_id: Option<&str>,
        purpose: Option<&str>,
        update_before: Option<DateTime<Utc>>,
        after: Option<(String, String)>,
        limit: u64,
    ) -> Result<Page<StoredState>, ConsentError> {
        let mut q = consent_state::Entity::find()
            .filter(consent_state::Column::TenantId.eq(tenant))
            .order_by_asc(consent_state::Column::SubjectId)
            .order_by_asc(consent_state::Column::Purpose);
        if let Some(s) = subject_id {
            q = q.filter(consent_state::Column::SubjectId.eq(s));
        }
        if let Some(p) = purpose {
            q = q.filter(consent_state::Column::Purpose.eq(p));
        }
        // Retention's CONSENT_WITHDRAWN sweep relies on it: a state changed at or after
        // the cut-off must not be listed, or its data goes before its period ends.
        if let Some(t) = update_before {
            q = q.filter(consent_state::Column::UpdateTime.lt(t));
        }
        if let Some((s, p)) = after {
            q = q.filter(
                consent_state::Column::SubjectId
                    .gt(s.clone())
                    .or(consent_state::Column::SubjectId
                        .eq(s)
                        .and(consent_state::Column::Purpose.gt(p))),
            );
        }
        let rows = q.limit(limit + 1).all(&self.db).await?;
        let mut items = rows
            .into_iter()
            .map(stored_state)
            .collect::<Result<Vec<_>, _>>()?;
        let more = items.len() as u64 > limit;
        items.truncate(limit as usize);
        Ok(Page { items, more })
    }

    /// A page of events of a subject (optionally one purpose), oldest first.
    pub async fn history(
        &self,
        tenant: &str,
        subject_id: &str,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Page<ConsentEvent>, ConsentError> {
        let mut q = consent_event::Entity::find()
            .filter(consent_event::Column::TenantId.eq(tenant))
            .filter(consent_event::Column::SubjectId.eq(subject_id))
            .order_by_asc(consent_event::Column::EventId);
        if let Some(p) = purpose {
            q = q.filter(consent_event::Column::Purpose.eq(p));
        }
        if let Some(a) = after {
            q = q.filter(consent_event::Column::EventId.gt(a));
        }
        let rows = q.limit(limit + 1).all(&self.db).await?;
        let mut items = self.open_events(tenant, subject_id, rows).await?;
        let more = items.len() as u64 > limit;
        items.truncate(limit as usize);
        Ok(Page { items, more })
    }

    /// The state of a subject as last notified, with its version.
    pub async fn subject_state(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Option<(SubjectStatus, i64)>, ConsentError> {
        let row = subject_state::Entity::find_by_id((tenant.to_owned(), subject_id.to_owned()))
            .one(&self.db)
            .await?;
        Ok(match row {
            Some(r) => Some((parse_subject(&r.state)?, r.version)),
            None => None,
        })
    }

    /// Applies subject state notifications; a notification older than what is stored
    /// (by version) is ignored, so redelivery and reordering are harmless. Returns
    /// (applied, ignored).
    pub async fn apply_subject_states(
        &self,
        tenant: &str,
        changes: &[SubjectChange],
    ) -> Result<(u32, u32), ConsentError> {
        let (mut applied, mut ignored) = (0, 0);
        for change in changes {
            if self.apply_one(tenant, change.clone()).await? {
                applied += 1;
            } else {
                ignored += 1;
            }
        }
        Ok((applied, ignored))
    }

    async fn apply_one(&self, tenant: &str, change: SubjectChange) -> Result<bool, ConsentError> {
        let store = self.clone();
        let t = tenant.to_owned();
        let subject_id = change.subject_id.clone();
        self.write_then_invalidate(tenant, &subject_id, async move {
            store.apply_one_now(&t, &change).await
        })
        .await
    }

    /// Applies one change in a transaction. An ERASED change (also a repeated or stale
    /// one: erasure is final) shreds the subject's evidence and compelling-grounds
    /// reasons in the same transaction: its data key is deleted and every sealed (or
    /// legacy plaintext) evidence and reason blanked.
    async fn apply_one_now(&self, tenant: &str, c: &SubjectChange) -> Result<bool, ConsentError> {
        let (subject_id, status, version, at) = (c.subject_id.as_str(), c.status, c.version, c.at);
        let restricted = restricted_json(&c.restricted_purposes)?;
        for _ in 0..MAX_ATTEMPTS {
            let txn = begin(&self.db).await?;
            let updated = subject_state::Entity::update_many()
                .col_expr(subject_state::Column::State, Expr::value(status.as_str()))
                .col_expr(subject_state::Column::Version, Expr::value(version))
                .col_expr(subject_state::Column::ChangeTime, Expr::value(at))
                .col_expr(
                    subject_state::Column::RestrictedPurposes,
                    Expr::value(restricted.clone()),
                )
                .filter(subject_state::Column::TenantId.eq(tenant))
                .filter(subject_state::Column::SubjectId.eq(subject_id))
                .filter(subject_state::Column::Version.lt(version))
                .exec(&txn)
                .await?
                .rows_affected;
            let applied = if updated == 1 {
                true
            } else if subject_state::Entity::find_by_id((tenant.to_owned(), subject_id.to_owned()))
                .one(&txn)
                .await?
                .is_some()
            {
                false
            } else {
                let inserted = subject_state::ActiveModel {
                    tenant_id: Set(tenant.to_owned()),
                    subject_id: Set(subject_id.to_owned()),
                    state: Set(status.as_str().to_owned()),
                    version: Set(version),
                    change_time: Set(at),
                    restricted_purposes: Set(restricted.clone()),
                }
                .insert(&txn)
                .await;
                match inserted {
                    Ok(_) => true,
                    // Dropping the transaction rolls it back.
                    Err(e) if classify(&e) == DbFailure::UniqueViolation => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            if status == SubjectStatus::Erased {
                shred(&txn, tenant, subject_id).await?;
            }
            if applied {
                // Delivered only if this transaction commits.
                publish_change(&txn, tenant, subject_id).await?;
            }
            txn.commit().await?;
            return Ok(applied);
        }
        Err(ConsentError::Api(ApiError::Aborted(
            "subject state changed concurrently; retry",
        )))
    }

    /// What Check needs for a batch of subjects: each subject's state and its consent
    /// state for `purpose`. Subjects never notified are absent. From the cache where it
    /// holds them, else one indexed read.
    pub async fn check_rows(
        &self,
        tenant: &str,
        purpose: &str,
        subject_ids: &[String],
    ) -> Result<HashMap<String, CheckRow>, ConsentError> {
        let Some(cache) = self.usable_cache() else {
            self.check_counts.record(0, subject_ids.len());
            return self.read_check_rows(tenant, purpose, subject_ids).await;
        };
        let mut out = HashMap::with_capacity(subject_ids.len());
        let mut misses = vec![];
        for s in subject_ids {
            match cache.get(tenant, s, purpose) {
                cache::Cached::Row(r) => {
                    out.insert(s.clone(), r);
                }
                cache::Cached::Unknown => {}
                cache::Cached::Miss => misses.push(s.clone()),
            }
        }
        self.check_counts
            .record(subject_ids.len() - misses.len(), misses.len());
        if misses.is_empty() {
            return Ok(out);
        }
        // Read before the database read: a write committing meanwhile voids the fill.
        let epoch = cache.epoch();
        let rows = self.read_subject_rows(tenant, &misses).await?;
        cache.fill(epoch, tenant, &misses, &rows);
        for (subject_id, rows) in rows {
            out.insert(subject_id, rows.for_purpose(purpose));
        }
        Ok(out)
    }

    /// Fills the Check cache with the store's first subjects, in pages, so
    /// that the first Checks after a start do not each read the database. Stops when the
    /// cache is full; a page that raced a write is dropped (and read again on a miss).
    pub async fn warm_check_cache(&self) -> Result<usize, ConsentError> {
        let Some(cache) = &self.cache else {
            return Ok(0);
        };
        if !self.cache_ready(std::time::Duration::from_secs(10)).await {
            return Ok(0);
        }
        const PAGE: u64 = 1000;
        let mut after: Option<(String, String)> = None;
        let mut warmed = 0;
        while !cache.is_full() {
            use subject_state::Column as S;
            let mut q = subject_state::Entity::find()
                .select_only()
                .column(S::TenantId)
                .column(S::SubjectId)
                .order_by_asc(S::TenantId)
                .order_by_asc(S::SubjectId)
                .limit(PAGE);
            if let Some((t, id)) = &after {
                q = q.filter(
                    sea_orm::Condition::any()
                        .add(S::TenantId.gt(t.as_str()))
                        .add(
                            sea_orm::Condition::all()
                                .add(S::TenantId.eq(t.as_str()))
                                .add(S::SubjectId.gt(id.as_str())),
                        ),
                );
            }
            let page: Vec<(String, String)> = q.into_tuple().all(&self.db).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            let mut i = 0;
            while i < page.len() {
                let tenant = &page[i].0;
                let j = page[i..]
                    .iter()
                    .position(|(t, _)| t != tenant)
                    .map_or(page.len(), |n| i + n);
                let ids: Vec<String> = page[i..j].iter().map(|(_, s)| s.clone()).collect();
                if self.usable_cache().is_none() {
                    // Lost track of the other replicas' writes: misses fill later.
                    return Ok(warmed);
                }
                let epoch = cache.epoch();
                let rows = self.read_subject_rows(tenant, &ids).await?;
                cache.fill(epoch, tenant, &ids, &rows);
                warmed += ids.len();
                i = j;
            }
            after = Some(last);
        }
        Ok(warmed)
    }

    /// Each subject's state and every consent state, for the Check cache: one indexed
    /// read (subject_states LEFT JOIN consent_states). Subjects never notified are absent.
    async fn read_subject_rows(
        &self,
        tenant: &str,
        subject_ids: &[String],
    ) -> Result<HashMap<String, cache::SubjectRows>, ConsentError> {
        if subject_ids.len() > 1 && self.db.get_database_backend() == sea_orm::DbBackend::Postgres {
            let (states, consents) = self.read_states_postgres(tenant, subject_ids, None).await?;
            let mut out: HashMap<String, cache::SubjectRows> = states
                .into_iter()
                .map(|(id, status, restricted_purposes)| {
                    let rows = cache::SubjectRows {
                        status,
                        restricted_purposes,
                        consents: vec![],
                    };
                    (id, rows)
                })
                .collect();
            for (subject_id, purpose, consent) in consents {
                if let Some(entry) = out.get_mut(&subject_id) {
                    entry.consents.push((purpose, consent));
                }
            }
            return Ok(out);
        }
        use consent_state::Column as C;
        use subject_state::Column as S;
        let (s, c) = (subject_state::Entity, consent_state::Entity);
        let mut q = Query::select();
        q.columns([(s, S::SubjectId), (s, S::State), (s, S::RestrictedPurposes)])
            .columns([
                (c, C::Purpose),
                (c, C::LatestEventId),
                (c, C::LatestAction),
                (c, C::LatestOccurTime),
                (c, C::LatestExpiresAt),
                (c, C::ObjectionEventId),
                (c, C::ObjectionOccurTime),
                (c, C::LastGrantTime),
                (c, C::GroundsDecisionId),
                (c, C::GroundsObjectionId),
            ])
            .from(s)
            .join(
                JoinType::LeftJoin,
                c,
                Expr::col((c, C::TenantId))
                    .equals((s, S::TenantId))
                    .and(Expr::col((c, C::SubjectId)).equals((s, S::SubjectId))),
            )
            .and_where(Expr::col((s, S::TenantId)).eq(tenant));
        q.and_where(subject_in(subject_ids));
        let rows = self.db.query_all(&q).await?;
        let mut out: HashMap<String, cache::SubjectRows> = HashMap::with_capacity(rows.len());
        for r in rows {
            let subject_id: String = r.try_get("", "subject_id")?;
            let state: String = r.try_get("", "state")?;
            let purpose: Option<String> = r.try_get("", "purpose")?;
            let consent = consent_from_row(&r)?;
            let entry = match out.entry(subject_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(cache::SubjectRows {
                    status: parse_subject(&state)?,
                    restricted_purposes: restricted_of(&r)?,
                    consents: vec![],
                }),
            };
            if let Some(p) = purpose {
                entry.consents.push((p, consent));
            }
        }
        Ok(out)
    }

    /// A batch's subject states and consent states on PostgreSQL: two single-table
    /// reads by primary key with one array parameter each, in one read-only snapshot.
    /// Not one join: 10,000 bound `IN` values cost 7–16 ms to plan, and with the array
    /// the planner cannot know the batch's size, so before the tables had statistics
    /// it joined the consent states by a nested loop over all of them (8.9 s for
    /// 10,000 ids; both queries alone: index probes, tens of milliseconds).
    async fn read_states_postgres(
        &self,
        tenant: &str,
        subject_ids: &[String],
        purpose: Option<&str>,
    ) -> Result<
        (
            Vec<(String, SubjectStatus, Vec<String>)>,
            Vec<(String, String, ConsentState)>,
        ),
        ConsentError,
    > {
        use sea_orm::{DbBackend, Statement};
        let ids = subject_ids.join(",");
        let txn = self
            .db
            .begin_with_config(
                Some(sea_orm::IsolationLevel::RepeatableRead),
                Some(sea_orm::AccessMode::ReadOnly),
            )
            .await?;
        let states = txn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                STATES_BY_IDS,
                [tenant.into(), ids.clone().into()],
            ))
            .await?;
        // Every purpose, filtered here: with `purpose = $3` too, the planner (before
        // statistics) could scan the tenant's states by (tenant, purpose) and test the
        // array per row (one call of 20 took 5.6 s).
        let consents = txn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                CONSENTS_BY_IDS,
                [tenant.into(), ids.into()],
            ))
            .await?;
        txn.commit().await?;
        let states = states
            .iter()
            .map(|r| {
                let id: String = r.try_get("", "subject_id")?;
                let state: String = r.try_get("", "state")?;
                Ok((id, parse_subject(&state)?, restricted_of(r)?))
            })
            .collect::<Result<Vec<_>, ConsentError>>()?;
        let consents = consents
            .iter()
            .filter_map(|r| {
                let row = || {
                    let id: String = r.try_get("", "subject_id")?;
                    let p: String = r.try_get("", "purpose")?;
                    Ok::<_, ConsentError>((id, p))
                };
                match row() {
                    Ok((_, p)) if purpose.is_some_and(|want| want != p) => None,
                    Ok((id, p)) => Some(consent_from_row(r).map(|c| (id, p, c))),
                    Err(e) => Some(Err(e)),
                }
            })
            .collect::<Result<Vec<_>, ConsentError>>()?;
        Ok((states, consents))
    }

    /// Check's one indexed read (subject_states LEFT JOIN consent_states).
    async fn read_check_rows(
        &self,
        tenant: &str,
        purpose: &str,
        subject_ids: &[String],
    ) -> Result<HashMap<String, CheckRow>, ConsentError> {
        if subject_ids.len() > 1 && self.db.get_database_backend() == sea_orm::DbBackend::Postgres {
            let (states, consents) = self
                .read_states_postgres(tenant, subject_ids, Some(purpose))
                .await?;
            let mut out: HashMap<String, CheckRow> = states
                .into_iter()
                .map(|(id, subject, restricted)| {
                    let row = CheckRow {
                        subject: status_for(subject, &restricted, purpose),
                        consent: ConsentState::default(),
                    };
                    (id, row)
                })
                .collect();
            for (subject_id, _, consent) in consents {
                if let Some(row) = out.get_mut(&subject_id) {
                    row.consent = consent;
                }
            }
            return Ok(out);
        }
        use consent_state::Column as C;
        use subject_state::Column as S;
        let (s, c) = (subject_state::Entity, consent_state::Entity);
        let mut q = Query::select();
        q.columns([(s, S::SubjectId), (s, S::State), (s, S::RestrictedPurposes)])
            .columns([
                (c, C::LatestEventId),
                (c, C::LatestAction),
                (c, C::LatestOccurTime),
                (c, C::LatestExpiresAt),
                (c, C::ObjectionEventId),
                (c, C::ObjectionOccurTime),
                (c, C::LastGrantTime),
                (c, C::GroundsDecisionId),
                (c, C::GroundsObjectionId),
            ])
            .from(s)
            .join(
                JoinType::LeftJoin,
                c,
                Expr::col((c, C::TenantId))
                    .equals((s, S::TenantId))
                    .and(Expr::col((c, C::SubjectId)).equals((s, S::SubjectId)))
                    .and(Expr::col((c, C::Purpose)).eq(purpose)),
            )
            .and_where(Expr::col((s, S::TenantId)).eq(tenant));
        q.and_where(subject_in(subject_ids));
        let rows = self.db.query_all(&q).await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let subject_id: String = r.try_get("", "subject_id")?;
            let state: String = r.try_get("", "state")?;
            let consent = consent_from_row(&r)?;
            let restricted = restricted_of(&r)?;
            out.insert(
                subject_id,
                CheckRow {
                    subject: status_for(parse_subject(&state)?, &restricted, purpose),
                    consent,
                },
            );
        }
        Ok(out)
    }
}

/// `subject_states.subject_id` is `ids`' one id, or one of them (SQLite; PostgreSQL reads
/// several with [`ConsentStore::read_states_postgres`]).
fn subject_in(ids: &[String]) -> sea_orm::sea_query::SimpleExpr {
    let col = Expr::col((subject_state::Entity, subject_state::Column::SubjectId));
    match ids {
        [one] => col.eq(one.as_str()),
        _ => col.is_in(ids.iter().map(String::as_str)),
    }
}

/// The subjects of a PostgreSQL batch read: one array parameter of canonical UUIDs.
const STATES_BY_IDS: &str = "SELECT subject_id, state, restricted_purposes FROM subject_states \
     WHERE tenant_id = $1 AND subject_id = ANY(string_to_array($2, ','))";
/// Their consent states, every purpose.
const CONSENTS_BY_IDS: &str = "SELECT subject_id, purpose, latest_event_id, latest_action, \
     latest_occur_time, latest_expires_at, objection_event_id, objection_occur_time, \
     last_grant_time, grounds_decision_id, grounds_objection_id FROM consent_states \
     WHERE tenant_id = $1 AND subject_id = ANY(string_to_array($2, ','))";

/// The consent state in a row of Check's join (default when nothing is recorded).
fn consent_from_row(r: &sea_orm::QueryResult) -> Result<ConsentState, ConsentError> {
    let latest_event_id: Option<String> = r.try_get("", "latest_event_id")?;
    let Some(event_id) = latest_event_id else {
        return Ok(ConsentState::default());
    };
    let action: String = r.try_get("", "latest_action")?;
    let objection_id: Option<String> = r.try_get("", "objection_event_id")?;
    let objection_time: Option<DateTime<Utc>> = r.try_get("", "objection_occur_time")?;
    Ok(ConsentState {
        latest: Some(LatestEvent {
            event_id,
            action: parse_action(&action)?,
            occur_time: r.try_get("", "latest_occur_time")?,
            expires_at: r.try_get("", "latest_expires_at")?,
        }),
        standing_objection: match (objection_id, objection_time) {
            (Some(id), Some(t)) => Some(LatestEvent {
                event_id: id,
                action: ConsentAction::Object,
                occur_time: t,
                expires_at: None,
            }),
            _ => None,
        },
        last_grant_time: r.try_get("", "last_grant_time")?,
        compelling_grounds: grounds(
            r.try_get("", "grounds_decision_id")?,
            r.try_get("", "grounds_objection_id")?,
        ),
    })
}

/// The stored compelling-grounds columns as the rules see them.
fn grounds(decision: Option<String>, objection: Option<String>) -> Option<CompellingGrounds> {
    match (decision, objection) {
        (Some(decision_id), Some(objection_event_id)) => Some(CompellingGrounds {
            decision_id,
            objection_event_id,
        }),
        _ => None,
    }
}

/// Reads the (subject, purpose) state inside `txn`, folds `event` into it and writes it
/// back if nobody changed it meanwhile (else `Aborted`, and the caller retries).
async fn fold_into_state(txn: &impl ConnectionTrait, e: &ConsentEvent) -> Result<(), ConsentError> {
    // Delivered only if this transaction commits.
    publish_change(txn, &e.tenant_id, &e.subject_id).await?;
    let current = consent_state::Entity::find_by_id((
        e.tenant_id.clone(),
        e.subject_id.clone(),
        e.purpose.clone(),
    ))
    .one(txn)
    .await?;
    let (mut state, version) = match &current {
        Some(row) => (stored_state(row.clone())?.state, row.version),
        None => (ConsentState::default(), 0),
    };
    state.apply(&e.as_latest());
    let latest = state.latest.clone().unwrap_or_else(|| e.as_latest());
    // The latest event (by occurrence) decides the shown notice version and channel.
    let (notice_version, channel) = if latest.event_id == e.event_id {
        (e.notice_version.clone(), e.channel.as_str().to_owned())
    } else {
        match &current {
            Some(row) => (row.notice_version.clone(), row.channel.clone()),
            None => (e.notice_version.clone(), e.channel.as_str().to_owned()),
        }
    };
    let model = consent_state::ActiveModel {
        tenant_id: Set(e.tenant_id.clone()),
        subject_id: Set(e.subject_id.clone()),
        purpose: Set(e.purpose.clone()),
        latest_event_id: Set(latest.event_id.clone()),
        latest_action: Set(latest.action.as_str().to_owned()),
        latest_occur_time: Set(latest.occur_time),
        latest_expires_at: Set(latest.expires_at),
        objection_event_id: Set(state
            .standing_objection
            .as_ref()
            .map(|o| o.event_id.clone())),
        objection_occur_time: Set(state.standing_objection.as_ref().map(|o| o.occur_time)),
        last_grant_time: Set(state.last_grant_time),
        grounds_decision_id: Set(state
            .compelling_grounds
            .as_ref()
            .map(|g| g.decision_id.clone())),
        grounds_objection_id: Set(state
            .compelling_grounds
            .as_ref()
            .map(|g| g.objection_event_id.clone())),
        notice_version: Set(notice_version),
        channel: Set(channel),
        version: Set(version + 1),
        update_time: Set(e.create_time),
    };
    if current.is_none() {
        return match model.insert(txn).await {
            Ok(_) => Ok(()),
            Err(err) if classify(&err) == DbFailure::UniqueViolation => Err(ConsentError::Api(
                ApiError::Aborted("consent state changed concurrently; retry"),
            )),
            Err(err) => Err(err.into()),
        };
    }
    let changed = consent_state::Entity::update_many()
        .set(model)
        .filter(consent_state::Column::TenantId.eq(e.tenant_id.as_str()))
        .filter(consent_state::Column::SubjectId.eq(e.subject_id.as_str()))
        .filter(consent_state::Column::Purpose.eq(e.purpose.as_str()))
        .filter(consent_state::Column::Version.eq(version))
        .exec(txn)
        .await?
        .rows_affected;
    if changed != 1 {
        return Err(ConsentError::Api(ApiError::Aborted(
            "consent state changed concurrently; retry",
        )));
    }
    Ok(())
}

/// A transaction; on SQLite it takes the write lock at BEGIN (see `commit_once`).
async fn begin(db: &Db) -> Result<DatabaseTransaction, DbErr> {
    if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        db.begin_with_options(sea_orm::TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await
    } else {
        db.begin().await
    }
}

/// The subject's data key, if it has one.
async fn subject_key(
    db: &impl ConnectionTrait,
    sealer: &Sealer,
    tenant: &str,
    subject: &str,
) -> Result<Option<DataKey>, ConsentError> {
    consent_key::Entity::find_by_id((tenant.to_owned(), subject.to_owned()))
        .one(db)
        .await?
        .map(|k| sealer.key(tenant, subject, &k.wrapped_key))
        .transpose()
}

/// The subject's data key, created (and stored wrapped) when it has none. A concurrent
/// creation is `Aborted` (the caller retries and then reads the winner's key).
async fn subject_key_or_new(
    txn: &impl ConnectionTrait,
    sealer: &Sealer,
    tenant: &str,
    subject: &str,
) -> Result<DataKey, ConsentError> {
    if let Some(k) = subject_key(txn, sealer, tenant, subject).await? {
        return Ok(k);
    }
    let (dek, wrapped) = sealer.new_key(tenant, subject)?;
    let inserted = consent_key::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        subject_id: Set(subject.to_owned()),
        wrapped_key: Set(wrapped),
        create_time: Set(vern_kit::time::now()),
    }
    .insert(txn)
    .await;
    match inserted {
        Ok(_) => Ok(dek),
        Err(e) if classify(&e) == DbFailure::UniqueViolation => Err(ConsentError::Api(
            ApiError::Aborted("subject key created concurrently; retry"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The event's row, its evidence sealed (under the subject's key, created if needed).
async fn sealed_event_row(
    txn: &impl ConnectionTrait,
    sealer: &Sealer,
    e: &ConsentEvent,
) -> Result<consent_event::ActiveModel, ConsentError> {
    let mut row = event_row(e);
    if !e.evidence.is_empty() {
        let dek = subject_key_or_new(txn, sealer, &e.tenant_id, &e.subject_id).await?;
        row.evidence_ct = Set(Some(sealer.seal_evidence(
            &dek,
            &e.tenant_id,
            &e.subject_id,
            &e.event_id,
            &e.evidence,
        )));
    }
    Ok(row)
}

/// `SubjectErased` when the projection has the subject erased (read in `txn`).
async fn refuse_erased(
    txn: &impl ConnectionTrait,
    tenant: &str,
    subject: &str,
) -> Result<(), ConsentError> {
    let state = subject_state::Entity::find_by_id((tenant.to_owned(), subject.to_owned()))
        .one(txn)
        .await?;
    match state {
        Some(s) if s.state == SubjectStatus::Erased.as_str() => Err(ConsentError::SubjectErased),
        _ => Ok(()),
    }
}

/// RecordCompellingGrounds in `txn`: refuses an erased subject, checks that the
/// objection answered still stands, writes the decision (its reason sealed under the
/// subject's data key, never in plaintext) and points the consent state at it.
async fn insert_grounds(
    txn: &impl ConnectionTrait,
    sealer: &Sealer,
    d: &GroundsDecision,
) -> Result<(), ConsentError> {
    // SQLite: the transaction holds the write lock from BEGIN.
    refuse_erased(txn, &d.tenant_id, &d.subject_id).await?;
    // Delivered only if this transaction commits.
    publish_change(txn, &d.tenant_id, &d.subject_id).await?;
    let row = consent_state::Entity::find_by_id((
        d.tenant_id.clone(),
        d.subject_id.clone(),
        d.purpose.clone(),
    ))
    .one(txn)
    .await?;
    let standing = row
        .as_ref()
        .and_then(|r| r.objection_event_id.clone())
        .filter(|o| *o == d.objection_event_id);
    let (Some(row), Some(_)) = (row, standing) else {
        return Err(ConsentError::Api(ApiError::precondition(
            "NO_STANDING_OBJECTION",
            "purpose",
            "the subject's objection to this purpose no longer stands",
        )));
    };
    let dek = subject_key_or_new(txn, sealer, &d.tenant_id, &d.subject_id).await?;
    let reason_ct =
        sealer.seal_reason(&dek, &d.tenant_id, &d.subject_id, &d.decision_id, &d.reason);
    objection_decision::ActiveModel {
        tenant_id: Set(d.tenant_id.clone()),
        decision_id: Set(d.decision_id.clone()),
        subject_id: Set(d.subject_id.clone()),
        purpose: Set(d.purpose.clone()),
        objection_event_id: Set(d.objection_event_id.clone()),
        // Never the plaintext: the sealed form goes to `reason_ct`.
        reason: Set(String::new()),
        reason_ct: Set(Some(reason_ct)),
        decided_by: Set(d.decided_by.clone()),
        request_id: Set(d.request_id.clone()),
        decide_time: Set(d.decide_time),
    }
    .insert(txn)
    .await?;
    let changed = consent_state::Entity::update_many()
        .col_expr(
            consent_state::Column::GroundsDecisionId,
            Expr::value(d.decision_id.clone()),
        )
        .col_expr(
            consent_state::Column::GroundsObjectionId,
            Expr::value(d.objection_event_id.clone()),
        )
        .col_expr(consent_state::Column::Version, Expr::value(row.version + 1))
        .filter(consent_state::Column::TenantId.eq(d.tenant_id.as_str()))
        .filter(consent_state::Column::SubjectId.eq(d.subject_id.as_str()))
        .filter(consent_state::Column::Purpose.eq(d.purpose.as_str()))
        .filter(consent_state::Column::Version.eq(row.version))
        .exec(txn)
        .await?
        .rows_affected;
    if changed != 1 {
        return Err(ConsentError::Api(ApiError::Aborted(
            "consent state changed concurrently; retry",
        )));
    }
    Ok(())
}

/// The data key to seal a subject's plaintext of older versions under (read in `txn`,
/// created when it has none); `None` when the projection has the subject erased (the
/// plaintext is then only blanked).
async fn key_unless_erased(
    txn: &impl ConnectionTrait,
    sealer: &Sealer,
    tenant: &str,
    subject: &str,
) -> Result<Option<DataKey>, ConsentError> {
    let erased = matches!(
        subject_state::Entity::find_by_id((tenant.to_owned(), subject.to_owned()))
            .one(txn)
            .await?
            .map(|r| r.state),
        Some(s) if s == SubjectStatus::Erased.as_str()
    );
    if erased {
        return Ok(None);
    }
    Ok(Some(
        subject_key_or_new(txn, sealer, tenant, subject).await?,
    ))
}

/// Rows in (tenant, subject) order grouped by (tenant, subject).
fn by_subject<T>(
    rows: Vec<T>,
    owner: impl Fn(&T) -> (&str, &str),
) -> Vec<((String, String), Vec<T>)> {
    let mut groups: Vec<((String, String), Vec<T>)> = vec![];
    for r in rows {
        let (tenant, subject) = owner(&r);
        let same = matches!(groups.last(), Some(((t, s), _)) if t == tenant && s == subject);
        if !same {
            groups.push(((tenant.to_owned(), subject.to_owned()), vec![]));
        }
        if let Some((_, g)) = groups.last_mut() {
            g.push(r);
        }
    }
    groups
}

/// Rewrites stored RecordCompellingGrounds answers that still hold the whole decision
/// (written before m0006, reason included) to ids only ([`GroundsRecorded`]); only
/// those of `subject` when given. Returns the number of answers rewritten.
async fn reduce_grounds_answers(
    db: &impl ConnectionTrait,
    tenant: Option<&str>,
    subject: Option<&str>,
) -> Result<u64, DbErr> {
    use idempotency::entity as idem;
    let mut q = idem::Entity::find()
        .filter(idem::Column::Method.eq("RecordCompellingGrounds"))
        .filter(idem::Column::Response.like("%\"reason\"%"));
    if let Some(t) = tenant {
        q = q.filter(idem::Column::Scope.eq(t));
    }
    if let Some(s) = subject {
        q = q.filter(idem::Column::Response.like(format!("%{s}%")));
    }
    let mut changed = 0;
    for a in q.all(db).await? {
        let Ok(ids) = serde_json::from_str::<GroundsRecorded>(&a.response) else {
            continue;
        };
        if subject.is_some_and(|s| s != ids.subject_id) {
            continue;
        }
        let response = serde_json::to_string(&ids).map_err(|e| DbErr::Json(e.to_string()))?;
        changed += idem::Entity::update_many()
            .col_expr(idem::Column::Response, Expr::value(response))
            .filter(idem::Column::Scope.eq(a.scope.as_str()))
            .filter(idem::Column::RequestId.eq(a.request_id.as_str()))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(changed)
}

/// Crypto-shreds a subject's evidence and compelling-grounds reasons: deletes its data
/// key (first), blanks every sealed or plaintext evidence of its events and reason of
/// its decisions, and reduces stored RecordCompellingGrounds answers of older versions
/// (which held the reason) to ids. Repeating it is a no-op.
async fn shred(txn: &impl ConnectionTrait, tenant: &str, subject: &str) -> Result<(), DbErr> {
    consent_key::Entity::delete_many()
        .filter(consent_key::Column::TenantId.eq(tenant))
        .filter(consent_key::Column::SubjectId.eq(subject))
        .exec(txn)
        .await?;
    consent_event::Entity::update_many()
        .col_expr(consent_event::Column::Evidence, Expr::value(""))
        .col_expr(
            consent_event::Column::EvidenceCt,
            Expr::value(Option::<Vec<u8>>::None),
        )
        .filter(consent_event::Column::TenantId.eq(tenant))
        .filter(consent_event::Column::SubjectId.eq(subject))
        .filter(
            consent_event::Column::Evidence
                .ne("")
                .or(consent_event::Column::EvidenceCt.is_not_null()),
        )
        .exec(txn)
        .await?;
    objection_decision::Entity::update_many()
        .col_expr(objection_decision::Column::Reason, Expr::value(""))
        .col_expr(
            objection_decision::Column::ReasonCt,
            Expr::value(Option::<Vec<u8>>::None),
        )
        .filter(objection_decision::Column::TenantId.eq(tenant))
        .filter(objection_decision::Column::SubjectId.eq(subject))
        .filter(
            objection_decision::Column::Reason
                .ne("")
                .or(objection_decision::Column::ReasonCt.is_not_null()),
        )
        .exec(txn)
        .await?;
    reduce_grounds_answers(txn, Some(tenant), Some(subject)).await?;
    Ok(())
}

fn corrupt(what: &str) -> DbErr {
    DbErr::Type(format!("unknown stored value in {what}"))
}

fn parse_action(s: &str) -> Result<ConsentAction, DbErr> {
    ConsentAction::parse(s).ok_or_else(|| corrupt("action"))
}

/// `subject_states.restricted_purposes` of a row (JSON; `[]`, by far the most common,
/// without parsing).
fn restricted_of(r: &sea_orm::QueryResult) -> Result<Vec<String>, DbErr> {
    let text: String = r.try_get("", "restricted_purposes")?;
    if text == "[]" {
        return Ok(vec![]);
    }
    serde_json::from_str(&text).map_err(|_| corrupt("subject_states.restricted_purposes"))
}

/// The JSON text of `subject_states.restricted_purposes`.
fn restricted_json(purposes: &[String]) -> Result<String, ConsentError> {
    serde_json::to_string(purposes).map_err(|_| ConsentError::Api(ApiError::Internal("json")))
}

fn parse_subject(s: &str) -> Result<SubjectStatus, DbErr> {
    SubjectStatus::parse(s).ok_or_else(|| corrupt("subject_states.state"))
}

fn event_row(e: &ConsentEvent) -> consent_event::ActiveModel {
    consent_event::ActiveModel {
        event_id: Set(e.event_id.clone()),
        tenant_id: Set(e.tenant_id.clone()),
        subject_id: Set(e.subject_id.clone()),
        purpose: Set(e.purpose.clone()),
        action: Set(e.action.as_str().to_owned()),
        channel: Set(e.channel.as_str().to_owned()),
        notice_version: Set(e.notice_version.clone()),
        // Never the plaintext: the sealed form goes to `evidence_ct` (`sealed_event_row`).
        evidence: Set(String::new()),
        evidence_ct: Set(None),
        actor: Set(e.actor.clone()),
        recorded_by: Set(e.recorded_by.clone()),
        request_id: Set(e.request_id.clone()),
        rights_request_id: Set(e.rights_request_id.clone()),
        occur_time: Set(e.occur_time),
        expires_at: Set(e.expires_at),
        create_time: Set(e.create_time),
    }
}

fn event_from_row(m: consent_event::Model) -> Result<ConsentEvent, ConsentError> {
    Ok(ConsentEvent {
        action: parse_action(&m.action)?,
        channel: Channel::parse(&m.channel).ok_or_else(|| corrupt("consent_events.channel"))?,
        tenant_id: m.tenant_id,
        event_id: m.event_id,
        subject_id: m.subject_id,
        purpose: m.purpose,
        notice_version: m.notice_version,
        evidence: m.evidence,
        actor: m.actor,
        recorded_by: m.recorded_by,
        request_id: m.request_id,
        rights_request_id: m.rights_request_id,
        occur_time: m.occur_time,
        expires_at: m.expires_at,
        create_time: m.create_time,
    })
}

/// A decision row as a decision, its reason as stored in plaintext (`""` once sealed:
/// the caller opens `reason_ct`).
fn decision_from_row(m: objection_decision::Model) -> GroundsDecision {
    GroundsDecision {
        tenant_id: m.tenant_id,
        decision_id: m.decision_id,
        subject_id: m.subject_id,
        purpose: m.purpose,
        objection_event_id: m.objection_event_id,
        reason: m.reason,
        decided_by: m.decided_by,
        request_id: m.request_id,
        decide_time: m.decide_time,
    }
}

fn stored_state(m: consent_state::Model) -> Result<StoredState, ConsentError> {
    let standing_objection = match (m.objection_event_id, m.objection_occur_time) {
        (Some(id), Some(t)) => Some(LatestEvent {
            event_id: id,
            action: ConsentAction::Object,
            occur_time: t,
            expires_at: None,
        }),
        _ => None,
    };
    Ok(StoredState {
        state: ConsentState {
            latest: Some(LatestEvent {
                event_id: m.latest_event_id,
                action: parse_action(&m.latest_action)?,
                occur_time: m.latest_occur_time,
                expires_at: m.latest_expires_at,
            }),
            standing_objection,
            last_grant_time: m.last_grant_time,
            compelling_grounds: grounds(m.grounds_decision_id, m.grounds_objection_id),
        },
        channel: Channel::parse(&m.channel).ok_or_else(|| corrupt("consent_states.channel"))?,
        subject_id: m.subject_id,
        purpose: m.purpose,
        notice_version: m.notice_version,
        update_time: m.update_time,
        grounds: None,
    })
}

/// The consent keys' table for master key rotation ([`vern_kit::keys`]).
pub fn consent_keys() -> vern_kit::keys::WrappedKeys<consent_key::Entity> {
    vern_kit::keys::WrappedKeys {
        tenant: consent_key::Column::TenantId,
        owner: consent_key::Column::SubjectId,
        wrapped: consent_key::Column::WrappedKey,
        aad: crate::seal::key_aad,
        list: "consent_keys",
    }
}
