//! The console's sessions, in a store its replicas share (`console_sessions`: its own
//! SQLite file in `vern dev`, its own PostgreSQL schema when deployed), behind
//! tower-sessions' [`SessionStore`] so that two replicas behind a load balancer serve
//! one session. A session holds who signed in and the IdP's tokens, never personal
//! data of the department, sealed with `console.session_key` when it is set; an expired
//! session is never loaded, and
//! [`ExpiredDeletion::delete_expired`] removes them.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter};
use sea_orm_migration::prelude::{
    ColumnDef, DeriveIden, Index, MigrationName, MigrationTrait, MigratorTrait, SchemaManager,
    Table,
};
use std::sync::Arc;

use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, ExpiredDeletion, SessionStore};
use vern_kit::db::{Db, DbFailure, DbTarget};
use vern_seal::crypto::DataKey;

/// The stored sessions.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One session.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "console_sessions")]
    pub struct Model {
        /// The session id (the cookie's value), as tower-sessions writes it.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The session's data (JSON).
        pub data: Vec<u8>,
        /// When it expires; an expired session is never loaded.
        pub expires_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The console's session store.
#[derive(Clone)]
pub struct Sessions {
    db: Db,
    /// Seals each session's data (AES-256-GCM, the session id as associated data):
    /// it holds bearer and refresh tokens. `None`: stored as JSON.
    key: Option<Arc<DataKey>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("sealed", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

/// What a sealed session's data starts with (JSON starts with `{`).
const SEALED: &[u8] = b"\0vs1";

impl Sessions {
    /// Connects to `target` and runs the store's migrations.
    pub async fn open(target: &DbTarget) -> Result<Self, DbErr> {
        let db = vern_kit::db::connect_and_migrate::<Migrator>(target).await?;
        Ok(Self { db, key: None })
    }

    /// Seals every session saved from now on with `key` (`console.session_key`; the
    /// same on every replica). A session stored otherwise — unsealed, or under another
    /// key — is not loaded: its person signs in again.
    pub fn sealed_with(mut self, key: [u8; 32]) -> Self {
        self.key = Some(Arc::new(DataKey::from_bytes(key)));
        self
    }

    fn encode(&self, id: &Id, json: Vec<u8>) -> Vec<u8> {
        match &self.key {
            Some(k) => {
                let mut out = SEALED.to_vec();
                out.extend(vern_seal::crypto::seal(k, &json, id.to_string().as_bytes()));
                out
            }
            None => json,
        }
    }

    /// The session's JSON, or `None` when it was stored otherwise than this store
    /// stores now (see [`Sessions::sealed_with`]).
    fn decode(&self, id: &Id, data: &[u8]) -> Option<Vec<u8>> {
        match (&self.key, data.strip_prefix(SEALED)) {
            (Some(k), Some(sealed)) => {
                vern_seal::crypto::open(k, sealed, id.to_string().as_bytes()).ok()
            }
            (None, None) => Some(data.to_vec()),
            _ => None,
        }
    }

    /// The connection (for tests).
    pub fn connection(&self) -> &Db {
        &self.db
    }

    fn row(&self, record: &Record) -> session_store::Result<entity::ActiveModel> {
        let json = serde_json::to_vec(&record.data)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let data = self.encode(&record.id, json);
        let expires_at =
            chrono::DateTime::from_timestamp(record.expiry_date.unix_timestamp(), 0)
                .ok_or_else(|| session_store::Error::Encode("expiry out of range".into()))?;
        Ok(entity::ActiveModel {
            id: Set(record.id.to_string()),
            data: Set(data),
            expires_at: Set(expires_at),
        })
    }
}

/// A database error as the session layer takes it (its kind only: never a value).
fn backend(e: &DbErr) -> session_store::Error {
    session_store::Error::Backend(format!("{:?}", vern_kit::db::classify(e)))
}

#[async_trait::async_trait]
impl SessionStore for Sessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A new id that is already taken (128 random bits: never in practice) is drawn
        // again rather than overwriting another person's session.
        loop {
            let row = self.row(record)?;
            match entity::Entity::insert(row)
                .exec_without_returning(&self.db)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if vern_kit::db::classify(&e) == DbFailure::UniqueViolation => {
                    record.id = Id::default();
                }
                Err(e) => return Err(backend(&e)),
            }
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        entity::Entity::insert(self.row(record)?)
            .on_conflict(
                OnConflict::column(entity::Column::Id)
                    .update_columns([entity::Column::Data, entity::Column::ExpiresAt])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| backend(&e))?;
        Ok(())
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let Some(row) = entity::Entity::find_by_id(session_id.to_string())
            .filter(entity::Column::ExpiresAt.gt(chrono::Utc::now()))
            .one(&self.db)
            .await
            .map_err(|e| backend(&e))?
        else {
            return Ok(None);
        };
        let Some(json) = self.decode(session_id, &row.data) else {
            tracing::info!("a console session stored under another session key was not loaded");
            return Ok(None);
        };
        let data = serde_json::from_slice(&json)
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date = time::OffsetDateTime::from_unix_timestamp(row.expires_at.timestamp())
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: *session_id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        entity::Entity::delete_by_id(session_id.to_string())
            .exec(&self.db)
            .await
            .map_err(|e| backend(&e))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ExpiredDeletion for Sessions {
    async fn delete_expired(&self) -> session_store::Result<()> {
        entity::Entity::delete_many()
            .filter(entity::Column::ExpiresAt.lte(chrono::Utc::now()))
            .exec(&self.db)
            .await
            .map_err(|e| backend(&e))?;
        Ok(())
    }
}

/// The store's migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateSessions)]
    }
}

struct CreateSessions;

impl MigrationName for CreateSessions {
    fn name(&self) -> &str {
        "m0001_console_sessions"
    }
}

#[derive(DeriveIden)]
enum ConsoleSessions {
    Table,
    Id,
    Data,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSessions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConsoleSessions::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ConsoleSessions::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ConsoleSessions::Data).binary().not_null())
                    .col(
                        ColumnDef::new(ConsoleSessions::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // The sweep of expired sessions reads by expiry.
        manager
            .create_index(
                Index::create()
                    .name("console_sessions_expires_at")
                    .table(ConsoleSessions::Table)
                    .col(ConsoleSessions::ExpiresAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConsoleSessions::Table).to_owned())
            .await
    }
}
