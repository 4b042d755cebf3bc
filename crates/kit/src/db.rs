//! Database connection and migrations for `sqlite://` and `postgres://` URLs.
//!
//! Each service owns its tables: on SQLite it gets its own file, on PostgreSQL its own
//! schema (`vern_<service>` by default), so services never share a table and the same
//! migrations run on both.

use std::path::Path;
use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
};
use sea_orm_migration::MigratorTrait;

use crate::error::ApiError;

/// Where a service's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTarget {
    /// Connection URL.
    pub url: String,
    /// PostgreSQL schema for the service's tables (ignored for SQLite).
    pub schema: Option<String>,
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
            },
            Some(url) => Self {
                url: url.to_owned(),
                schema: None,
            },
            None => Self {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join(format!("{service}.db")).display()
                ),
                schema: None,
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
                E::Database(d) if d.code().is_some_and(|c| c == "5" || c == "6") => {
                    // SQLITE_BUSY / SQLITE_LOCKED
                    DbFailure::Unavailable
                }
                _ => DbFailure::Other,
            }
        }
        _ => DbFailure::Other,
    }
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

/// Opens a connection pool to `target`, creating the SQLite file's directory or the
/// PostgreSQL schema when missing.
pub async fn connect(target: &DbTarget) -> Result<DatabaseConnection, DbErr> {
    if let Some(path) = sqlite_path(&target.url)
        && let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbErr::Custom(format!("creating {}: {e}", dir.display())))?;
    }
    let mut opts = ConnectOptions::new(target.url.clone());
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5));
    if target.url.starts_with("sqlite") {
        // WAL survives a killed process with every committed transaction; writers wait
        // on each other instead of failing.
        opts.max_connections(8).map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    } else {
        opts.max_connections(16);
    }
    if let Some(schema) = &target.schema {
        ensure_schema(&target.url, schema).await?;
        opts.set_schema_search_path(schema.clone());
    }
    let db = Database::connect(opts).await?;
    Ok(db)
}

/// Connects and runs the pending migrations of `M`.
pub async fn connect_and_migrate<M: MigratorTrait>(
    target: &DbTarget,
) -> Result<DatabaseConnection, DbErr> {
    let db = connect(target).await?;
    M::up(&db, None).await?;
    Ok(db)
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
}
