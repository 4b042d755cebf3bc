//! Persistence of rights requests, reports, the per-tenant event feed with its
//! confirmations, and the tenant settings. Every query is scoped by tenant; every change
//! commits through `commit_once` (idempotency answer and audit event in the same
//! transaction).

/// Per status: its name, its requests and their nearest deadline; and the open
/// requests past their deadline.
pub type RequestStatsRows = (Vec<(String, i64, Option<DateTime<Utc>>)>, i64);

pub mod entities;
pub mod migration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr,
    EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Statement,
};
use vern_kit::ApiError;
use vern_kit::db::Db;
use vern_kit::db::{DbFailure, DbTarget, classify};
use vern_kit::idempotency::{self, Key, commit_once};

use crate::domain::{self, RequestStatus};
use crate::error::RightsError;
use entities::{ack, event, head, report, request, settings};

pub use migration::Migrator;

/// A page of rows and whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// True when another page exists.
    pub more: bool,
}

/// Filters of ListRequests.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only this status.
    pub status: Option<RequestStatus>,
    /// Only overdue requests as of this time.
    pub overdue_at: Option<DateTime<Utc>>,
    /// Only this type (stored name).
    pub request_type: Option<String>,
    /// Only this subject.
    pub subject_id: Option<String>,
    /// Only due before.
    pub due_before: Option<DateTime<Utc>>,
}

/// Filters of ListEvents and WatchEvents.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events of this request.
    pub rights_request_id: Option<String>,
    /// Only events of this subject.
    pub subject_id: Option<String>,
    /// Only these types (stored names); empty: all.
    pub types: Vec<String>,
    /// Only events this system has not acknowledged.
    pub unacked_by: Option<String>,
}

impl EventFilter {
    /// Whether `e` passes this filter: the same rule as the query of
    /// [`RightsStore::list_events`], for events already read (the feed hub's).
    pub fn matches(&self, e: &crate::model::Event) -> bool {
        self.rights_request_id
            .as_ref()
            .is_none_or(|r| *r == e.rights_request_id)
            && self.subject_id.as_ref().is_none_or(|s| *s == e.subject_id)
            && (self.types.is_empty() || self.types.iter().any(|t| t == e.event_type.as_str()))
            && self
                .unacked_by
                .as_ref()
                .is_none_or(|system| !e.confirmations.iter().any(|c| c.system == *system))
    }
}

/// A new event to append (its seq is assigned in the transaction).
pub type NewEvent = event::Model;

/// Attempts when a concurrent writer wins a race.
const MAX_ATTEMPTS: usize = 5;

/// The rights service's store.
#[derive(Clone, Debug)]
pub struct RightsStore {
    db: Db,
}

fn aborted() -> RightsError {
    RightsError::Api(ApiError::Aborted("changed concurrently; retry"))
}

impl RightsStore {
    /// One page of a master key rotation over the requests' data keys.
    pub async fn rewrap_data_keys(
        &self,
        keyring: &vern_seal::keyring::Keyring,
        request: &vern_proto::common::v1::RewrapDataKeysRequest,
    ) -> Result<vern_proto::common::v1::RewrapDataKeysResponse, ApiError> {
        request_keys().rewrap(&self.db, keyring, request).await
    }

    /// How many request data keys each key version wraps.
    pub async fn count_data_keys(
        &self,
        keyring: &vern_seal::keyring::Keyring,
    ) -> Result<vern_proto::common::v1::CountDataKeysResponse, ApiError> {
        request_keys().count(&self.db, keyring).await
    }

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
    ) -> Result<Option<R>, RightsError> {
        Ok(idempotency::replay(&self.db, key).await?)
    }

    /// Inserts a new request; the answer is its id.
    pub async fn insert_request(
        &self,
        row: request::Model,
        key: Option<&Key>,
    ) -> Result<String, RightsError> {
        let id = row.rights_request_id.clone();
        Ok(commit_once(&self.db, key, id, move |txn| {
            Box::pin(async move {
                row.into_active_model().reset_all().insert(txn).await?;
                Ok::<_, RightsError>(())
            })
        })
        .await?)
    }

    /// Up to `limit` feed events of older versions whose references are plaintext.
    pub async fn plaintext_feed_events(
        &self,
        limit: u64,
    ) -> Result<Vec<event::Model>, RightsError> {
        Ok(event::Entity::find()
            .filter(event::Column::ExternalRefs.ne("[]"))
            .filter(event::Column::ExternalRefsCt.is_null())
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Replaces an event's plaintext references by `sealed` (`None`: dropped, their
    /// key is gone). False when the row changed meanwhile.
    pub async fn seal_feed_refs(
        &self,
        old: &event::Model,
        sealed: Option<Vec<u8>>,
    ) -> Result<bool, RightsError> {
        Ok(event::Entity::update_many()
            .col_expr(event::Column::ExternalRefs, Expr::value("[]"))
            .col_expr(event::Column::ExternalRefsCt, Expr::value(sealed))
            .filter(event::Column::TenantId.eq(old.tenant_id.as_str()))
            .filter(event::Column::Seq.eq(old.seq))
            .filter(event::Column::ExternalRefs.eq(old.external_refs.as_str()))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1)
    }

    /// Up to `limit` requests whose case texts (verification note, extension and
    /// rejection reasons) an older version stored in plaintext columns.
    pub async fn plaintext_case_texts(
        &self,
        limit: u64,
    ) -> Result<Vec<request::Model>, RightsError> {
        use request::Column as C;
        Ok(request::Entity::find()
            .filter(
                Condition::any()
                    .add(C::VerificationNote.ne(""))
                    .add(C::ExtensionReason.ne(""))
                    .add(C::RejectionReason.ne("")),
            )
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Blanks a request's plaintext case texts and stores `personal`, its personal
    /// data sealed again with them in (unchanged when it was destroyed with its erased
    /// subject). The version is bumped, so a writer that read the row before cannot
    /// put the plaintext back. False when the row changed meanwhile.
    pub async fn seal_case_texts(
        &self,
        old: &request::Model,
        personal: Vec<u8>,
    ) -> Result<bool, RightsError> {
        use request::Column as C;
        Ok(request::Entity::update_many()
            .col_expr(C::Personal, Expr::value(personal))
            .col_expr(C::VerificationNote, Expr::value(""))
            .col_expr(C::ExtensionReason, Expr::value(""))
            .col_expr(C::RejectionReason, Expr::value(""))
            .col_expr(C::Version, Expr::col(C::Version).add(1))
            .filter(C::TenantId.eq(old.tenant_id.as_str()))
            .filter(C::RightsRequestId.eq(old.rights_request_id.as_str()))
            .filter(C::Version.eq(old.version))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1)
    }

    /// One request of the tenant.
    pub async fn request(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<request::Model>, RightsError> {
        Ok(
            request::Entity::find_by_id((tenant.to_owned(), id.to_owned()))
                .one(&self.db)
                .await?,
        )
    }

    /// Requests of all tenants by status, and how many open ones are past `now` — the
    /// `vern_rights_requests` gauges (counts only, no tenant or personal data).
    pub async fn status_counts(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(Vec<(String, i64)>, i64), RightsError> {
        let (by_status, overdue) = self.request_stats(None, now).await?;
        Ok((
            by_status.into_iter().map(|(s, n, _)| (s, n)).collect(),
            overdue,
        ))
    }

    /// Requests counted by status, each with its nearest deadline, and the open ones
    /// past their deadline at `now`: of `tenant`, or of every tenant (the metrics).
    pub async fn request_stats(
        &self,
        tenant: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<RequestStatsRows, RightsError> {
        use request::Column as C;
        use sea_orm::{PaginatorTrait, QuerySelect};
        let of_tenant = |q: sea_orm::Select<request::Entity>| match tenant {
            Some(t) => q.filter(C::TenantId.eq(t)),
            None => q,
        };
        let by_status: Vec<(String, i64, Option<DateTime<Utc>>)> =
            of_tenant(request::Entity::find())
                .select_only()
                .column(C::Status)
                // COUNT(*), not of a column: answered from rights_requests_status_idx.
                .column_as(sea_orm::sea_query::Expr::cust("COUNT(*)"), "n")
                .column_as(C::DueAt.min(), "nearest")
                .group_by(C::Status)
                .into_tuple()
                .all(&self.db)
                .await?;
        let overdue = of_tenant(request::Entity::find())
            .filter(C::DueAt.lt(now))
            .filter(C::Status.is_not_in([
                RequestStatus::Completed.as_str(),
                RequestStatus::Rejected.as_str(),
            ]))
            .count(&self.db)
            .await?;
        Ok((by_status, i64::try_from(overdue).unwrap_or(i64::MAX)))
    }

    /// A page of requests ordered by (due_at, id), after `after`.
    pub async fn list_requests(
        &self,
        tenant: &str,
        f: &RequestFilter,
        after: Option<(DateTime<Utc>, String)>,
        limit: u64,
    ) -> Result<Page<request::Model>, RightsError> {
        use request::Column as C;
        let mut q = request::Entity::find()
            .filter(C::TenantId.eq(tenant))
            .order_by_asc(C::DueAt)
            .order_by_asc(C::RightsRequestId);
        if let Some(s) = f.status {
            q = q.filter(C::Status.eq(s.as_str()));
        }
        if let Some(now) = f.overdue_at {
            q = q.filter(C::DueAt.lt(now)).filter(C::Status.is_not_in([
                RequestStatus::Completed.as_str(),
                RequestStatus::Rejected.as_str(),
            ]));
        }
        if let Some(t) = &f.request_type {
            q = q.filter(C::RequestType.eq(t.as_str()));
        }
        if let Some(s) = &f.subject_id {
            q = q.filter(C::SubjectId.eq(s.as_str()));
        }
        if let Some(d) = f.due_before {
            q = q.filter(C::DueAt.lt(d));
        }
        if let Some((due, id)) = after {
            q = q.filter(
                Condition::any().add(C::DueAt.gt(due)).add(
                    Condition::all()
                        .add(C::DueAt.eq(due))
                        .add(C::RightsRequestId.gt(id)),
                ),
            );
        }
        let mut items = q.limit(limit + 1).all(&self.db).await?;
        let more = items.len() as u64 > limit;
        items.truncate(limit as usize);
        Ok(Page { items, more })
    }

    /// Writes `updated` if the stored row still has `expected_version` (else ABORTED);
    /// the answer is the request id.
    pub async fn update_request(
        &self,
        updated: request::Model,
        expected_version: i64,
        key: Option<&Key>,
    ) -> Result<String, RightsError> {
        self.commit_request(updated, expected_version, vec![], None, key)
            .await
    }

    /// Writes `updated` (compare-and-set on the version) without an idempotency answer
    /// or audit event of its own: a step inside a call that commits those later.
    pub async fn mark(
        &self,
        updated: request::Model,
        expected_version: i64,
    ) -> Result<(), RightsError> {
        write_request(&self.db, updated, expected_version).await
    }

    /// The end of a fulfilment, in one transaction: appends `events` to the feed (gap-free
    /// seqs), stores the sealed report and writes the request (compare-and-set).
    pub async fn commit_request(
        &self,
        updated: request::Model,
        expected_version: i64,
        events: Vec<NewEvent>,
        report: Option<report::Model>,
        key: Option<&Key>,
    ) -> Result<String, RightsError> {
        self.commit(updated, expected_version, events, report, None, key)
            .await
    }

    /// The end of a fulfilled ERASURE: like [`RightsStore::commit_request`], and in the
    /// same transaction the personal content of every request of the erased subject is
    /// destroyed (see [`shred_subject`]).
    pub async fn commit_erasure(
        &self,
        updated: request::Model,
        expected_version: i64,
        events: Vec<NewEvent>,
        report: Option<report::Model>,
        erased_at: DateTime<Utc>,
        key: Option<&Key>,
    ) -> Result<String, RightsError> {
        let shred = Shred {
            subject_id: updated.subject_id.clone(),
            at: erased_at,
        };
        if shred.subject_id.is_empty() {
            return Err(RightsError::Api(ApiError::Internal(
                "erasure without a subject",
            )));
        }
        self.commit(updated, expected_version, events, report, Some(shred), key)
            .await
    }

    async fn commit(
        &self,
        updated: request::Model,
        expected_version: i64,
        events: Vec<NewEvent>,
        report: Option<report::Model>,
        shred: Option<Shred>,
        key: Option<&Key>,
    ) -> Result<String, RightsError> {
        let id = updated.rights_request_id.clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (updated, events, report, shred) = (
                updated.clone(),
                events.clone(),
                report.clone(),
                shred.clone(),
            );
            let result = commit_once(&self.db, key, id.clone(), move |txn| {
                Box::pin(async move {
                    let tenant = updated.tenant_id.clone();
                    append_events(txn, &tenant, events).await?;
                    if let Some(r) = report {
                        report::Entity::delete_by_id((
                            r.tenant_id.clone(),
                            r.rights_request_id.clone(),
                        ))
                        .exec(txn)
                        .await?;
                        r.into_active_model().reset_all().insert(txn).await?;
                    }
                    write_request(txn, updated, expected_version).await?;
                    if let Some(shred) = shred {
                        shred_subject(txn, &tenant, &shred.subject_id, shred.at, None).await?;
                    }
                    Ok::<_, RightsError>(())
                })
            })
            .await;
            match result {
                Err(ApiError::Aborted(_)) if attempt < MAX_ATTEMPTS => continue,
                other => return Ok(other?),
            }
        }
    }

    /// Empties the SQLite write-ahead log into the database file and truncates it, so
    /// page images written before a shredding (which still hold the destroyed keys) do
    /// not linger in `-wal`. Best effort: a busy checkpoint is retried by SQLite's own
    /// automatic checkpoints later. A no-op on PostgreSQL.
    pub async fn checkpoint(&self) {
        if self.db.get_database_backend() != DbBackend::Sqlite {
            return;
        }
        let res = self
            .db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA wal_checkpoint(TRUNCATE)",
            ))
            .await;
        match res {
            Ok(Some(row)) if row.try_get_by_index::<i32>(0).unwrap_or(1) == 0 => {}
            Ok(_) => tracing::warn!(kind = "checkpoint_busy", "WAL checkpoint incomplete"),
            Err(e) => {
                tracing::warn!(kind = ?classify(&e), "WAL checkpoint failed");
            }
        }
    }

    /// The sealed report of a request.
    pub async fn report(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<report::Model>, RightsError> {
        Ok(
            report::Entity::find_by_id((tenant.to_owned(), id.to_owned()))
                .one(&self.db)
                .await?,
        )
    }

    /// The events a request caused, by seq.
    pub async fn events_of_request(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Vec<event::Model>, RightsError> {
        events_of_request(&self.db, tenant, id).await
    }

    /// The confirmations of these events.
    pub async fn acks_of(
        &self,
        tenant: &str,
        event_ids: &[String],
    ) -> Result<Vec<ack::Model>, RightsError> {
        acks_of(&self.db, tenant, event_ids).await
    }

    /// The last seq of `tenant`'s feed (0 before its first event).
    pub async fn feed_head(&self, tenant: &str) -> Result<i64, RightsError> {
        Ok(head::Entity::find_by_id(tenant.to_owned())
            .one(&self.db)
            .await?
            .map_or(0, |h| h.last_seq))
    }

    /// A page of the feed after `after_seq`, oldest first.
    pub async fn list_events(
        &self,
        tenant: &str,
        f: &EventFilter,
        after_seq: i64,
        limit: u64,
    ) -> Result<Page<event::Model>, RightsError> {
        use event::Column as C;
        let mut q = event::Entity::find()
            .filter(C::TenantId.eq(tenant))
            .filter(C::Seq.gt(after_seq))
            .order_by_asc(C::Seq);
        if let Some(r) = &f.rights_request_id {
            q = q.filter(C::RightsRequestId.eq(r.as_str()));
        }
        if let Some(s) = &f.subject_id {
            q = q.filter(C::SubjectId.eq(s.as_str()));
        }
        if !f.types.is_empty() {
            q = q.filter(C::EventType.is_in(f.types.iter().map(String::as_str)));
        }
        if let Some(system) = &f.unacked_by {
            let mut sub = Query::select();
            sub.column(ack::Column::EventId)
                .from(ack::Entity)
                .and_where(Expr::col(ack::Column::TenantId).eq(tenant))
                .and_where(Expr::col(ack::Column::System).eq(system.as_str()));
            q = q.filter(C::EventId.not_in_subquery(sub.to_owned()));
        }
        let mut items = q.limit(limit + 1).all(&self.db).await?;
        let more = items.len() as u64 > limit;
        items.truncate(limit as usize);
        Ok(Page { items, more })
    }

    /// One event by id or by seq.
    pub async fn event(
        &self,
        tenant: &str,
        by: EventRef<'_>,
    ) -> Result<Option<event::Model>, RightsError> {
        let q = event::Entity::find().filter(event::Column::TenantId.eq(tenant));
        let q = match by {
            EventRef::Id(id) => q.filter(event::Column::EventId.eq(id)),
            EventRef::Seq(seq) => q.filter(event::Column::Seq.eq(seq)),
        };
        Ok(q.one(&self.db).await?)
    }

    /// Records that `system` acted on the event (a repeat is a no-op) and, when that was
    /// the last confirmation a fulfilled request waited for, completes the request — in
    /// one transaction. The answer is the event id.
    pub async fn ack(
        &self,
        tenant: &str,
        ev: event::Model,
        system: &str,
        acked_by: &str,
        now: DateTime<Utc>,
        key: Option<&Key>,
    ) -> Result<String, RightsError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (tenant, ev, system, acked_by) = (
                tenant.to_owned(),
                ev.clone(),
                system.to_owned(),
                acked_by.to_owned(),
            );
            let answer = ev.event_id.clone();
            let result = commit_once(&self.db, key, answer, move |txn| {
                Box::pin(async move {
                    // Acks of one request serialise on its row: two systems' last acks
                    // in concurrent READ COMMITTED transactions would each miss the
                    // other's and leave the request IN_PROGRESS. (SQLite: a no-op, its
                    // write transactions are serial.)
                    if !ev.rights_request_id.is_empty() {
                        request::Entity::find_by_id((tenant.clone(), ev.rights_request_id.clone()))
                            .lock_exclusive()
                            .one(txn)
                            .await?;
                    }
                    let exists = ack::Entity::find_by_id((
                        tenant.clone(),
                        ev.event_id.clone(),
                        system.clone(),
                    ))
                    .one(txn)
                    .await?;
                    if exists.is_none() {
                        let inserted = ack::ActiveModel {
                            tenant_id: Set(tenant.clone()),
                            event_id: Set(ev.event_id.clone()),
                            system: Set(system.clone()),
                            acked_by: Set(acked_by),
                            ack_time: Set(now),
                        }
                        .insert(txn)
                        .await;
                        match inserted {
                            Ok(_) => {}
                            Err(e) if classify(&e) == DbFailure::UniqueViolation => {
                                return Err(aborted());
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    if ev.rights_request_id.is_empty() {
                        return Ok(());
                    }
                    complete_if_confirmed(txn, &tenant, &ev.rights_request_id, now).await
                })
            })
            .await;
            match result {
                Err(ApiError::Aborted(_)) if attempt < MAX_ATTEMPTS => continue,
                other => return Ok(other?),
            }
        }
    }

    /// The tenant's saved settings, if any.
    pub async fn settings(&self, tenant: &str) -> Result<Option<settings::Model>, RightsError> {
        Ok(settings::Entity::find_by_id(tenant.to_owned())
            .one(&self.db)
            .await?)
    }

    /// Saves the tenant's settings; the answer is the tenant id.
    pub async fn put_settings(
        &self,
        row: settings::Model,
        key: Option<&Key>,
    ) -> Result<String, RightsError> {
        let tenant = row.tenant_id.clone();
        Ok(commit_once(&self.db, key, tenant, move |txn| {
            Box::pin(async move {
                settings::Entity::delete_by_id(row.tenant_id.clone())
                    .exec(txn)
                    .await?;
                row.into_active_model().reset_all().insert(txn).await?;
                Ok::<_, RightsError>(())
            })
        })
        .await?)
    }

    /// ApplySubjectErasures: destroys the personal content held about each subject
    /// erased by the subjects service (see [`shred_subject`]), all in one transaction.
    /// An erasure carried out by one of this service's own requests spares that
    /// request: its fulfilment shreds in the same transaction as its completion, and a
    /// shredding here would fail that completion's compare-and-set. The answer is the
    /// number of erasures applied.
    pub async fn shred_erased(
        &self,
        tenant: &str,
        restrictions: Vec<RestrictionChange>,
        erasures: Vec<ErasedSubject>,
        key: Option<&Key>,
    ) -> Result<i32, RightsError> {
        let applied = i32::try_from(erasures.len() + restrictions.len()).unwrap_or(i32::MAX);
        let tenant = tenant.to_owned();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (tenant, erasures) = (tenant.clone(), erasures.clone());
            let restrictions = restrictions.clone();
            let result = commit_once(&self.db, key, applied, move |txn| {
                Box::pin(async move {
                    let mut feed = vec![];
                    // Restrictions first: nothing of a subject follows its erasure.
                    for r in restrictions {
                        // A request's own fulfilment puts its RESTRICTED event on the feed.
                        if r.by_request.is_none() {
                            feed.push(restriction_event(&tenant, &r)?);
                        }
                    }
                    for e in erasures {
                        if e.records.is_empty() {
                            shred_subject(
                                txn,
                                &tenant,
                                &e.subject_id,
                                e.at,
                                e.by_request.as_deref(),
                            )
                            .await?;
                        }
                        // A request's own fulfilment puts its ERASED event on the feed.
                        if e.by_request.is_none() {
                            feed.push(erasure_event(&tenant, &e)?);
                        }
                    }
                    append_events(txn, &tenant, feed).await
                })
            })
            .await;
            match result {
                Err(ApiError::Aborted(_)) if attempt < MAX_ATTEMPTS => continue,
                other => return Ok(other?),
            }
        }
    }
}

/// A subject the subjects service erased, or some of its records
/// (ApplySubjectErasures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasedSubject {
    /// The subject.
    pub subject_id: String,
    /// When it was erased.
    pub at: DateTime<Utc>,
    /// The rights request of this service that carried the erasure out, if any.
    pub by_request: Option<String>,
    /// Why (`None`: not said, an older subjects service; read as a direct erasure).
    pub cause: Option<crate::domain::ErasureCause>,
    /// Non-empty: only these records went; the subject remains.
    pub records: Vec<crate::model::ErasedRecord>,
    /// RETENTION: the policy whose period ended.
    pub policy_id: String,
}

/// A subject's restriction changed in the subjects service (ApplySubjectErasures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestrictionChange {
    /// The subject.
    pub subject_id: String,
    /// True: restricted; false: a restriction lifted.
    pub restricted: bool,
    /// The purposes concerned; empty: the whole subject.
    pub purposes: Vec<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// The rights request of this service it carried out, if any.
    pub by_request: Option<String>,
}

/// The feed event of a restriction (RESTRICTED) or its lifting (RESTRICTION_LIFTED)
/// that no rights request of this service carried out: recipients must restrict or
/// may process again (Art. 19). No external references, as for [`erasure_event`].
fn restriction_event(tenant: &str, r: &RestrictionChange) -> Result<NewEvent, RightsError> {
    let event_type = if r.restricted {
        domain::EventType::Restricted
    } else {
        domain::EventType::RestrictionLifted
    };
    Ok(event::Model {
        tenant_id: tenant.to_owned(),
        seq: 0,
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: event_type.as_str().to_owned(),
        subject_id: r.subject_id.clone(),
        external_refs: "[]".to_owned(),
        rights_request_id: String::new(),
        purposes: serde_json::to_string(&r.purposes)
            .map_err(|_| RightsError::Corrupt("purposes"))?,
        fields: "[]".to_owned(),
        retain_until_time: None,
        occur_time: r.at,
        external_refs_ct: None,
        detail: "{}".to_owned(),
    })
}

/// The feed event of an erasure no rights request carried out: ERASED, or
/// RECORDS_ERASED when only some records went. No external references: they are
/// sealed with a request's key and there is none; every integration knows the
/// subject by the id it checks consent with.
fn erasure_event(tenant: &str, e: &ErasedSubject) -> Result<NewEvent, RightsError> {
    let detail = crate::model::ErasureDetail {
        cause: Some(e.cause.unwrap_or(crate::domain::ErasureCause::Direct)),
        policy_id: e.policy_id.clone(),
        records: e.records.clone(),
    };
    let event_type = if e.records.is_empty() {
        domain::EventType::Erased
    } else {
        domain::EventType::RecordsErased
    };
    Ok(event::Model {
        tenant_id: tenant.to_owned(),
        seq: 0,
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: event_type.as_str().to_owned(),
        subject_id: e.subject_id.clone(),
        external_refs: "[]".to_owned(),
        rights_request_id: String::new(),
        purposes: "[]".to_owned(),
        fields: "[]".to_owned(),
        retain_until_time: None,
        occur_time: e.at,
        external_refs_ct: None,
        detail: serde_json::to_string(&detail).map_err(|_| RightsError::Corrupt("detail"))?,
    })
}

/// How an event is named.
#[derive(Debug, Clone, Copy)]
pub enum EventRef<'a> {
    /// By id.
    Id(&'a str),
    /// By seq.
    Seq(i64),
}

async fn events_of_request(
    db: &impl ConnectionTrait,
    tenant: &str,
    id: &str,
) -> Result<Vec<event::Model>, RightsError> {
    // Sorted here, not in SQL: ORDER BY seq lets SQLite's planner walk the primary key
    // through the tenant's whole feed instead of the request index.
    let mut events = event::Entity::find()
        .filter(event::Column::TenantId.eq(tenant))
        .filter(event::Column::RightsRequestId.eq(id))
        .all(db)
        .await?;
    events.sort_by_key(|e| e.seq);
    Ok(events)
}

async fn acks_of(
    db: &impl ConnectionTrait,
    tenant: &str,
    event_ids: &[String],
) -> Result<Vec<ack::Model>, RightsError> {
    if event_ids.is_empty() {
        return Ok(vec![]);
    }
    Ok(ack::Entity::find()
        .filter(ack::Column::TenantId.eq(tenant))
        .filter(ack::Column::EventId.is_in(event_ids.iter().map(String::as_str)))
        .order_by_asc(ack::Column::AckTime)
        .order_by_asc(ack::Column::System)
        .all(db)
        .await?)
}

/// Completes a fulfilled IN_PROGRESS request once every required system confirmed
/// every one of its events.
async fn complete_if_confirmed(
    txn: &impl ConnectionTrait,
    tenant: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), RightsError> {
    let Some(row) = request::Entity::find_by_id((tenant.to_owned(), id.to_owned()))
        .one(txn)
        .await?
    else {
        return Ok(());
    };
    if row.status != RequestStatus::InProgress.as_str() || !row.fulfilled {
        return Ok(());
    }
    let required: Vec<String> =
        serde_json::from_str(&row.required_systems).map_err(|_| RightsError::Corrupt("systems"))?;
    let events = events_of_request(txn, tenant, id).await?;
    let ids: Vec<String> = events.into_iter().map(|e| e.event_id).collect();
    let acks: Vec<(String, String)> = acks_of(txn, tenant, &ids)
        .await?
        .into_iter()
        .map(|a| (a.event_id, a.system))
        .collect();
    if !domain::pending_systems(&required, true, &ids, &acks).is_empty() {
        return Ok(());
    }
    let version = row.version;
    let updated = request::Model {
        status: RequestStatus::Completed.as_str().to_owned(),
        complete_time: Some(now),
        version: version + 1,
        update_time: std::cmp::max(now, row.update_time),
        ..row
    };
    write_request(txn, updated, version).await
}

/// Assigns gap-free seqs to `events` and inserts them. The feed head row is updated in
/// the same transaction, so concurrent appenders serialise on it and a rolled-back
/// transaction leaves no gap.
async fn append_events(
    txn: &impl ConnectionTrait,
    tenant: &str,
    events: Vec<NewEvent>,
) -> Result<(), RightsError> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len() as i64;
    let bumped = head::Entity::update_many()
        .col_expr(
            head::Column::LastSeq,
            Expr::col(head::Column::LastSeq).add(n),
        )
        .filter(head::Column::TenantId.eq(tenant))
        .exec(txn)
        .await?
        .rows_affected;
    let last = if bumped == 1 {
        head::Entity::find_by_id(tenant.to_owned())
            .one(txn)
            .await?
            .map(|h| h.last_seq)
            .ok_or(RightsError::Corrupt("feed head"))?
    } else {
        let inserted = head::ActiveModel {
            tenant_id: Set(tenant.to_owned()),
            last_seq: Set(n),
        }
        .insert(txn)
        .await;
        match inserted {
            Ok(_) => n,
            Err(e) if classify(&e) == DbFailure::UniqueViolation => return Err(aborted()),
            Err(e) => return Err(e.into()),
        }
    };
    let first = last - n + 1;
    for (i, mut e) in events.into_iter().enumerate() {
        e.tenant_id = tenant.to_owned();
        e.seq = first + i as i64;
        e.into_active_model().reset_all().insert(txn).await?;
    }
    Ok(())
}

/// Whose personal content an erasure destroys, and when.
#[derive(Debug, Clone)]
struct Shred {
    subject_id: String,
    at: DateTime<Utc>,
}

/// Destroys the personal content the rights service holds about an erased subject
/// (Art. 17; crypto-shredding): for every request of the subject in the tenant the
/// sealed identity, description, corrections and case texts (verification note,
/// extension and rejection reasons) are deleted and — except for ERASURE requests, whose reports hold
/// only ids, counts and what was kept — the data key and the sealed report deleted.
/// What stays is accountability evidence without personal content (Art. 5(2)): ids,
/// type, status, dates, outcome, events and confirmations. The version is bumped, so a
/// concurrent write of a row read before the shredding fails its compare-and-set
/// instead of writing the personal content back. `except` names a request left alone.
pub(crate) async fn shred_subject(
    txn: &impl ConnectionTrait,
    tenant: &str,
    subject: &str,
    at: DateTime<Utc>,
    except: Option<&str>,
) -> Result<(), RightsError> {
    use request::Column as C;
    let erasure = domain::RequestType::Erasure.as_str();
    let of_subject = || {
        let c = Condition::all()
            .add(C::TenantId.eq(tenant))
            .add(C::SubjectId.eq(subject));
        match except {
            Some(id) => c.add(C::RightsRequestId.ne(id)),
            None => c,
        }
    };
    let mut keyed = Query::select();
    keyed
        .column(C::RightsRequestId)
        .from(request::Entity)
        .cond_where(of_subject().add(C::RequestType.ne(erasure)));
    report::Entity::delete_many()
        .filter(report::Column::TenantId.eq(tenant))
        .filter(report::Column::RightsRequestId.in_subquery(keyed.to_owned()))
        .exec(txn)
        .await?;
    // The feed references sealed with those keys go with them (an ERASURE request's
    // stay: downstream systems need them to act on the erasure).
    event::Entity::update_many()
        .col_expr(event::Column::ExternalRefs, Expr::value("[]"))
        .col_expr(
            event::Column::ExternalRefsCt,
            Expr::value(Option::<Vec<u8>>::None),
        )
        .filter(event::Column::TenantId.eq(tenant))
        .filter(event::Column::RightsRequestId.in_subquery(keyed.to_owned()))
        .exec(txn)
        .await?;
    request::Entity::update_many()
        .col_expr(C::WrappedKey, Expr::value(Vec::<u8>::new()))
        .filter(of_subject().add(C::RequestType.ne(erasure)))
        .exec(txn)
        .await?;
    // The case texts are sealed in `personal`; plaintext columns an older version
    // wrote go too.
    request::Entity::update_many()
        .col_expr(C::Personal, Expr::value(Vec::<u8>::new()))
        .col_expr(C::VerificationNote, Expr::value(""))
        .col_expr(C::ExtensionReason, Expr::value(""))
        .col_expr(C::RejectionReason, Expr::value(""))
        .col_expr(
            C::PersonalErasedAt,
            Expr::col(C::PersonalErasedAt).if_null(at),
        )
        .col_expr(C::Version, Expr::col(C::Version).add(1))
        .col_expr(C::UpdateTime, Expr::value(at))
        .filter(of_subject())
        .exec(txn)
        .await?;
    Ok(())
}

async fn write_request(
    txn: &impl ConnectionTrait,
    updated: request::Model,
    expected_version: i64,
) -> Result<(), RightsError> {
    let tenant = updated.tenant_id.clone();
    let id = updated.rights_request_id.clone();
    let changed = request::Entity::update_many()
        .set(updated.into_active_model().reset_all())
        .filter(request::Column::TenantId.eq(tenant))
        .filter(request::Column::RightsRequestId.eq(id))
        .filter(request::Column::Version.eq(expected_version))
        .exec(txn)
        .await?
        .rows_affected;
    if changed != 1 {
        return Err(aborted());
    }
    Ok(())
}

/// The requests' table for master key rotation ([`vern_kit::keys`]).
pub fn request_keys() -> vern_kit::keys::WrappedKeys<request::Entity> {
    vern_kit::keys::WrappedKeys {
        tenant: request::Column::TenantId,
        owner: request::Column::RightsRequestId,
        wrapped: request::Column::WrappedKey,
        aad: crate::seal::key_aad,
        list: "rights_request_keys",
    }
}
