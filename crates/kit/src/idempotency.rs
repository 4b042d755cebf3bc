//! Idempotency by `request_id` (AIP-155): the first answer to a request is stored in
//! the same transaction as its change; a retry with the same id gets that answer back
//! and writes nothing. The same id with a different request is refused.
//!
//! Every service includes [`Migration`] in its migrator, so each owns its own
//! `idempotency_keys` table (its own file or schema).

use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait};
use sea_orm_migration::prelude::{
    ColumnDef, DeriveIden, Index, MigrationName, MigrationTrait, SchemaManager, Table,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Stored answers, keyed by (scope, request_id).
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One stored answer.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        /// The tenant the request ran for, or `-` for platform-level calls.
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        /// The caller's request id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        /// The RPC, e.g. `CreateTenant`.
        pub method: String,
        /// SHA-256 of the request, hex.
        pub request_hash: String,
        /// The answer, JSON.
        pub response: String,
        /// When it was stored.
        pub create_time: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The idempotency key of one call.
#[derive(Debug, Clone)]
pub struct Key {
    scope: String,
    request_id: String,
    method: &'static str,
    request_hash: String,
    /// Hashes an earlier answer may also have been stored under (the request's
    /// fingerprint under a previous key, during a re-index); never written.
    alternatives: Vec<String>,
}

impl Key {
    /// The key of a call, or `None` when the caller sent no `request_id`. `request`
    /// is any stable encoding of the whole request (e.g. its protobuf bytes).
    pub fn new(
        scope: Option<&str>,
        request_id: &str,
        method: &'static str,
        request: &[u8],
    ) -> Option<Self> {
        if request_id.is_empty() {
            return None;
        }
        Some(Self {
            scope: scope.unwrap_or("-").to_owned(),
            request_id: request_id.to_owned(),
            method,
            request_hash: hex::encode(Sha256::digest(request)),
            alternatives: vec![],
        })
    }

    /// The key of a call whose request is known by several fingerprints (the same
    /// request under the current and a previous index key): stored under the first,
    /// matching any. `None` when `request_id` is empty or no fingerprint is given.
    pub fn fingerprinted(
        scope: Option<&str>,
        request_id: &str,
        method: &'static str,
        fingerprints: &[[u8; 32]],
    ) -> Option<Self> {
        let (first, rest) = fingerprints.split_first()?;
        let key = Self::new(scope, request_id, method, first)?;
        Some(rest.iter().fold(key, |k, f| k.also_matching(f)))
    }

    /// The same key, also matching an answer stored under this other encoding of the
    /// same request (its fingerprint under the previous index key while a re-index
    /// runs). Answers are still stored under the first encoding.
    pub fn also_matching(mut self, request: &[u8]) -> Self {
        self.alternatives.push(hex::encode(Sha256::digest(request)));
        self
    }

    /// Whether a stored answer belongs to this same request.
    fn matches(&self, method: &str, request_hash: &str) -> bool {
        method == self.method
            && (request_hash == self.request_hash
                || self.alternatives.iter().any(|a| a == request_hash))
    }

    /// The caller's request id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
}

/// The stored answer for `key`, if this request was answered before. A different
/// request under the same id is FAILED_PRECONDITION.
pub async fn replay<R: DeserializeOwned>(
    db: &impl ConnectionTrait,
    key: Option<&Key>,
) -> Result<Option<R>, ApiError> {
    let Some(key) = key else { return Ok(None) };
    let found = entity::Entity::find_by_id((key.scope.clone(), key.request_id.clone()))
        .one(db)
        .await
        .map_err(|e| crate::db::api_error(&e))?;
    let Some(found) = found else { return Ok(None) };
    if !key.matches(&found.method, &found.request_hash) {
        return Err(ApiError::precondition(
            "REQUEST_ID_REUSED",
            "request_id",
            "request_id was already used for a different request",
        ));
    }
    serde_json::from_str(&found.response)
        .map(Some)
        .map_err(|_| ApiError::Internal("stored answer unreadable"))
}

/// The stored answers of several keys of one scope in one query, by request id: a
/// request answered before maps to its answer, one whose id was used for a different
/// request to FAILED_PRECONDITION (as [`replay`]); a request never answered is absent.
pub async fn replay_many<R: DeserializeOwned>(
    db: &impl ConnectionTrait,
    keys: &[&Key],
) -> Result<std::collections::HashMap<String, Result<R, ApiError>>, ApiError> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let mut out = std::collections::HashMap::new();
    let mut by_scope: std::collections::BTreeMap<&str, Vec<&Key>> = Default::default();
    for k in keys {
        by_scope.entry(k.scope.as_str()).or_default().push(k);
    }
    for (scope, keys) in by_scope {
        for chunk in keys.chunks(500) {
            let found = entity::Entity::find()
                .filter(entity::Column::Scope.eq(scope))
                .filter(
                    entity::Column::RequestId.is_in(chunk.iter().map(|k| k.request_id.as_str())),
                )
                .all(db)
                .await
                .map_err(|e| crate::db::api_error(&e))?;
            let found: std::collections::HashMap<&str, &entity::Model> =
                found.iter().map(|f| (f.request_id.as_str(), f)).collect();
            for key in chunk {
                let Some(f) = found.get(key.request_id.as_str()) else {
                    continue;
                };
                let answer = if !key.matches(&f.method, &f.request_hash) {
                    Err(ApiError::precondition(
                        "REQUEST_ID_REUSED",
                        "request_id",
                        "request_id was already used for a different request",
                    ))
                } else {
                    serde_json::from_str(&f.response)
                        .map_err(|_| ApiError::Internal("stored answer unreadable"))
                };
                out.insert(key.request_id.clone(), answer);
            }
        }
    }
    Ok(out)
}

/// Stores the answers of several keys inside the caller's transaction, with
/// multi-row inserts.
pub async fn record_many<R: Serialize>(
    txn: &impl ConnectionTrait,
    answers: &[(&Key, R)],
) -> Result<(), DbErr> {
    let now = crate::time::now();
    for chunk in answers.chunks(200) {
        let rows = chunk
            .iter()
            .map(|(key, response)| {
                let response =
                    serde_json::to_string(response).map_err(|e| DbErr::Json(e.to_string()))?;
                Ok(entity::ActiveModel {
                    scope: Set(key.scope.clone()),
                    request_id: Set(key.request_id.clone()),
                    method: Set(key.method.to_owned()),
                    request_hash: Set(key.request_hash.clone()),
                    response: Set(response),
                    create_time: Set(now),
                })
            })
            .collect::<Result<Vec<_>, DbErr>>()?;
        if rows.is_empty() {
            continue;
        }
        entity::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// Stores the answer for `key` inside the caller's transaction.
pub async fn record<R: Serialize>(
    txn: &impl ConnectionTrait,
    key: Option<&Key>,
    response: &R,
) -> Result<(), DbErr> {
    let Some(key) = key else { return Ok(()) };
    let response = serde_json::to_string(response).map_err(|e| DbErr::Json(e.to_string()))?;
    entity::ActiveModel {
        scope: Set(key.scope.clone()),
        request_id: Set(key.request_id.clone()),
        method: Set(key.method.to_owned()),
        request_hash: Set(key.request_hash.clone()),
        response: Set(response),
        create_time: Set(crate::time::now()),
    }
    .insert(txn)
    .await?;
    Ok(())
}

/// After a failed attempt: if a concurrent call with the same key won the race, its
/// answer is the answer to this one too.
pub async fn replay_after_failure<R: DeserializeOwned>(
    db: &impl ConnectionTrait,
    key: Option<&Key>,
    failure: ApiError,
) -> Result<R, ApiError> {
    // The database is unreachable: asking it again only doubles the time to fail.
    if matches!(failure, ApiError::Unavailable) {
        return Err(failure);
    }
    match replay(db, key).await {
        Ok(Some(r)) => Ok(r),
        _ => Err(failure),
    }
}

/// The work of one mutating call inside its transaction.
pub type Work<'t, E> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), E>> + Send + 't>>;

/// Runs `work` and stores `answer` under `key` in one transaction, then returns
/// `answer`. If anything fails and a concurrent call with the same key committed
/// first, its answer is returned instead of the failure.
pub async fn commit_once<R, E, F>(
    db: &crate::db::Db,
    key: Option<&Key>,
    answer: R,
    work: F,
) -> Result<R, ApiError>
where
    R: Serialize + DeserializeOwned,
    E: Into<ApiError> + From<DbErr>,
    F: for<'t> FnOnce(&'t sea_orm::DatabaseTransaction) -> Work<'t, E>,
{
    use sea_orm::TransactionTrait;
    // The audit event of the call, if it is audited: committed with the change.
    let audit = crate::audit::event_for_commit(
        serde_json::to_value(&answer).ok().as_ref(),
        key.map_or("", |k| k.request_id.as_str()),
    );
    let attempt: Result<(), E> = crate::telemetry::db_span("transaction", async {
        // On SQLite the write lock is taken at BEGIN (waiting under busy_timeout): a
        // deferred transaction that reads first fails at once with SQLITE_BUSY_SNAPSHOT
        // when another connection (e.g. an outbox relay) commits before its first write.
        let txn = if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
            db.begin_with_options(sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?
        } else {
            db.begin().await?
        };
        work(&txn).await?;
        record(&txn, key, &answer).await?;
        if let Some(event) = &audit {
            crate::audit::enqueue(&txn, event).await?;
        }
        txn.commit().await?;
        Ok(())
    })
    .await;
    match attempt {
        Ok(()) => {
            if audit.is_some() {
                crate::audit::mark_emitted();
            }
            Ok(answer)
        }
        Err(e) => replay_after_failure(db, key, e.into()).await,
    }
}

/// Runs `work` in one transaction with the answers of several rows of one call (each
/// under its own key) and one audit event per created subject, `(subject_id,
/// request_id)`, built from the call's audit scope (the event of CreateSubject, one per
/// subject). Unlike [`commit_once`] a failure is returned as it is: the caller decides
/// (a lost race on a key or a unique index is worth looking everything up again).
pub async fn commit_rows<R, E, F>(
    db: &crate::db::Db,
    answers: &[(&Key, R)],
    subjects: &[(String, String)],
    work: F,
) -> Result<(), E>
where
    R: Serialize,
    E: From<DbErr>,
    F: for<'t> FnOnce(&'t sea_orm::DatabaseTransaction) -> Work<'t, E>,
{
    use sea_orm::TransactionTrait;
    let events: Vec<_> = subjects
        .iter()
        .filter_map(|(subject_id, request_id)| {
            crate::audit::event_for_subject(subject_id, request_id)
        })
        .collect();
    let emitted = !events.is_empty();
    crate::telemetry::db_span("transaction", async {
        let txn = if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
            db.begin_with_options(sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?
        } else {
            db.begin().await?
        };
        work(&txn).await?;
        record_many(&txn, answers).await?;
        crate::audit::enqueue_many(&txn, events).await?;
        txn.commit().await?;
        Ok::<(), E>(())
    })
    .await?;
    if emitted {
        crate::audit::mark_emitted();
    }
    Ok(())
}

/// Creates the `idempotency_keys` table.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0000_idempotency_keys"
    }
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Scope,
    RequestId,
    Method,
    RequestHash,
    Response,
    CreateTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(IdempotencyKeys::Scope).string().not_null())
                    .col(
                        ColumnDef::new(IdempotencyKeys::RequestId)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(IdempotencyKeys::Method).string().not_null())
                    .col(
                        ColumnDef::new(IdempotencyKeys::RequestHash)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(IdempotencyKeys::Response).text().not_null())
                    .col(
                        ColumnDef::new(IdempotencyKeys::CreateTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Scope)
                            .col(IdempotencyKeys::RequestId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_matches_its_own_request_and_its_alternatives_only() {
        let key = Key::new(Some("t"), "r-1", "CreateSubject", b"under new key").expect("key");
        let hash = |b: &[u8]| hex::encode(Sha256::digest(b));
        assert!(key.matches("CreateSubject", &hash(b"under new key")));
        assert!(!key.matches("CreateSubject", &hash(b"under old key")));
        assert!(!key.matches("UpdateSubject", &hash(b"under new key")));
        let key = key.also_matching(b"under old key");
        assert!(key.matches("CreateSubject", &hash(b"under old key")));
        assert!(!key.matches("CreateSubject", &hash(b"something else")));
        // The stored hash stays the first encoding's.
        assert_eq!(key.request_hash, hash(b"under new key"));
    }
}
