//! Database connection and migrations for `sqlite://` and `postgres://` URLs.
//!
//! Each service owns its tables: on SQLite it gets its own file, on PostgreSQL its own
//! schema (`vern_<service>` by default), so services never share a table and the same
//! migrations run on both.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod conn;
mod wal;

pub use conn::{Db, connection_lost};

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, DbErr, RuntimeErr};
use sea_orm_migration::MigratorTrait;

use crate::error::ApiError;

/// Where a service's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTarget {
    /// Connection URL.
    pub url: String,
    /// PostgreSQL schema for the service's tables (ignored for SQLite).
    pub schema: Option<String>,
    /// Largest PostgreSQL pool (`database_max_connections`); `None`: 16. Many
    /// replicas on one server share its `max_connections`.
    pub max_connections: Option<u32>,
}

impl DbTarget {
    /// The target of `service`: the shared URL with schema `vern_<service>` when one is
    /// configured, otherwise `<data_dir>/<service>.db`.
    pub fn for_service(database_url: Option<&str>, data_dir: &Path, service: &str) -> Self {
        Self::with_prefix(database_url, data_dir, "vern", service)
    }

    /// Like [`DbTarget::for_service`] with PostgreSQL schema `<prefix>_<service>`.
    pub fn with_prefix(
        database_url: Option<&str>,
        data_dir: &Path,
        prefix: &str,
        service: &str,
    ) -> Self {
        match database_url {
            Some(url) if url.starts_with("postgres") => Self {
                url: url.to_owned(),
                schema: Some(format!("{prefix}_{service}")),
                max_connections: None,
            },
            Some(url) => Self {
                url: url.to_owned(),
                schema: None,
                max_connections: None,
            },
            None => Self {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join(format!("{service}.db")).display()
                ),
                schema: None,
                max_connections: None,
            },
        }
    }
}

/// Why the database could not be reached or used, without its message text (which can
/// quote values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// A unique or primary key constraint was violated.
    UniqueViolation,
    /// A foreign key constraint was violated.
    ForeignKeyViolation,
    /// The database is down, unreachable or the pool is exhausted: retry later.
    Unavailable,
    /// Anything else: a bug or a corrupt database.
    Other,
}

/// Classifies a database error.
pub fn classify(err: &DbErr) -> DbFailure {
    use sea_orm::SqlErr;
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => return DbFailure::UniqueViolation,
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => return DbFailure::ForeignKeyViolation,
        _ => {}
    }
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => DbFailure::Unavailable,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            use sea_orm::sqlx::Error as E;
            match e.as_ref() {
                E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
                    DbFailure::Unavailable
                }
                E::Database(d) if d.code().is_some_and(|c| sqlite_busy(&c)) => {
                    DbFailure::Unavailable
                }
                _ => DbFailure::Other,
            }
        }
        _ => DbFailure::Other,
    }
}

/// SQLITE_BUSY / SQLITE_LOCKED, including their extended codes (sqlx reports extended
/// codes: e.g. 517 SQLITE_BUSY_SNAPSHOT, when a transaction that read first tries to
/// write after another connection committed): the primary code is the low byte.
fn sqlite_busy(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

/// Maps a database error that has no domain meaning to an API error, logging its kind
/// (never its text).
pub fn api_error(err: &DbErr) -> ApiError {
    match classify(err) {
        DbFailure::Unavailable => {
            tracing::warn!(kind = "db_unavailable", "database unavailable");
            ApiError::Unavailable
        }
        kind => {
            tracing::error!(kind = ?kind, variant = db_err_variant(err), "database error");
            ApiError::Internal("database")
        }
    }
}

fn db_err_variant(err: &DbErr) -> &'static str {
    match err {
        DbErr::ConnectionAcquire(_) => "connection_acquire",
        DbErr::Conn(_) => "conn",
        DbErr::Exec(_) => "exec",
        DbErr::Query(_) => "query",
        DbErr::RecordNotFound(_) => "record_not_found",
        DbErr::Type(_) => "type",
        DbErr::Json(_) => "json",
        DbErr::Migration(_) => "migration",
        _ => "other",
    }
}

/// Creates `dir` and its missing parents with mode 0700 (owner only); an existing
/// directory is left as it is (a mounted volume may need its group).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes the SQLite database at `path` owner-only (0600): creates it empty with that
/// mode when missing (SQLite gives its `-wal` and `-shm` files the database file's
/// mode), and narrows the database and its `-wal`/`-shm` files of older versions,
/// which were created with the umask's 0644.
fn private_sqlite_file(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    drop(opts.open(path)?);
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm", "-journal"] {
        use std::os::unix::fs::PermissionsExt;
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::metadata(&p) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Connections of a SQLite pool.
const SQLITE_POOL: u32 = 8;

/// How long a pooled PostgreSQL connection may sit idle before it is pinged on acquire.
pub const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);

/// Opens a connection pool to `target`, creating the SQLite file's directory (0700)
/// and file (0600) or the PostgreSQL schema when missing.
pub async fn connect(target: &DbTarget) -> Result<Db, DbErr> {
    if let Some(path) = sqlite_path(&target.url) {
        let path = Path::new(path);
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            create_private_dir(dir)
                .map_err(|e| DbErr::Custom(format!("creating {}: {e}", dir.display())))?;
        }
        private_sqlite_file(path)
            .map_err(|e| DbErr::Custom(format!("protecting {}: {e}", path.display())))?;
    }
    let mut opts = ConnectOptions::new(target.url.clone());
    let mut pool_size = SQLITE_POOL;
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5));
    if target.url.starts_with("sqlite") {
        // WAL survives a killed process with every committed transaction; writers wait
        // on each other instead of failing.
        opts.max_connections(SQLITE_POOL).map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                // Deleted content (shredded keys, erased values) is overwritten, not
                // left in free pages.
                .pragma("secure_delete", "on")
                // After the log restarts, its file is cut back to the guard's limit.
                .pragma("journal_size_limit", wal::JOURNAL_SIZE_LIMIT)
        });
    } else {
        // Fail fast when the server is gone (a refused connect is retried until the
        // acquire timeout): callers get UNAVAILABLE well within their deadline.
        pool_size = target.max_connections.unwrap_or(16).max(1);
        opts.max_connections(pool_size)
            .connect_timeout(Duration::from_secs(3))
            .acquire_timeout(Duration::from_secs(3))
            // A ping on every acquire doubled the round trips of a Check; only a
            // connection idle long enough for a proxy or the server to have dropped it is
            // checked (a dead hot connection fails its query, and the pool replaces it).
            .test_before_acquire_if_idle_for(IDLE_BEFORE_PING);
    }
    if let Some(schema) = &target.schema {
        ensure_schema(&target.url, schema).await?;
        opts.set_schema_search_path(schema.clone());
    }
    let mut db = Database::connect(opts).await?;
    if let Some(path) = sqlite_path(&target.url) {
        wal::spawn_guard(PathBuf::from(path));
    }
    // Database spans of traced calls (a flag check otherwise).
    db.set_metric_callback(crate::telemetry::db_query);
    Ok(Db::new(db, pool_size))
}

/// Connects and runs the pending migrations of `M` (see [`migrate`]).
pub async fn connect_and_migrate<M: MigratorTrait>(target: &DbTarget) -> Result<Db, DbErr> {
    let db = connect(target).await?;
    if let Migrated::Newer(newer) = migrate::<M>(&db).await? {
        // Which store: the schema, or the SQLite file's name (never the URL: credentials).
        let store = target.schema.clone().unwrap_or_else(|| {
            sqlite_path(&target.url)
                .and_then(|p| Path::new(p).file_stem())
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
        });
        tracing::warn!(
            store,
            newer,
            "the database schema is newer than this build (a rollback?): running on it unmigrated"
        );
    }
    Ok(db)
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrated {
    /// The schema is this build's; this many pending migrations were run (0: none
    /// was pending).
    Current(usize),
    /// The database holds this many migrations newer than this build and all of this
    /// build's: an older build after a rollback, running on the newer schema.
    Newer(usize),
}

/// Runs the pending migrations of `M`. A database that has migrations this build does
/// not know — a rollback to an older image after a newer one migrated — is used as it
/// is (the caller warns), as long as it has every migration this build knows: vern's
/// migrations only add (tables, nullable columns, indexes), so an older build runs on
/// a newer schema. (sea-orm's own `up` refuses such a database, and an older pod would
/// crash-loop through a rollout's rollback.)
///
/// On PostgreSQL, pods starting at once take turns: everything runs in one
/// transaction holding a transaction-level advisory lock on the schema's name, so the
/// next pod finds the migrations applied. A transaction because it keeps one pooled
/// connection for the lock and the DDL (a session lock taken through the pool could
/// be released on another connection than the one that took it) and the lock goes
/// with the commit or rollback, even if the process dies; sea-orm-migration runs each
/// migration in a savepoint of it. SQLite has one writer and needs no lock.
pub async fn migrate<M: MigratorTrait>(db: &Db) -> Result<Migrated, DbErr> {
    use sea_orm::TransactionTrait;
    // Once, at start: a dead connection fails the start, which is retried by restarting.
    let db = db.inner();
    if db.get_database_backend() != DbBackend::Postgres {
        return migrate_on::<M, _>(db).await;
    }
    let txn = db.begin().await?;
    txn.execute_unprepared(
        "SELECT pg_advisory_xact_lock(hashtext('vern-migrate:' || current_schema()))",
    )
    .await?;
    let migrated = migrate_on::<M, _>(&txn).await?;
    txn.commit().await?;
    Ok(migrated)
}

async fn migrate_on<'c, M, C>(db: &'c C) -> Result<Migrated, DbErr>
where
    M: MigratorTrait,
    C: ConnectionTrait,
    &'c C: sea_orm_migration::IntoSchemaManagerConnection<'c>,
{
    let known: std::collections::HashSet<String> = M::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let applied: std::collections::HashSet<String> = M::get_migration_models(db)
        .await?
        .into_iter()
        .map(|m| m.version)
        .collect();
    let newer = applied.difference(&known).count();
    if newer == 0 {
        let pending = known.difference(&applied).count();
        M::up(db, None).await?;
        return Ok(Migrated::Current(pending));
    }
    let mut missing: Vec<&String> = known.difference(&applied).collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(DbErr::Custom(format!(
            "the database has {newer} migration(s) newer than this build but lacks {missing:?}: \
             run this build's migrations from a build that knows both"
        )));
    }
    Ok(Migrated::Newer(newer))
}

/// Connects to `target`, runs the pending migrations of `M` (see [`migrate`]) and
/// closes the connection: `vern migrate`, which starts nothing else.
pub async fn migrate_target<M: MigratorTrait>(target: &DbTarget) -> Result<Migrated, DbErr> {
    let db = connect(target).await?;
    let migrated = migrate::<M>(&db).await;
    // Best effort: the process is about to exit or move on.
    let _ = db.close().await;
    migrated
}

/// The SQLite file of `target`, if it is one.
pub fn sqlite_file(target: &DbTarget) -> Option<PathBuf> {
    sqlite_path(&target.url).map(PathBuf::from)
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

async fn ensure_schema(url: &str, schema: &str) -> Result<(), DbErr> {
    if !schema
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(DbErr::Custom("schema names are [A-Za-z0-9_]".into()));
    }
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.sqlx_logging(false)
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5));
    let db = Database::connect(opts).await?;
    let res = db
        .execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await;
    let _ = db.close().await;
    match res {
        Ok(_) => Ok(()),
        // Two services creating it at once: the loser sees a unique violation.
        Err(e) if classify(&e) == DbFailure::UniqueViolation => Ok(()),
        Err(e) => Err(e),
    }
}

/// The backend of a connection, for the few queries that differ.
pub fn backend(db: &impl ConnectionTrait) -> DbBackend {
    db.get_database_backend()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = DbTarget::for_service(None, Path::new("vern-data"), "tenants");
        assert_eq!(t.url, "sqlite://vern-data/tenants.db?mode=rwc");
        let t = DbTarget::for_service(Some("postgres://x@h/db"), Path::new("d"), "audit");
        assert_eq!(t.schema.as_deref(), Some("vern_audit"));
        assert_eq!(sqlite_path("sqlite://a/b.db?mode=rwc"), Some("a/b.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sqlite_files_are_owner_only() {
        use sea_orm::ConnectionTrait;
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .permissions()
                .mode()
                & 0o777
        };
        let tmp = tempfile::tempdir().expect("tmp");
        let data = tmp.path().join("data").join("nested");
        // A fresh data dir and database.
        let target = DbTarget::for_service(None, &data, "modes");
        let db = connect(&target).await.expect("connect");
        db.execute_unprepared("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('x')")
            .await
            .expect("write");
        assert_eq!(mode(&data), 0o700, "data dir");
        assert_eq!(mode(&tmp.path().join("data")), 0o700, "created parents");
        for f in ["modes.db", "modes.db-wal", "modes.db-shm"] {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}");
        }
        db.close().await.expect("close");
        // A database an older version left world-readable is narrowed at connect.
        let old = tmp.path().join("old");
        std::fs::create_dir(&old).expect("dir");
        let target = DbTarget::for_service(None, &old, "legacy");
        let db = connect(&target).await.expect("connect");
        db.execute_unprepared("CREATE TABLE t (v TEXT)")
            .await
            .expect("write");
        for f in ["legacy.db", "legacy.db-wal", "legacy.db-shm"] {
            std::fs::set_permissions(old.join(f), std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        let again = connect(&target).await.expect("reconnect");
        for f in ["legacy.db", "legacy.db-wal", "legacy.db-shm"] {
            assert_eq!(mode(&old.join(f)), 0o600, "{f}");
        }
        again.close().await.expect("close");
        db.close().await.expect("close");
    }

    #[test]
    fn extended_busy_codes_are_unavailable() {
        for c in ["5", "6", "261", "517", "773", "262"] {
            assert!(sqlite_busy(c), "{c}");
        }
        for c in ["1", "19", "2067", "23505", "x"] {
            assert!(!sqlite_busy(c), "{c}");
        }
    }

    mod rollback {
        use sea_orm_migration::prelude::*;

        /// A migration that only names itself.
        pub struct Named(pub &'static str);

        impl MigrationName for Named {
            fn name(&self) -> &str {
                self.0
            }
        }

        #[async_trait::async_trait]
        impl MigrationTrait for Named {
            async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
                m.get_connection()
                    .execute_unprepared(&format!("CREATE TABLE {} (id INTEGER)", self.0))
                    .await
                    .map(|_| ())
            }
        }

        /// The older build: m1.
        pub struct Old;
        impl MigratorTrait for Old {
            fn migrations() -> Vec<Box<dyn MigrationTrait>> {
                vec![Box::new(Named("m1"))]
            }
        }

        /// The newer build: m1, m2.
        pub struct New;
        impl MigratorTrait for New {
            fn migrations() -> Vec<Box<dyn MigrationTrait>> {
                vec![Box::new(Named("m1")), Box::new(Named("m2"))]
            }
        }

        /// Another line of builds: m1, m3.
        pub struct Other;
        impl MigratorTrait for Other {
            fn migrations() -> Vec<Box<dyn MigrationTrait>> {
                vec![Box::new(Named("m1")), Box::new(Named("m3"))]
            }
        }
    }

    /// After a rollout migrated the database, the previous image still starts on it
    /// (a rollback); a database from another line of migrations is refused.
    #[tokio::test]
    async fn an_older_build_runs_on_a_newer_schema() {
        let dir = tempfile::tempdir().expect("dir");
        let target = DbTarget::for_service(None, dir.path(), "rollback");
        let db = connect(&target).await.expect("connect");
        assert_eq!(
            migrate::<rollback::Old>(&db).await.expect("old"),
            Migrated::Current(1)
        );
        assert_eq!(
            migrate::<rollback::New>(&db).await.expect("new"),
            Migrated::Current(1)
        );
        assert_eq!(
            migrate::<rollback::New>(&db).await.expect("again"),
            Migrated::Current(0)
        );
        db.execute_unprepared("INSERT INTO m2 (id) VALUES (1)")
            .await
            .expect("m2 ran");
        assert_eq!(
            migrate::<rollback::Old>(&db).await.expect("rollback"),
            Migrated::Newer(1)
        );
        let err = migrate::<rollback::Other>(&db)
            .await
            .expect_err("another line");
        assert!(err.to_string().contains("\"m3\""), "{err}");
        // sea-orm alone refuses the rollback, which is why `migrate` exists.
        assert!(rollback::Old::up(db.inner(), None).await.is_err());
    }

    /// What every service's migrator starts with: the kit's tables and indexes.
    struct Realistic;
    impl MigratorTrait for Realistic {
        fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
            vec![
                Box::new(crate::idempotency::Migration),
                Box::new(crate::outbox::Migration),
                Box::new(crate::outbox::ParkingMigration),
                Box::new(crate::outbox::LeaseMigration),
                Box::new(crate::outbox::TopicIndexMigration),
            ]
        }
    }

    /// Pods starting at once on a fresh PostgreSQL schema all migrate it (without the
    /// lock, concurrent `CREATE TABLE IF NOT EXISTS` fail with 23505); each migration
    /// is recorded once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_migrations_on_postgres_all_succeed() {
        let Some(db) = crate::testing::TestDb::postgres("migrate") else {
            return;
        };
        let target = db.target.clone();
        let pods: Vec<_> = (0..6)
            .map(|_| {
                let target = target.clone();
                tokio::spawn(async move { connect_and_migrate::<Realistic>(&target).await })
            })
            .collect();
        let mut conns = vec![];
        for pod in pods {
            conns.push(pod.await.expect("join").expect("every pod migrates"));
        }
        let applied = Realistic::get_migration_models(&conns[0])
            .await
            .expect("applied");
        assert_eq!(applied.len(), Realistic::migrations().len());
        for c in conns {
            c.close().await.expect("close");
        }
        db.cleanup().await;
    }

    async fn sqlite_table() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("dir");
        let db = connect(&DbTarget::for_service(None, dir.path(), "busy"))
            .await
            .expect("connect");
        db.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .await
            .expect("table");
        (dir, db)
    }

    /// A deferred transaction that read before another connection committed cannot
    /// write (SQLITE_BUSY_SNAPSHOT, 517, not retried by busy_timeout): that is a
    /// retryable UNAVAILABLE, not INTERNAL.
    #[tokio::test]
    async fn a_stale_snapshot_is_unavailable() {
        use sea_orm::TransactionTrait;
        let (_dir, db) = sqlite_table().await;
        let txn = db.begin().await.expect("begin");
        txn.execute_unprepared("SELECT count(*) FROM t")
            .await
            .expect("read");
        db.execute_unprepared("INSERT INTO t VALUES (1)")
            .await
            .expect("other writer");
        let err = txn
            .execute_unprepared("INSERT INTO t VALUES (2)")
            .await
            .expect_err("stale snapshot");
        assert_eq!(classify(&err), DbFailure::Unavailable);
    }

    struct TestErr(DbErr);
    impl From<DbErr> for TestErr {
        fn from(e: DbErr) -> Self {
            TestErr(e)
        }
    }
    impl From<TestErr> for ApiError {
        fn from(e: TestErr) -> Self {
            api_error(&e.0)
        }
    }

    /// `commit_once` takes the write lock at BEGIN on SQLite, so a writer committing
    /// between its read and its write waits instead of failing it.
    #[tokio::test]
    async fn commit_once_reads_then_writes_beside_another_writer() {
        let (_dir, db) = sqlite_table().await;
        for i in 0..5i64 {
            let other = db.clone();
            let answer = crate::idempotency::commit_once(&db, None, i, move |txn| {
                Box::pin(async move {
                    txn.execute_unprepared("SELECT count(*) FROM t").await?;
                    let writer = tokio::spawn(async move {
                        other
                            .execute_unprepared(&format!("INSERT INTO t VALUES ({})", 100 + i))
                            .await
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    txn.execute_unprepared(&format!("INSERT INTO t VALUES ({i})"))
                        .await?;
                    drop(writer);
                    Ok::<_, TestErr>(())
                })
            })
            .await
            .expect("commit despite the other writer");
            assert_eq!(answer, i);
        }
    }
}
