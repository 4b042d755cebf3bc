//! Persistence of the subjects service. Its tables come with its issue; today the
//! store holds the connection and the shared idempotency table.

use sea_orm::{DatabaseConnection, DbErr};
use sea_orm_migration::prelude::*;
use vern_kit::db::DbTarget;

/// Runs the subjects service's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(vern_kit::idempotency::Migration)]
    }
}

/// The subjects service's store.
#[derive(Clone, Debug)]
pub struct SubjectsStore {
    db: DatabaseConnection,
}

impl SubjectsStore {
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
