//! Persistence of the subjects service: the main store ([`SubjectStore`]: subjects,
//! blind index, external references, records, outbox, idempotency keys) and the
//! separate key store ([`KeyStore`]). The store sees only ciphertexts and digests;
//! sealing and opening happen in the use cases. Every query filters by tenant.
//!
//! Writes go through a [`Batch`]: the use case computes every row change of a call,
//! and [`SubjectStore::apply`] applies them, the outbox notifications and the
//! idempotency answer in one transaction.

pub mod entities;
pub mod keys;
pub mod migration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Query;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use vern_kit::db::Db;
use vern_kit::db::DbTarget;
use vern_kit::idempotency::{self, Key, commit_once};

use crate::domain::{IdentifierKind, PurgeFilter, SubjectState};
use crate::error::{SubjectError, unique_or};
use entities::{external_ref, lookup, record, subject};

pub use keys::KeyStore;
pub use migration::{KeyMigrator, Migrator};

/// Outbox topic of subject state changes (for the consents service).
pub const STATE_TOPIC: &str = "subject_state";
/// Outbox topic of erasures (for the rights service, which destroys its copies).
pub const ERASURE_TOPIC: &str = "subject_erasure";

/// A page of results and whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// True when another page exists.
    pub more: bool,
}

/// Where a record sorts among its subject's records, and its stored size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    /// When collected.
    pub collected_at: DateTime<Utc>,
    /// The record.
    pub record_id: String,
    /// Bytes of its sealed value, field, source, purposes and legal reference.
    pub bytes: usize,
}

/// Filter of ListSubjects.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this state.
    pub state: Option<SubjectState>,
    /// Only subjects with a reference in this system.
    pub external_system: Option<String>,
}

/// Every row change of one call, applied in one transaction by [`SubjectStore::apply`]
/// in field order. Updates are guarded by the row's `update_time` as read: if it
/// changed meanwhile, nothing is written and the call fails with
/// [`SubjectError::Conflict`].
#[derive(Debug, Default)]
pub struct Batch {
    /// New subjects.
    pub insert_subjects: Vec<subject::Model>,
    /// Replaced subject rows, with the `update_time` they were read with.
    pub update_subjects: Vec<(subject::Model, DateTime<Utc>)>,
    /// Blind-index entries to remove: (subject, kind; `None`: every kind).
    pub delete_lookups: Vec<(String, Option<IdentifierKind>)>,
    /// Blind-index entries to add.
    pub insert_lookups: Vec<lookup::Model>,
    /// Subjects whose external references are all removed.
    pub delete_refs_of: Vec<String>,
    /// External references to add.
    pub insert_refs: Vec<external_ref::Model>,
    /// Subjects whose records are all removed.
    pub delete_records_of: Vec<String>,
    /// Records to remove, by id.
    pub delete_records: Vec<String>,
    /// Replaced record rows, with the `update_time` they were read with.
    pub update_records: Vec<(record::Model, DateTime<Utc>)>,
    /// New records.
    pub insert_records: Vec<record::Model>,
    /// Encoded state changes for the outbox (topic [`STATE_TOPIC`]).
    pub outbox: Vec<Vec<u8>>,
    /// Encoded erasure and restriction notices for the outbox (topic [`ERASURE_TOPIC`]).
    pub erasures: Vec<Vec<u8>>,
}

/// The subjects service's main store.
#[derive(Clone, Debug)]
pub struct SubjectStore {
    db: Db,
}

impl SubjectStore {
    /// Connects to `target` and runs the migrations.
    pub async fn open(target: &DbTarget) -> Result<Self, DbErr> {
        let db = vern_kit::db::connect_and_migrate::<Migrator>(target).await?;
        Ok(Self { db })
    }

    /// The connection (for the relay and tests).
    pub fn connection(&self) -> &Db {
        &self.db
    }

    /// A stored answer to an earlier call with the same request id.
    pub async fn replay<R: serde::de::DeserializeOwned>(
        &self,
        key: Option<&Key>,
    ) -> Result<Option<R>, SubjectError> {
        Ok(idempotency::replay(&self.db, key).await?)
    }

    /// Applies `batch` for `tenant` and stores `answer` under `key`, in one
    /// transaction. Returns `answer`, or the answer of a concurrent call with the same
    /// key that committed first.
    pub async fn apply<R>(
        &self,
        tenant: &str,
        batch: Batch,
        key: Option<&Key>,
        answer: R,
    ) -> Result<R, SubjectError>
    where
        R: serde::Serialize + serde::de::DeserializeOwned,
    {
        let tenant = tenant.to_owned();
        Ok(commit_once(&self.db, key, answer, move |txn| {
            Box::pin(async move { write(txn, &tenant, batch).await })
        })
        .await?)
    }

    /// Stored answers of several rows' keys, in one query (see
    /// [`idempotency::replay_many`]).
    pub async fn replay_many<R: serde::de::DeserializeOwned>(
        &self,
        keys: &[&Key],
    ) -> Result<std::collections::HashMap<String, Result<R, vern_kit::ApiError>>, SubjectError>
    {
        Ok(idempotency::replay_many(&self.db, keys).await?)
    }

    /// Applies the inserts of `batch` (new subjects with their blind-index entries,
    /// references, records and notifications) with multi-row inserts, stores every
    /// row's answer and one audit event per created subject `(subject_id,
    /// request_id)`, in one transaction. A unique violation (a race with another
    /// writer) comes back as [`SubjectError::Db`], nothing written.
    pub async fn apply_import(
        &self,
        tenant: &str,
        batch: Batch,
        answers: &[(&Key, String)],
        created: &[(String, String)],
    ) -> Result<(), SubjectError> {
        let tenant = tenant.to_owned();
        idempotency::commit_rows(&self.db, answers, created, move |txn| {
            Box::pin(async move { write_many(txn, &tenant, batch).await })
        })
        .await
    }

    /// The subjects holding identifiers of `kind` with these blind indexes, by digest.
    pub async fn find_by_digests(
        &self,
        tenant: &str,
        kind: IdentifierKind,
        digests: &[Vec<u8>],
    ) -> Result<std::collections::HashMap<Vec<u8>, String>, SubjectError> {
        let mut out = std::collections::HashMap::new();
        for chunk in digests.chunks(500) {
            if self.db.get_database_backend() == DbBackend::Postgres {
                let hex: Vec<String> = chunk
                    .iter()
                    .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
                    .collect();
                let rows = probe(
                    &self.db,
                    "SELECT l.digest, l.subject_id \
                     FROM json_array_elements_text($3::json) AS w(h) \
                     CROSS JOIN LATERAL (SELECT digest, subject_id FROM subject_lookups s \
                       WHERE s.tenant_id = $1 AND s.kind = $2 AND s.digest = decode(w.h, 'hex') LIMIT 1) l",
                    vec![tenant.into(), kind.as_str().into(), json(&hex)?.into()],
                )
                .await?;
                for r in rows {
                    out.insert(
                        r.try_get::<Vec<u8>>("", "digest")?,
                        r.try_get("", "subject_id")?,
                    );
                }
                continue;
            }
            let found = lookup::Entity::find()
                .filter(lookup::Column::TenantId.eq(tenant))
                .filter(lookup::Column::Kind.eq(kind.as_str()))
                .filter(lookup::Column::Digest.is_in(chunk.iter().cloned()))
                .all(&self.db)
                .await?;
            out.extend(found.into_iter().map(|l| (l.digest, l.subject_id)));
        }
        Ok(out)
    }

    /// The external-reference rows of the tenant with these `(system, ref_id)` keys
    /// (blind indexes, or plaintext ids of rows not sealed yet: the caller tells them
    /// apart by `ref_ct`).
    pub async fn refs_by_keys(
        &self,
        tenant: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<external_ref::Model>, SubjectError> {
        let mut out = vec![];
        for chunk in keys.chunks(500) {
            if self.db.get_database_backend() == DbBackend::Postgres {
                let pairs: Vec<[&str; 2]> = chunk
                    .iter()
                    .map(|(s, r)| [s.as_str(), r.as_str()])
                    .collect();
                let rows = probe(
                    &self.db,
                    "SELECT r.tenant_id, r.system, r.ref_id, r.subject_id, r.ref_ct, r.index_version \
                     FROM json_array_elements($2::json) AS w(k) \
                     CROSS JOIN LATERAL (SELECT * FROM external_refs e \
                       WHERE e.tenant_id = $1 AND e.system = w.k->>0 AND e.ref_id = w.k->>1 LIMIT 1) r",
                    vec![tenant.into(), json(&pairs)?.into()],
                )
                .await?;
                for r in rows {
                    out.push(external_ref::Model {
                        tenant_id: r.try_get("", "tenant_id")?,
                        system: r.try_get("", "system")?,
                        ref_id: r.try_get("", "ref_id")?,
                        subject_id: r.try_get("", "subject_id")?,
                        ref_ct: r.try_get("", "ref_ct")?,
                        index_version: r.try_get("", "index_version")?,
                    });
                }
                continue;
            }
            // SQLite: per system, an IN list on the last primary-key column (probes).
            let mut by_system: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for (system, ref_id) in chunk {
                by_system
                    .entry(system.as_str())
                    .or_default()
                    .push(ref_id.as_str());
            }
            for (system, ids) in by_system {
                out.extend(
                    external_ref::Entity::find()
                        .filter(external_ref::Column::TenantId.eq(tenant))
                        .filter(external_ref::Column::System.eq(system))
                        .filter(external_ref::Column::RefId.is_in(ids))
                        .all(&self.db)
                        .await?,
                );
            }
        }
        Ok(out)
    }

    /// One subject row.
    pub async fn subject(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Option<subject::Model>, SubjectError> {
        Ok(
            subject::Entity::find_by_id((tenant.to_owned(), subject_id.to_owned()))
                .one(&self.db)
                .await?,
        )
    }

    /// Several subject rows of one tenant.
    pub async fn subjects(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<subject::Model>, SubjectError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        Ok(subject::Entity::find()
            .filter(subject::Column::TenantId.eq(tenant))
            .filter(subject::Column::SubjectId.is_in(ids.iter().map(String::as_str)))
            .all(&self.db)
            .await?)
    }

    /// The external references of these subjects, ordered by system and id.
    pub async fn refs_of(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<external_ref::Model>, SubjectError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        // Sorted here, not in SQL: with an ORDER BY SQLite's planner (without statistics)
        // walks the tenant's whole primary key to skip the sort instead of using the
        // subject index — 20 ms a call at 20,000 subjects, growing with the tenant.
        let mut refs = external_ref::Entity::find()
            .filter(external_ref::Column::TenantId.eq(tenant))
            .filter(external_ref::Column::SubjectId.is_in(ids.iter().map(String::as_str)))
            .all(&self.db)
            .await?;
        refs.sort_by(|a, b| (&a.system, &a.ref_id).cmp(&(&b.system, &b.ref_id)));
        Ok(refs)
    }

    /// The records of these subjects, ordered by `collected_at` then id.
    pub async fn records_of(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<record::Model>, SubjectError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        // Sorted here for the reason given in `refs_of` (the planner would walk
        // `records_collected_idx` through the whole tenant).
        let mut records = record::Entity::find()
            .filter(record::Column::TenantId.eq(tenant))
            .filter(record::Column::SubjectId.is_in(ids.iter().map(String::as_str)))
            .all(&self.db)
            .await?;
        records.sort_by(|a, b| (a.collected_at, &a.record_id).cmp(&(b.collected_at, &b.record_id)));
        Ok(records)
    }

    /// Where each record of a subject sorts and how large it is, without its content,
    /// in the order of [`SubjectStore::records_of`] (for pages of records).
    pub async fn record_keys_of(
        &self,
        tenant: &str,
        subject_id: &str,
    ) -> Result<Vec<RecordKey>, SubjectError> {
        use sea_orm::QuerySelect;
        use sea_orm::sea_query::Expr;
        // Stored bytes of the sealed value and the names and metadata sent with it.
        let bytes = Expr::cust(
            "CAST(COALESCE(LENGTH(\"value_ct\"), 0) + LENGTH(\"field\") + LENGTH(\"source\") \
             + LENGTH(\"purposes\") + LENGTH(\"legal_reference\") AS BIGINT)",
        );
        let rows: Vec<(DateTime<Utc>, String, i64)> = record::Entity::find()
            .select_only()
            .column(record::Column::CollectedAt)
            .column(record::Column::RecordId)
            .column_as(bytes, "bytes")
            .filter(record::Column::TenantId.eq(tenant))
            .filter(record::Column::SubjectId.eq(subject_id))
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut keys: Vec<RecordKey> = rows
            .into_iter()
            .map(|(collected_at, record_id, bytes)| RecordKey {
                collected_at,
                record_id,
                bytes: usize::try_from(bytes).unwrap_or(0),
            })
            .collect();
        keys.sort_by(|a, b| (a.collected_at, &a.record_id).cmp(&(b.collected_at, &b.record_id)));
        Ok(keys)
    }

    /// Records by id (any subject of the tenant).
    pub async fn records(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<record::Model>, SubjectError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        Ok(record::Entity::find()
            .filter(record::Column::TenantId.eq(tenant))
            .filter(record::Column::RecordId.is_in(ids.iter().map(String::as_str)))
            .all(&self.db)
            .await?)
    }

    /// The subject holding the identifier with one of these blind indexes (the same
    /// value under the current and, during a re-index, the previous index key), if any.
    pub async fn find_by_digest(
        &self,
        tenant: &str,
        kind: IdentifierKind,
        digests: &[[u8; 32]],
    ) -> Result<Option<String>, SubjectError> {
        Ok(lookup::Entity::find()
            .filter(lookup::Column::TenantId.eq(tenant))
            .filter(lookup::Column::Kind.eq(kind.as_str()))
            .filter(lookup::Column::Digest.is_in(digests.iter().map(|d| d.to_vec())))
            .one(&self.db)
            .await?
            .map(|l| l.subject_id))
    }

    /// The subject holding this external reference, by one of its blind indexes
    /// `digests` (hex; current index key first) or, for a row of an older version not
    /// sealed yet, by the plaintext `ref_id`.
    pub async fn find_by_ref(
        &self,
        tenant: &str,
        system: &str,
        digests: &[String],
        ref_id: &str,
    ) -> Result<Option<String>, SubjectError> {
        let by_digest = external_ref::Entity::find()
            .filter(external_ref::Column::TenantId.eq(tenant))
            .filter(external_ref::Column::System.eq(system))
            .filter(external_ref::Column::RefId.is_in(digests.iter().map(String::as_str)))
            .one(&self.db)
            .await?;
        if let Some(r) = by_digest {
            return Ok(Some(r.subject_id));
        }
        Ok(external_ref::Entity::find_by_id((
            tenant.to_owned(),
            system.to_owned(),
            ref_id.to_owned(),
        ))
        .filter(external_ref::Column::RefCt.is_null())
        .one(&self.db)
        .await?
        .map(|r| r.subject_id))
    }

    /// Up to `limit` subjects after `after` (tenant, subject) whose restriction reason
    /// an older version stored in plaintext: not sealed, not empty and not vern's own
    /// `erasure_text`. Every tenant's: the pass at start seals them all.
    pub async fn plaintext_restriction_reasons(
        &self,
        erasure_text: &str,
        after: Option<&(String, String)>,
        limit: u64,
    ) -> Result<Vec<subject::Model>, SubjectError> {
        let mut q = subject::Entity::find()
            .filter(subject::Column::RestrictionReasonCt.is_null())
            .filter(subject::Column::RestrictionReason.ne(""))
            .filter(subject::Column::RestrictionReason.ne(erasure_text));
        if let Some((t, id)) = after {
            q = q.filter(
                Condition::any()
                    .add(subject::Column::TenantId.gt(t.as_str()))
                    .add(
                        Condition::all()
                            .add(subject::Column::TenantId.eq(t.as_str()))
                            .add(subject::Column::SubjectId.gt(id.as_str())),
                    ),
            );
        }
        Ok(q.order_by_asc(subject::Column::TenantId)
            .order_by_asc(subject::Column::SubjectId)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Replaces a plaintext restriction reason by its sealed form, unless the subject
    /// changed meanwhile (then false: the change wrote its own reason).
    pub async fn seal_restriction_reason(
        &self,
        old: &subject::Model,
        sealed: Vec<u8>,
    ) -> Result<bool, SubjectError> {
        use sea_orm::sea_query::Expr;
        let done = subject::Entity::update_many()
            .col_expr(subject::Column::RestrictionReasonCt, Expr::value(sealed))
            .col_expr(subject::Column::RestrictionReason, Expr::value(""))
            .filter(subject::Column::TenantId.eq(old.tenant_id.as_str()))
            .filter(subject::Column::SubjectId.eq(old.subject_id.as_str()))
            .filter(subject::Column::Version.eq(old.version))
            .filter(subject::Column::RestrictionReason.eq(old.restriction_reason.as_str()))
            .filter(subject::Column::RestrictionReasonCt.is_null())
            .exec(&self.db)
            .await?;
        Ok(done.rows_affected == 1)
    }

    /// Up to `limit` external references of older versions, still in plaintext.
    pub async fn plaintext_refs(
        &self,
        limit: u64,
    ) -> Result<Vec<external_ref::Model>, SubjectError> {
        Ok(external_ref::Entity::find()
            .filter(external_ref::Column::RefCt.is_null())
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Replaces a plaintext reference row by its sealed form (blind index as `ref_id`,
    /// the id sealed), in one transaction. False when the row changed meanwhile.
    pub async fn seal_ref(
        &self,
        old: &external_ref::Model,
        sealed: external_ref::Model,
    ) -> Result<bool, SubjectError> {
        use sea_orm::TransactionTrait;
        let txn = self.db.begin().await?;
        let deleted = external_ref::Entity::delete_many()
            .filter(external_ref::Column::TenantId.eq(old.tenant_id.as_str()))
            .filter(external_ref::Column::System.eq(old.system.as_str()))
            .filter(external_ref::Column::RefId.eq(old.ref_id.as_str()))
            .filter(external_ref::Column::RefCt.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        if deleted != 1 {
            return Ok(false);
        }
        external_ref::Entity::insert(sealed.into_active_model())
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Blind-index entries of every tenant after `after` (tenant, kind, digest) in key
    /// order, at most `limit` (a re-index walks them once; platform-wide, as the
    /// re-index is, and every rewrite is filtered by tenant).
    pub async fn lookups_after(
        &self,
        after: Option<(String, String, Vec<u8>)>,
        limit: u64,
    ) -> Result<Vec<lookup::Model>, SubjectError> {
        let mut q = lookup::Entity::find()
            .order_by_asc(lookup::Column::TenantId)
            .order_by_asc(lookup::Column::Kind)
            .order_by_asc(lookup::Column::Digest)
            .limit(limit);
        if let Some((t, k, d)) = after {
            q = q.filter(after_key(
                (lookup::Column::TenantId, t),
                (lookup::Column::Kind, k),
                (lookup::Column::Digest, d),
            ));
        }
        Ok(q.all(&self.db).await?)
    }

    /// Subjects of every tenant that are not erased, after `after` (tenant, subject id)
    /// in key order, at most `limit` (`vern subjects duplicates`).
    pub async fn live_subjects_after(
        &self,
        after: Option<(String, String)>,
        limit: u64,
    ) -> Result<Vec<subject::Model>, SubjectError> {
        let mut q = subject::Entity::find()
            .filter(subject::Column::State.ne(SubjectState::Erased.as_str()))
            .order_by_asc(subject::Column::TenantId)
            .order_by_asc(subject::Column::SubjectId)
            .limit(limit);
        if let Some((t, s)) = after {
            q = q.filter(
                Condition::any()
                    .add(subject::Column::TenantId.gt(t.clone()))
                    .add(
                        Condition::all()
                            .add(subject::Column::TenantId.eq(t))
                            .add(subject::Column::SubjectId.gt(s)),
                    ),
            );
        }
        Ok(q.all(&self.db).await?)
    }

    /// External-reference entries of every tenant after `after` (tenant, system,
    /// ref_id) in key order, at most `limit`.
    pub async fn refs_after(
        &self,
        after: Option<(String, String, String)>,
        limit: u64,
    ) -> Result<Vec<external_ref::Model>, SubjectError> {
        let mut q = external_ref::Entity::find()
            .order_by_asc(external_ref::Column::TenantId)
            .order_by_asc(external_ref::Column::System)
            .order_by_asc(external_ref::Column::RefId)
            .limit(limit);
        if let Some((t, s, r)) = after {
            q = q.filter(after_key(
                (external_ref::Column::TenantId, t),
                (external_ref::Column::System, s),
                (external_ref::Column::RefId, r),
            ));
        }
        Ok(q.all(&self.db).await?)
    }

    /// Rewrites index entries under index version `version`, in one transaction: each
    /// identifier entry gets its new digest, each reference its new `ref_id`, only if
    /// the row is still exactly as read (compare and set: an entry deleted or
    /// rewritten meanwhile by an erasure or a rectification is left alone). Returns
    /// the entries rewritten.
    pub async fn rekey_entries(
        &self,
        lookups: &[(lookup::Model, Vec<u8>)],
        refs: &[(external_ref::Model, String)],
        version: i32,
    ) -> Result<u64, SubjectError> {
        use sea_orm::TransactionTrait;
        use sea_orm::sea_query::Expr;
        let txn = self.db.begin().await?;
        let mut done = 0;
        for (old, digest) in lookups {
            done += lookup::Entity::update_many()
                .col_expr(lookup::Column::Digest, Expr::value(digest.clone()))
                .col_expr(lookup::Column::IndexVersion, Expr::value(version))
                .filter(lookup::Column::TenantId.eq(old.tenant_id.as_str()))
                .filter(lookup::Column::Kind.eq(old.kind.as_str()))
                .filter(lookup::Column::Digest.eq(old.digest.clone()))
                .filter(lookup::Column::SubjectId.eq(old.subject_id.as_str()))
                .filter(lookup::Column::IndexVersion.eq(old.index_version))
                .exec(&txn)
                .await?
                .rows_affected;
        }
        for (old, ref_id) in refs {
            done += external_ref::Entity::update_many()
                .col_expr(external_ref::Column::RefId, Expr::value(ref_id.as_str()))
                .col_expr(external_ref::Column::IndexVersion, Expr::value(version))
                .filter(external_ref::Column::TenantId.eq(old.tenant_id.as_str()))
                .filter(external_ref::Column::System.eq(old.system.as_str()))
                .filter(external_ref::Column::RefId.eq(old.ref_id.as_str()))
                .filter(external_ref::Column::SubjectId.eq(old.subject_id.as_str()))
                .filter(external_ref::Column::IndexVersion.eq(old.index_version))
                .exec(&txn)
                .await?
                .rows_affected;
        }
        txn.commit().await?;
        Ok(done)
    }

    /// `tenant`'s subjects counted by state (the stored state names).
    pub async fn state_counts(&self, tenant: &str) -> Result<Vec<(String, i64)>, SubjectError> {
        Ok(subject::Entity::find()
            .select_only()
            .column(subject::Column::State)
            // COUNT(*), not of a column: answered from subjects_state_idx alone.
            .column_as(sea_orm::sea_query::Expr::cust("COUNT(*)"), "n")
            .filter(subject::Column::TenantId.eq(tenant))
            .group_by(subject::Column::State)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Index entries per index version: (identifier entries, reference entries).
    pub async fn index_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<i32, (i64, i64)>, SubjectError> {
        let mut out: std::collections::BTreeMap<i32, (i64, i64)> = Default::default();
        let ids: Vec<(i32, i64)> = lookup::Entity::find()
            .select_only()
            .column(lookup::Column::IndexVersion)
            .column_as(lookup::Column::Digest.count(), "n")
            .group_by(lookup::Column::IndexVersion)
            .into_tuple()
            .all(&self.db)
            .await?;
        for (v, n) in ids {
            out.entry(v).or_default().0 = n;
        }
        let refs: Vec<(i32, i64)> = external_ref::Entity::find()
            .select_only()
            .column(external_ref::Column::IndexVersion)
            .column_as(external_ref::Column::RefId.count(), "n")
            .group_by(external_ref::Column::IndexVersion)
            .into_tuple()
            .all(&self.db)
            .await?;
        for (v, n) in refs {
            out.entry(v).or_default().1 = n;
        }
        Ok(out)
    }

    /// A page of a tenant's subjects ordered by (`create_time`, `subject_id`), after
    /// `after`.
    pub async fn list(
        &self,
        tenant: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: u64,
        filter: &ListFilter,
    ) -> Result<Page<subject::Model>, SubjectError> {
        let mut q = subject::Entity::find()
            .filter(subject::Column::TenantId.eq(tenant))
            .order_by_asc(subject::Column::CreateTime)
            .order_by_asc(subject::Column::SubjectId);
        if let Some((t, id)) = after {
            q = q.filter(
                Condition::any().add(subject::Column::CreateTime.gt(t)).add(
                    Condition::all()
                        .add(subject::Column::CreateTime.eq(t))
                        .add(subject::Column::SubjectId.gt(id)),
                ),
            );
        }
        if let Some(s) = filter.state {
            q = q.filter(subject::Column::State.eq(s.as_str()));
        }
        if let Some(system) = &filter.external_system {
            q = q.filter(
                subject::Column::SubjectId.in_subquery(
                    Query::select()
                        .column(external_ref::Column::SubjectId)
                        .from(external_ref::Entity)
                        .and_where(external_ref::Column::TenantId.eq(tenant))
                        .and_where(external_ref::Column::System.eq(system.as_str()))
                        .to_owned(),
                ),
            );
        }
        let mut items = q.limit(limit + 1).all(&self.db).await?;
        let more = items.len() as u64 > limit;
        items.truncate(limit as usize);
        Ok(Page { items, more })
    }

    /// The first `limit` records matching a purge filter, in id order.
    pub async fn purge_matches(
        &self,
        tenant: &str,
        filter: &PurgeFilter,
        limit: u64,
    ) -> Result<Vec<record::Model>, SubjectError> {
        if !filter.subject_ids.is_empty() {
            // Named subjects: their records through the subject index, sorted here (an
            // ORDER BY record_id would have SQLite walk the tenant's primary key).
            let mut records = purge_query(tenant, filter).all(&self.db).await?;
            records.sort_by(|a, b| a.record_id.cmp(&b.record_id));
            records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            return Ok(records);
        }
        Ok(purge_query(tenant, filter)
            .order_by_asc(record::Column::RecordId)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// How many records match a purge filter.
    pub async fn purge_count(
        &self,
        tenant: &str,
        filter: &PurgeFilter,
    ) -> Result<u64, SubjectError> {
        Ok(purge_query(tenant, filter).count(&self.db).await?)
    }
}

/// The records a purge matches: every set filter ANDed; never anonymised records,
/// never excluded subjects. Records kept after an erasure match only through
/// `retain_until_before` (and, with `include_open_ended`, those kept without an end),
/// and only of subjects awaiting erasure; otherwise only records of ACTIVE subjects
/// match, and only of subjects without restricted purposes (an Art. 18 restriction
/// keeps data from being swept).
fn purge_query(tenant: &str, f: &PurgeFilter) -> Select<record::Entity> {
    let mut q = record::Entity::find()
        .filter(record::Column::TenantId.eq(tenant))
        .filter(record::Column::SubjectId.is_not_null());
    if let Some(c) = f.category {
        q = q.filter(record::Column::Category.eq(c.as_str()));
    }
    if let Some(p) = &f.purpose {
        // Purpose keys are slugs ([a-z0-9-]): no LIKE wildcard, no JSON escaping.
        q = q.filter(record::Column::Purposes.like(format!("%\"{p}\"%")));
    }
    if let Some(t) = f.older_than {
        q = q.filter(record::Column::CollectedAt.lt(t));
    }
    if let Some(field) = &f.field {
        q = q.filter(record::Column::Field.eq(field.as_str()));
    }
    if !f.subject_ids.is_empty() {
        q = q.filter(record::Column::SubjectId.is_in(f.subject_ids.iter().map(String::as_str)));
    }
    if !f.exclude_subject_ids.is_empty() {
        q = q.filter(
            record::Column::SubjectId.is_not_in(f.exclude_subject_ids.iter().map(String::as_str)),
        );
    }
    let mut subjects = Query::select()
        .column(subject::Column::SubjectId)
        .from(subject::Entity)
        .and_where(subject::Column::TenantId.eq(tenant))
        .to_owned();
    match f.retain_until_before {
        Some(t) => {
            let mut ends = Condition::any().add(record::Column::RetainUntilTime.lt(t));
            if f.include_open_ended {
                ends = ends.add(record::Column::RetainUntilTime.is_null());
            }
            q = q.filter(record::Column::Restricted.eq(true)).filter(ends);
            subjects.and_where(subject::Column::EraseRequestTime.is_not_null());
        }
        None => {
            q = q.filter(record::Column::Restricted.eq(false));
            // A restriction for some purposes keeps the whole subject from sweeps until
            // it is lifted: erasing is processing (Art. 18(2)), and a restriction under
            // 18(1)(c) exists precisely to keep data a sweep would delete.
            subjects
                .and_where(subject::Column::State.eq(SubjectState::Active.as_str()))
                .and_where(subject::Column::RestrictedPurposes.eq("[]"));
        }
    }
    if let Some(t) = f.relationship_end_before {
        subjects.and_where(subject::Column::RelationshipEndTime.lt(t));
    }
    q.filter(record::Column::SubjectId.in_subquery(subjects))
}

async fn write(txn: &DatabaseTransaction, tenant: &str, b: Batch) -> Result<(), SubjectError> {
    for s in b.insert_subjects {
        subject::Entity::insert(s.into_active_model())
            .exec_without_returning(txn)
            .await?;
    }
    for (s, expected) in b.update_subjects {
        let id = s.subject_id.clone();
        let res = subject::Entity::update_many()
            .set(s.into_active_model().reset_all())
            .filter(subject::Column::TenantId.eq(tenant))
            .filter(subject::Column::SubjectId.eq(id))
            .filter(subject::Column::UpdateTime.eq(expected))
            .exec(txn)
            .await?;
        if res.rows_affected != 1 {
            return Err(SubjectError::Conflict);
        }
    }
    for (subject_id, kind) in b.delete_lookups {
        let mut q = lookup::Entity::delete_many()
            .filter(lookup::Column::TenantId.eq(tenant))
            .filter(lookup::Column::SubjectId.eq(subject_id));
        if let Some(k) = kind {
            q = q.filter(lookup::Column::Kind.eq(k.as_str()));
        }
        q.exec(txn).await?;
    }
    for l in b.insert_lookups {
        let kind = IdentifierKind::parse(&l.kind).ok_or_else(|| corrupt("subject_lookups.kind"))?;
        lookup::Entity::insert(l.into_active_model())
            .exec_without_returning(txn)
            .await
            .map_err(|e| unique_or(e, SubjectError::IdentifierTaken(kind)))?;
    }
    if !b.delete_refs_of.is_empty() {
        external_ref::Entity::delete_many()
            .filter(external_ref::Column::TenantId.eq(tenant))
            .filter(
                external_ref::Column::SubjectId.is_in(b.delete_refs_of.iter().map(String::as_str)),
            )
            .exec(txn)
            .await?;
    }
    for r in b.insert_refs {
        external_ref::Entity::insert(r.into_active_model())
            .exec_without_returning(txn)
            .await
            .map_err(|e| unique_or(e, SubjectError::ExternalRefTaken))?;
    }
    if !b.delete_records_of.is_empty() {
        record::Entity::delete_many()
            .filter(record::Column::TenantId.eq(tenant))
            .filter(record::Column::SubjectId.is_in(b.delete_records_of.iter().map(String::as_str)))
            .exec(txn)
            .await?;
    }
    for chunk in b.delete_records.chunks(500) {
        let res = record::Entity::delete_many()
            .filter(record::Column::TenantId.eq(tenant))
            .filter(record::Column::RecordId.is_in(chunk.iter().map(String::as_str)))
            .exec(txn)
            .await?;
        if res.rows_affected != chunk.len() as u64 {
            return Err(SubjectError::Conflict);
        }
    }
    for (r, expected) in b.update_records {
        let id = r.record_id.clone();
        let res = record::Entity::update_many()
            .set(r.into_active_model().reset_all())
            .filter(record::Column::TenantId.eq(tenant))
            .filter(record::Column::RecordId.eq(id))
            .filter(record::Column::UpdateTime.eq(expected))
            .exec(txn)
            .await?;
        if res.rows_affected != 1 {
            return Err(SubjectError::Conflict);
        }
    }
    for r in b.insert_records {
        record::Entity::insert(r.into_active_model())
            .exec_without_returning(txn)
            .await?;
    }
    for payload in b.outbox {
        vern_kit::outbox::enqueue(txn, tenant, STATE_TOPIC, payload).await?;
    }
    for payload in b.erasures {
        vern_kit::outbox::enqueue(txn, tenant, ERASURE_TOPIC, payload).await?;
    }
    Ok(())
}

/// The inserts of an import batch, as multi-row statements (chunks small enough for
/// SQLite's and PostgreSQL's parameter limits).
async fn write_many(txn: &DatabaseTransaction, tenant: &str, b: Batch) -> Result<(), SubjectError> {
    async fn insert<E, A, M>(txn: &DatabaseTransaction, rows: Vec<M>) -> Result<(), DbErr>
    where
        E: EntityTrait,
        A: sea_orm::ActiveModelTrait<Entity = E> + Send,
        M: IntoActiveModel<A>,
    {
        let mut rows = rows.into_iter().map(IntoActiveModel::into_active_model);
        loop {
            let chunk: Vec<A> = rows.by_ref().take(100).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            E::insert_many(chunk).exec_without_returning(txn).await?;
        }
    }
    insert(txn, b.insert_subjects).await?;
    insert(txn, b.insert_lookups).await?;
    insert(txn, b.insert_refs).await?;
    insert(txn, b.insert_records).await?;
    vern_kit::outbox::enqueue_many(txn, tenant, STATE_TOPIC, b.outbox).await?;
    Ok(())
}

/// Rows after the key (a, b, c) in (a, b, c) order.
fn after_key<A, B, C, VA, VB, VC>(a: (A, VA), b: (B, VB), c: (C, VC)) -> Condition
where
    A: ColumnTrait,
    B: ColumnTrait,
    C: ColumnTrait,
    VA: Into<sea_orm::Value> + Clone,
    VB: Into<sea_orm::Value> + Clone,
    VC: Into<sea_orm::Value>,
{
    Condition::any()
        .add(a.0.gt(a.1.clone()))
        .add(
            Condition::all()
                .add(a.0.eq(a.1.clone()))
                .add(b.0.gt(b.1.clone())),
        )
        .add(
            Condition::all()
                .add(a.0.eq(a.1))
                .add(b.0.eq(b.1))
                .add(c.0.gt(c.1)),
        )
}

/// Runs a PostgreSQL lookup of many keys written as a LATERAL join over a JSON list:
/// one primary-key probe per key whatever the planner believes of the table's size
/// (the `LIMIT 1` of a key that is the primary key keeps the planner from flattening
/// the join into a hash join over the tenant's rows).
/// (`col = ANY($n)` or `IN ($3, …)` let it take the array as a filter over the whole
/// tenant when the statistics are stale, as after a bulk import: 878 ms instead of
/// 2 ms for 500 keys at 48,000 rows; BENCHMARKS.md, "Import: what slowed it down".)
async fn probe(
    db: &Db,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
    use sea_orm::ConnectionTrait;
    db.query_all_raw(sea_orm::Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await
}

/// A stored value this build does not know.
pub(crate) fn corrupt(what: &str) -> DbErr {
    DbErr::Type(format!("unknown stored value in {what}"))
}

/// JSON text of a list column.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String, DbErr> {
    serde_json::to_string(v).map_err(|e| DbErr::Json(e.to_string()))
}

/// A list column's JSON text.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, DbErr> {
    serde_json::from_str(s).map_err(|e| DbErr::Json(e.to_string()))
}
