//! Persistence of the retention service. Its tables come with its issue; today the
//! store holds the connection and the shared idempotency table.

use sea_orm::{DatabaseConnection, DbErr};
use sea_orm_migration::prelude::*;
use vern_kit::db::DbTarget;

/// Runs the retention service's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(vern_kit::idempotency::Migration)]
    }
}

/// The retention service's store.
#[derive(Clone, Debug)]
pub struct RetentionStore {
    db: DatabaseConnection,
}

impl RetentionStore {
    /// Connects to `target` and runs the migrations.
    pub async fn open(target: &DbTarget) -> Result<Self, DbErr> {
        let db = vern_kit::db::connect_and_migrate::<Migrator>(target).await?;
        Ok(Self { db })
    }

    /// The connection.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}
