//! The key store: each subject's data key, wrapped by its tenant's key, in a database
//! of its own (its own SQLite file or PostgreSQL schema, `subject_keys`).
//!
//! Why separate: erasure is crypto-shredding. Deleting a subject's wrapped key makes
//! every copy of its ciphertexts unreadable, including copies in backups of the main
//! store. That only holds if the keys are not in the same backups: if the key row sat
//! next to the subject's rows, restoring last month's backup would bring back both,
//! and with them the data. So the key store is backed up separately with a short
//! retention (shorter than the erasure deadline), and restoring the main store from
//! any backup cannot resurrect an erased subject.
//!
//! Order of writes, so a crash never leaves readable data without its key or a key
//! outliving its erasure: on create the key is written first, then the subject in
//! one transaction (an orphan key after a failure unwraps nothing that exists); on
//! erasure the key is deleted first (that is the shred), then the rows.

use std::collections::HashMap;

use sea_orm::{ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter};
use vern_kit::db::Db;
use vern_kit::db::DbTarget;

use super::entities::subject_key;
use super::migration::KeyMigrator;

/// The subjects' key store.
#[derive(Clone, Debug)]
pub struct KeyStore {
    db: Db,
}

impl KeyStore {
    /// Connects to `target` and runs the key store's migrations.
    pub async fn open(target: &DbTarget) -> Result<Self, DbErr> {
        let db = vern_kit::db::connect_and_migrate::<KeyMigrator>(target).await?;
        Ok(Self { db })
    }

    /// The connection (for tests).
    pub fn connection(&self) -> &Db {
        &self.db
    }

    /// Stores a subject's wrapped data key.
    pub async fn put(&self, tenant: &str, subject: &str, wrapped: Vec<u8>) -> Result<(), DbErr> {
        subject_key::Entity::insert(subject_key::ActiveModel {
            tenant_id: Set(tenant.to_owned()),
            subject_id: Set(subject.to_owned()),
            wrapped_key: Set(wrapped),
            create_time: Set(vern_kit::time::now()),
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    /// Stores several subjects' wrapped data keys with multi-row inserts.
    pub async fn put_many(&self, tenant: &str, keys: Vec<(String, Vec<u8>)>) -> Result<(), DbErr> {
        let now = vern_kit::time::now();
        let mut rows = keys
            .into_iter()
            .map(|(subject, wrapped)| subject_key::ActiveModel {
                tenant_id: Set(tenant.to_owned()),
                subject_id: Set(subject),
                wrapped_key: Set(wrapped),
                create_time: Set(now),
            });
        loop {
            let chunk: Vec<_> = rows.by_ref().take(200).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            subject_key::Entity::insert_many(chunk)
                .exec_without_returning(&self.db)
                .await?;
        }
    }

    /// A subject's wrapped data key, if it still exists.
    pub async fn get(&self, tenant: &str, subject: &str) -> Result<Option<Vec<u8>>, DbErr> {
        Ok(
            subject_key::Entity::find_by_id((tenant.to_owned(), subject.to_owned()))
                .one(&self.db)
                .await?
                .map(|k| k.wrapped_key),
        )
    }

    /// The wrapped data keys of several subjects of one tenant.
    pub async fn get_many(
        &self,
        tenant: &str,
        subjects: &[String],
    ) -> Result<HashMap<String, Vec<u8>>, DbErr> {
        if subjects.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(subject_key::Entity::find()
            .filter(subject_key::Column::TenantId.eq(tenant))
            .filter(subject_key::Column::SubjectId.is_in(subjects.iter().map(String::as_str)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|k| (k.subject_id, k.wrapped_key))
            .collect())
    }

    /// The key store's table for master key rotation ([`vern_kit::keys`]).
    pub fn wrapped_keys() -> vern_kit::keys::WrappedKeys<subject_key::Entity> {
        vern_kit::keys::WrappedKeys {
            tenant: subject_key::Column::TenantId,
            owner: subject_key::Column::SubjectId,
            wrapped: subject_key::Column::WrappedKey,
            aad: crate::domain::subject::key_aad,
            list: "subject_keys",
        }
    }

    /// Destroys the data keys of these subjects (crypto-shredding). Deleting a key
    /// that is already gone is not an error, so an interrupted erasure can be repeated.
    pub async fn shred(&self, tenant: &str, subjects: &[String]) -> Result<u64, DbErr> {
        if subjects.is_empty() {
            return Ok(0);
        }
        Ok(subject_key::Entity::delete_many()
            .filter(subject_key::Column::TenantId.eq(tenant))
            .filter(subject_key::Column::SubjectId.is_in(subjects.iter().map(String::as_str)))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}
