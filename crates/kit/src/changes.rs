//! Change generations: how the replicas of a service learn that shared state changed.
//!
//! A replica keeping something in memory (a cache) cannot hear the writes another
//! replica makes. So a write of such state also bumps a counter of its *scope* (say,
//! one tenant's purposes) in the same transaction ([`bump`]), and every replica polls
//! the counters ([`Watcher`], every [`WATCH_EVERY`]) and forgets what it holds of a
//! scope whose counter moved. Bumping locks the counter's row until commit, so the
//! generations of one scope commit in order: a replica that has seen generation `g`
//! has seen every write up to `g`. Works the same on SQLite and PostgreSQL, and a
//! replica that missed a poll or restarted converges by itself (there is no message
//! to miss).
//!
//! The bound: a write committed on one replica is seen by the others within one poll
//! ([`WATCH_EVERY`]) plus the poll's query.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::db::Db;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, QuerySelect};
use sea_orm_migration::prelude::{
    ColumnDef, DeriveIden, MigrationName, MigrationTrait, SchemaManager, Table,
};

/// How often replicas poll the generations.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The counters.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// The generation of one scope.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "change_generations")]
    pub struct Model {
        /// What changed, e.g. `purposes/<tenant>`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        /// Bumped by every change of the scope.
        pub generation: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Counts a change of `scope`, inside the caller's transaction (the row stays locked
/// until it commits, which orders the writers of one scope).
pub async fn bump(txn: &impl ConnectionTrait, scope: &str) -> Result<(), DbErr> {
    use sea_orm::ActiveValue::Set;
    entity::Entity::insert(entity::ActiveModel {
        scope: Set(scope.to_owned()),
        generation: Set(1),
    })
    .on_conflict(
        OnConflict::column(entity::Column::Scope)
            .value(
                entity::Column::Generation,
                Expr::col((entity::Entity, entity::Column::Generation)).add(1),
            )
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// Every scope's generation.
pub async fn generations(db: &impl ConnectionTrait) -> Result<Vec<(String, i64)>, DbErr> {
    entity::Entity::find()
        .select_only()
        .column(entity::Column::Scope)
        .column(entity::Column::Generation)
        .into_tuple()
        .all(db)
        .await
}

/// What this replica has seen of the generations, kept current by a polling task.
#[derive(Debug, Default)]
pub struct Watcher {
    seen: RwLock<HashMap<String, i64>>,
}

/// Told which scopes moved.
pub type OnChange = Arc<dyn Fn(&str) + Send + Sync>;

impl Watcher {
    /// Polls `db` every [`WATCH_EVERY`] until the process ends, calling `on_change`
    /// for every scope whose generation moved since the previous poll (after the
    /// watcher's own view is updated, so a reader that compares [`Watcher::of`]
    /// before and after its read notices).
    pub fn spawn(db: Db, on_change: OnChange) -> Arc<Self> {
        let watcher = Arc::new(Self::default());
        let w = Arc::downgrade(&watcher);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                let Some(w) = w.upgrade() else { return };
                match generations(&db).await {
                    Ok(now) => {
                        failing = false;
                        for scope in w.observe(now) {
                            on_change(&scope);
                        }
                    }
                    Err(e) if !failing => {
                        failing = true;
                        // The kind only: a database error's text can quote values.
                        tracing::warn!(kind = ?crate::db::classify(&e), "reading change generations failed: caches may serve older values until it works again");
                    }
                    Err(_) => {}
                }
            }
        });
        watcher
    }

    /// The generation of `scope` last seen (0: none yet).
    pub fn of(&self, scope: &str) -> i64 {
        self.seen
            .read()
            .ok()
            .and_then(|s| s.get(scope).copied())
            .unwrap_or(0)
    }

    /// Takes in a poll's result; returns the scopes that moved.
    pub fn observe(&self, now: Vec<(String, i64)>) -> Vec<String> {
        let Ok(mut seen) = self.seen.write() else {
            return vec![];
        };
        let mut moved = vec![];
        for (scope, generation) in now {
            let before = seen.insert(scope.clone(), generation);
            if before != Some(generation) {
                moved.push(scope);
            }
        }
        moved
    }
}

/// Creates the `change_generations` table.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0000_change_generations"
    }
}

#[derive(DeriveIden)]
enum ChangeGenerations {
    Table,
    Scope,
    Generation,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChangeGenerations::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ChangeGenerations::Scope)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ChangeGenerations::Generation)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChangeGenerations::Table).to_owned())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_generation_is_reported_once() {
        let w = Watcher::default();
        assert_eq!(w.observe(vec![("a".into(), 1)]), vec!["a".to_owned()]);
        assert!(w.observe(vec![("a".into(), 1)]).is_empty());
        assert_eq!(
            w.observe(vec![("a".into(), 3), ("b".into(), 1)]),
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert_eq!(w.of("a"), 3);
        assert_eq!(w.of("missing"), 0);
    }
}
