//! Throwaway databases for store tests, so every store test runs on SQLite and on
//! PostgreSQL (quickwit's one-suite-many-backends pattern).
//!
//! PostgreSQL tests use `VERN_TEST_DATABASE_URL`. Without it they are skipped, unless
//! `VERN_REQUIRE_POSTGRES=1` (set by CI), which makes them fail instead.

use sea_orm::ConnectionTrait;

use crate::db::DbTarget;

/// Environment variable holding the PostgreSQL URL for tests.
pub const PG_URL_VAR: &str = "VERN_TEST_DATABASE_URL";
/// Environment variable that turns a skipped PostgreSQL test into a failure.
pub const REQUIRE_PG_VAR: &str = "VERN_REQUIRE_POSTGRES";

/// A database that lives as long as the test.
pub struct TestDb {
    /// Where to connect.
    pub target: DbTarget,
    /// "sqlite" or "postgres".
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh SQLite file.
    pub fn sqlite(service: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = DbTarget::for_service(None, dir.path(), service);
        Self {
            target,
            backend: "sqlite",
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL schema, or `None` when no URL is configured (and PostgreSQL
    /// is not required).
    pub fn postgres(service: &str) -> Option<Self> {
        let Ok(url) = std::env::var(PG_URL_VAR) else {
            assert!(
                std::env::var(REQUIRE_PG_VAR).as_deref() != Ok("1"),
                "{REQUIRE_PG_VAR}=1 but {PG_URL_VAR} is not set: PostgreSQL tests must run"
            );
            eprintln!("skipping PostgreSQL test: {PG_URL_VAR} not set");
            return None;
        };
        let schema = format!("test_{service}_{}", uuid::Uuid::new_v4().simple());
        Some(Self {
            target: DbTarget {
                url,
                schema: Some(schema),
            },
            backend: "postgres",
            _dir: None,
        })
    }

    /// Drops the PostgreSQL schema (SQLite files go with the temp dir).
    pub async fn cleanup(self) {
        if let Some(schema) = &self.target.schema {
            drop_schemas(&self.target.url, std::slice::from_ref(schema)).await;
        }
    }
}

/// Drops PostgreSQL schemas (best effort; used after tests).
pub async fn drop_schemas(url: &str, schemas: &[String]) {
    if let Ok(db) = sea_orm::Database::connect(url.to_owned()).await {
        for schema in schemas {
            let _ = db
                .execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await;
        }
        let _ = db.close().await;
    }
}

/// Defines each listed async test function `fn(DbTarget)` twice: on SQLite and on
/// PostgreSQL.
#[macro_export]
macro_rules! store_test_suite {
    ($service:literal: $($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let db = $crate::testing::TestDb::sqlite($service);
                    super::$name(db.target.clone()).await;
                    db.cleanup().await;
                }

                #[tokio::test]
                async fn postgres() {
                    let Some(db) = $crate::testing::TestDb::postgres($service) else { return };
                    super::$name(db.target.clone()).await;
                    db.cleanup().await;
                }
            }
        )+
    };
}
