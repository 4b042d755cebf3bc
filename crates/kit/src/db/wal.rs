//! Keeps a SQLite database's write-ahead log bounded under sustained load.
//!
//! SQLite's automatic checkpoint (PASSIVE, after a commit that takes the log past 1000
//! pages) copies pages back into the database but restarts the log only when no reader
//! still uses it. Under sustained load — `vern subjects import` with 16 calls in flight,
//! where reads and writes always overlap — that moment never comes: the log of the
//! subjects database grew to 1 GB over 20,000 rows, and every read then searched a
//! wal-index of 256,000 frames, so the import slowed from 650 to 200 rows/s. This guard
//! watches the log's size and, past [`WAL_LIMIT`], runs a RESTART checkpoint: it copies
//! everything back, waits (at most [`CHECKPOINT_WAIT`]) for the readers of older
//! snapshots to finish, and so lets the next writer start the log from the beginning.
//! New readers are not held up meanwhile; new writers wait at most that long.
//!
//! The log file is reused, not shrunk, after a restart, so its size alone would say
//! "over the limit" for ever after the first overrun. `journal_size_limit` is set to the
//! same limit ([`JOURNAL_SIZE_LIMIT`]): the first commit after a restart cuts the file
//! back to it, and so a file above the limit means a log above the limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sea_orm::sqlx::{ConnectOptions, Row};

/// Log size past which the guard checkpoints.
pub(crate) const WAL_LIMIT: u64 = 16 * 1024 * 1024;
/// `PRAGMA journal_size_limit` for every SQLite connection: the guard's limit.
pub(crate) const JOURNAL_SIZE_LIMIT: &str = "16777216";
/// How long a checkpoint waits for readers (and so may hold up new writers).
const CHECKPOINT_WAIT: Duration = Duration::from_secs(1);
/// How often the log's size is looked at (one `stat`).
const POLL: Duration = Duration::from_millis(250);

/// The log file beside `db`: `<db>-wal`.
fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Watches the log of the database file at `db` until the file is gone (or the runtime
/// stops). It holds its own connection, opened on first need, so it never keeps the
/// service's pool alive.
pub(crate) fn spawn_guard(db: PathBuf) {
    spawn_guard_with(db, WAL_LIMIT, POLL);
}

fn spawn_guard_with(db: PathBuf, limit: u64, poll: Duration) {
    tokio::spawn(async move {
        let wal = wal_path(&db);
        let mut conn: Option<SqliteConnection> = None;
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !db.exists() {
                return;
            }
            let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
            if size <= limit {
                continue;
            }
            if let Err(e) = checkpoint(&db, &mut conn).await {
                // Retried at the next tick; the connection is reopened.
                conn = None;
                tracing::warn!(kind = "wal_checkpoint", error = %e, "WAL checkpoint failed");
            }
        }
    });
}

async fn checkpoint(
    db: &Path,
    conn: &mut Option<SqliteConnection>,
) -> Result<(), sea_orm::sqlx::Error> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(
            SqliteConnectOptions::new()
                .filename(db)
                .busy_timeout(CHECKPOINT_WAIT)
                .disable_statement_logging()
                .connect()
                .await?,
        ),
    };
    let row = sea_orm::sqlx::query("PRAGMA wal_checkpoint(RESTART)")
        .fetch_one(&mut *c)
        .await?;
    let busy: i64 = row.try_get(0)?;
    let frames: i64 = row.try_get(1)?;
    tracing::debug!(busy, frames, "WAL checkpoint (restart)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_cut_back_to_the_guards_limit() {
        assert_eq!(JOURNAL_SIZE_LIMIT.parse::<u64>().ok(), Some(WAL_LIMIT));
    }

    #[test]
    fn the_log_sits_beside_the_database() {
        assert_eq!(
            wal_path(Path::new("/data/subjects.db")),
            PathBuf::from("/data/subjects.db-wal")
        );
    }

    /// Readers that keep overlapping the writes starve SQLite's own checkpoint; the
    /// guard still keeps the log near its limit. The pool here is a bare one, without
    /// the guard [`crate::db::connect`] starts, so that `VERN_TEST_NO_WAL_GUARD=1`
    /// shows the log growing with everything written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_starved_by_overlapping_readers_is_restarted() {
        use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
        const LIMIT: u64 = 512 * 1024;
        const WRITES: usize = 1000;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .pragma("journal_size_limit", LIMIT.to_string()),
            )
            .await
            .expect("connect");
        sea_orm::sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
            .execute(&pool)
            .await
            .expect("create");
        if std::env::var_os("VERN_TEST_NO_WAL_GUARD").is_none() {
            spawn_guard_with(path.clone(), LIMIT, Duration::from_millis(20));
        }
        // Two readers, staggered, each holding a snapshot for a few ms: at almost every
        // moment one of them reads an older snapshot than the last write, as in a busy
        // service.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut readers = vec![];
        for r in 0..2u64 {
            let (pool, stop) = (pool.clone(), stop.clone());
            readers.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(2 * r)).await;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut txn = pool.begin().await.expect("begin");
                    sea_orm::sqlx::query("SELECT count(*) FROM t")
                        .fetch_one(&mut *txn)
                        .await
                        .expect("read");
                    tokio::time::sleep(Duration::from_millis(4)).await;
                    txn.commit().await.expect("end read");
                }
            }));
        }
        let wal = wal_path(&path);
        let mut peak = 0;
        // 16 KiB a write, about 20 MiB through the log. The writer pauses between
        // writes, as a service's writers do: a writer that never lets go of the write
        // lock would starve any checkpoint, SQLite's own or the guard's.
        for _ in 0..WRITES {
            sea_orm::sqlx::query("INSERT INTO t (v) VALUES (randomblob(16384))")
                .execute(&pool)
                .await
                .expect("write");
            peak = peak.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.await.expect("reader");
        }
        eprintln!("log peaked at {peak} bytes");
        // Seen: 0.63-0.71 MiB with the guard (also while the workspace compiled, and with
        // four busy loops on two cores), 5.6-11.8 MiB without it.
        assert!(peak < 4 * LIMIT, "log peaked at {peak} bytes");
    }
}
