//! [`Db`]: a service's connection pool, which retries what a dead pooled connection
//! failed.
//!
//! When PostgreSQL restarts (or a proxy between drops its connections), every idle
//! connection in the pool is dead, and the pool only finds out by using it: pinging on
//! every acquire would double a Check's round trips, so only connections idle for
//! [`super::IDLE_BEFORE_PING`] are pinged. Without a retry each dead connection would
//! fail one client call with UNAVAILABLE after the database is back — up to a pool's
//! size of them. So a statement or a `BEGIN` that fails because its connection was
//! lost ([`connection_lost`]) runs again on another connection, as many times as the
//! pool has connections plus one (each dead one is discarded as it fails).
//!
//! What is retried:
//! - `BEGIN` (and so every transaction): it ran on a dead connection, so nothing of the
//!   transaction happened. A statement *inside* a transaction is never retried: its
//!   connection was alive at `BEGIN`, and the transaction is lost with it (the caller
//!   sees UNAVAILABLE; its request id makes asking again safe).
//! - a single statement outside a transaction: reads always; writes because every
//!   write vern makes outside a transaction is idempotent (by request id, or a delete,
//!   or a lease renewal) and a lost connection shows before the statement could run
//!   (the server's own "terminating connection" answer, or the closed socket).
//!
//! A database that is down is not retried: a refused connect is the pool's acquire
//! error, which [`connection_lost`] does not count.

use std::future::Future;
use std::pin::Pin;

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    ExecResult, IsolationLevel, QueryResult, RuntimeErr, Statement, TransactionError,
    TransactionOptions, TransactionTrait,
};

/// A service's connection pool (cheap to clone: clones share the pool).
#[derive(Clone, Debug)]
pub struct Db {
    inner: DatabaseConnection,
    /// How many times a statement is tried when its connection keeps turning out dead.
    attempts: u32,
}

impl Db {
    /// Wraps a pool of at most `max_connections` connections.
    pub fn new(inner: DatabaseConnection, max_connections: u32) -> Self {
        Self {
            inner,
            attempts: max_connections.saturating_add(1).max(1),
        }
    }

    /// The pool itself, for migrations and the few uses that need sea-orm's own type;
    /// what runs through it is not retried.
    pub fn inner(&self) -> &DatabaseConnection {
        &self.inner
    }

    /// The database's kind (inherent, as on sea-orm's connection, so callers need no
    /// trait in scope).
    pub fn get_database_backend(&self) -> DbBackend {
        self.inner.get_database_backend()
    }

    /// Closes the pool.
    pub async fn close(self) -> Result<(), DbErr> {
        self.inner.close().await
    }

    async fn retrying<'a, T, F, Fut>(&'a self, what: &'static str, op: F) -> Result<T, DbErr>
    where
        F: Fn(&'a DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, DbErr>> + 'a,
    {
        let mut tried = 0;
        loop {
            tried += 1;
            match op(&self.inner).await {
                Err(e) if tried < self.attempts && connection_lost(&e) => {
                    tracing::info!(
                        kind = "db_connection_lost",
                        what,
                        tried,
                        "a pooled connection was lost; trying another"
                    );
                }
                other => return other,
            }
        }
    }
}

impl From<Db> for DatabaseConnection {
    fn from(db: Db) -> Self {
        db.inner
    }
}

/// Whether `err` says the connection the statement went to was already gone: the
/// server's "terminating connection" (57P01 admin shutdown, 57P02 crash shutdown) or
/// a closed or reset socket. Not a refused connect, a pool timeout, or a statement the
/// database refused.
pub fn connection_lost(err: &DbErr) -> bool {
    let sqlx = match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e.as_ref(),
        _ => return false,
    };
    use sea_orm::sqlx::Error as E;
    use std::io::ErrorKind as K;
    match sqlx {
        E::Io(io) => matches!(
            io.kind(),
            K::UnexpectedEof
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::NotConnected
        ),
        E::Database(d) => d
            .code()
            .is_some_and(|c| matches!(c.as_ref(), "57P01" | "57P02" | "08003" | "08006")),
        _ => false,
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Db {
    fn get_database_backend(&self) -> DbBackend {
        self.inner.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.retrying("execute", |db| db.execute_raw(stmt.clone()))
            .await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.retrying("execute", |db| db.execute_unprepared(sql))
            .await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.retrying("query", |db| db.query_one_raw(stmt.clone()))
            .await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.retrying("query", |db| db.query_all_raw(stmt.clone()))
            .await
    }

    fn support_returning(&self) -> bool {
        self.inner.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.inner.is_mock_connection()
    }
}

#[async_trait::async_trait]
impl TransactionTrait for Db {
    type Transaction = DatabaseTransaction;

    async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        self.retrying("begin", |db| db.begin()).await
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<DatabaseTransaction, DbErr> {
        self.retrying("begin", |db| {
            db.begin_with_config(isolation_level, access_mode)
        })
        .await
    }

    async fn begin_with_options(
        &self,
        options: TransactionOptions,
    ) -> Result<DatabaseTransaction, DbErr> {
        self.retrying("begin", |db| db.begin_with_options(options))
            .await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self.begin().await.map_err(TransactionError::Connection)?;
        run(txn, callback).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self
            .begin_with_config(isolation_level, access_mode)
            .await
            .map_err(TransactionError::Connection)?;
        run(txn, callback).await
    }
}

/// Runs `callback` in `txn`: commits what it returns `Ok` for, rolls back otherwise
/// (as sea-orm's own `transaction` does).
async fn run<F, T, E>(txn: DatabaseTransaction, callback: F) -> Result<T, TransactionError<E>>
where
    F: for<'c> FnOnce(
            &'c DatabaseTransaction,
        ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
        + Send,
    T: Send,
    E: std::fmt::Display + std::fmt::Debug + Send,
{
    match callback(&txn).await {
        Ok(v) => {
            txn.commit().await.map_err(TransactionError::Connection)?;
            Ok(v)
        }
        Err(e) => {
            // A failed rollback changes nothing: the transaction is gone either way.
            let _ = txn.rollback().await;
            Err(TransactionError::Transaction(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};

    use super::*;
    use crate::db::{DbTarget, connect};

    fn select_1() -> Statement {
        Statement::from_string(DbBackend::Postgres, "SELECT 1")
    }

    /// How many connections of `app` the server holds.
    async fn connections_of(admin: &Db, app: &str) -> i64 {
        let row = admin
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1",
                [app.into()],
            ))
            .await
            .expect("count")
            .expect("row");
        row.try_get::<i64>("", "n").expect("n")
    }

    /// After the server ended every connection of a full pool (as a PostgreSQL restart
    /// does), reads, writes and transactions succeed at once; sea-orm's pool alone hands
    /// the first caller a dead connection.
    #[tokio::test]
    async fn statements_on_connections_the_server_ended_run_on_fresh_ones_on_postgres() {
        let Some(url) = crate::testing::pg_url() else {
            eprintln!("skipping PostgreSQL test: no URL");
            return;
        };
        let app = format!("vern-conn-{}", uuid::Uuid::new_v4().simple());
        let sep = if url.contains('?') { '&' } else { '?' };
        let pool = 4;
        let db = connect(&DbTarget {
            url: format!("{url}{sep}application_name={app}"),
            schema: None,
            max_connections: Some(pool),
        })
        .await
        .expect("pool");
        let admin = connect(&DbTarget {
            url: url.clone(),
            schema: None,
            max_connections: Some(1),
        })
        .await
        .expect("admin");
        // Fill the pool: every connection open at once, then back in the pool.
        let mut txns = vec![];
        for _ in 0..pool {
            txns.push(db.begin().await.expect("begin"));
        }
        for t in txns {
            t.rollback().await.expect("rollback");
        }
        assert_eq!(connections_of(&admin, &app).await, i64::from(pool));

        // The server ends them all.
        admin
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                [app.clone().into()],
            ))
            .await
            .expect("terminate");
        let deadline = Instant::now() + Duration::from_secs(10);
        while connections_of(&admin, &app).await > 0 {
            assert!(Instant::now() < deadline, "connections not ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Without the retry the first caller gets a dead connection: the fault is real.
        let raw = db.inner().query_one_raw(select_1()).await;
        assert!(
            raw.as_ref().is_err_and(connection_lost),
            "a dead pooled connection: {raw:?}"
        );
        // With it, a transaction, a write and a read all succeed on the first call,
        // though every other connection in the pool is dead too.
        let txn = db.begin().await.expect("BEGIN on a fresh connection");
        txn.query_one_raw(select_1())
            .await
            .expect("in the transaction");
        txn.commit().await.expect("commit");
        db.execute_unprepared("SELECT 1")
            .await
            .expect("a statement");
        db.query_one_raw(select_1()).await.expect("a read");
        let _ = db.close().await;
        let _ = admin.close().await;
    }

    #[test]
    fn only_a_lost_connection_counts() {
        use sea_orm::sqlx::Error as E;
        let sqlx = |e: E| DbErr::Query(RuntimeErr::SqlxError(std::sync::Arc::new(e)));
        let io = |k| sqlx(E::Io(std::io::Error::from(k)));
        assert!(connection_lost(&io(std::io::ErrorKind::UnexpectedEof)));
        assert!(connection_lost(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(connection_lost(&io(std::io::ErrorKind::BrokenPipe)));
        // A database that is down, or a pool that is full, is not retried here.
        assert!(!connection_lost(&io(std::io::ErrorKind::ConnectionRefused)));
        assert!(!connection_lost(&sqlx(E::PoolTimedOut)));
        assert!(!connection_lost(&DbErr::Custom("x".into())));
    }
}
