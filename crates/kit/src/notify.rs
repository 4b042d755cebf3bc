//! Invalidations across replicas on PostgreSQL, for caches of state that changes often
//! and per key (say, one subject's consent states), where polling a generation per key
//! ([`crate::changes`]) would not scale.
//!
//! A write of cached state also calls [`publish`] in its transaction: PostgreSQL holds
//! the `NOTIFY` until the transaction commits and delivers the notifications of all
//! transactions to every listener **in commit order**. Each replica runs one
//! [`Listener`] that hands every key to the cache to forget.
//!
//! A notification can be late (a slow listener) or lost (its connection dropped), so
//! the listener also sends itself a *heartbeat* every [`HEARTBEAT_EVERY`] on the same
//! channel, carrying the moment it was sent. Receiving heartbeat `h` proves that every
//! transaction committed before `h` was sent has been delivered and handled (commit
//! order). [`Freshness::is_fresh`] is true only while the last heartbeat received was
//! sent less than `max_age` ago, and a cache must not be read (or filled) otherwise.
//! So an answer from the cache reflects every write committed more than `max_age`
//! before it: that is the bound. A lost connection also resets the cache (the
//! notifications sent meanwhile are gone) and it stays unused until a heartbeat sent on
//! the new connection comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::db::Db;
use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

/// How often a listener sends itself a heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(200);

/// What a listener hands to its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation<'a> {
    /// Forget this key (as given to [`publish`]).
    Key(&'a str),
    /// Forget everything: notifications may have been lost.
    All,
}

/// Marks `key` of `channel` as changed, inside the caller's transaction (delivered when
/// it commits, never if it rolls back). A no-op on SQLite, whose file has one writer.
/// `key` must not hold personal data: every listener of the database receives it.
pub async fn publish(txn: &impl ConnectionTrait, channel: &str, key: &str) -> Result<(), DbErr> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [channel.into(), key.into()],
    ))
    .await?;
    Ok(())
}

/// Whether a cache fed by a [`Listener`] may be used now.
#[derive(Debug)]
pub struct Freshness {
    start: Instant,
    max_age: Duration,
    /// Milliseconds after `start` at which the last received heartbeat was sent, plus 1
    /// (0: none since the last reset).
    heartbeat_sent: AtomicU64,
}

impl Freshness {
    fn new(max_age: Duration) -> Self {
        Self {
            start: Instant::now(),
            max_age,
            heartbeat_sent: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether every write committed more than `max_age` ago has been handed on.
    pub fn is_fresh(&self) -> bool {
        let sent = self.heartbeat_sent.load(Ordering::Acquire);
        sent != 0
            && self.now_ms().saturating_sub(sent - 1)
                < u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX)
    }

    /// The bound this freshness keeps.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    fn heard(&self, sent_ms: u64) {
        self.heartbeat_sent
            .fetch_max(sent_ms.saturating_add(1), Ordering::AcqRel);
    }

    fn reset(&self) {
        self.heartbeat_sent.store(0, Ordering::Release);
    }
}

/// A running listener; dropping it stops it (the cache then stays unused).
#[derive(Debug)]
pub struct Listener {
    freshness: Arc<Freshness>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Listener {
    /// Listens on `channel` of `db` (PostgreSQL) and hands every invalidation to
    /// `forget`, in commit order; `max_age` is the bound [`Freshness`] keeps. Returns
    /// `None` on other databases.
    pub fn spawn<F>(db: &Db, channel: &'static str, max_age: Duration, forget: F) -> Option<Self>
    where
        F: Fn(Invalidation<'_>) + Send + Sync + 'static,
    {
        if db.get_database_backend() != DbBackend::Postgres {
            return None;
        }
        let pool = db.inner().get_postgres_connection_pool().clone();
        let freshness = Arc::new(Freshness::new(max_age));
        // Tells this listener's heartbeats from other replicas' on the same channel.
        let token = format!("\u{1}hb:{}:", uuid::Uuid::new_v4().simple());
        let listen = tokio::spawn(listen(
            pool,
            channel,
            token.clone(),
            freshness.clone(),
            forget,
        ));
        let beat = tokio::spawn(heartbeat(db.clone(), channel, token, freshness.clone()));
        Some(Self {
            freshness,
            tasks: vec![listen, beat],
        })
    }

    /// Whether the cache may be used now.
    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.freshness
    }
}

async fn heartbeat(db: Db, channel: &'static str, token: String, f: Arc<Freshness>) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The moment is taken before the NOTIFY commits: whatever committed before it is
        // delivered before the heartbeat.
        let payload = format!("{token}{}", f.now_ms());
        if let Err(e) = publish(&db, channel, &payload).await {
            // The kind only: a database error's text can quote values.
            tracing::debug!(kind = ?crate::db::classify(&e), "cache heartbeat not sent");
        }
    }
}

async fn listen<F>(
    pool: sea_orm::sqlx::PgPool,
    channel: &'static str,
    token: String,
    f: Arc<Freshness>,
    forget: F,
) where
    F: Fn(Invalidation<'_>) + Send + Sync + 'static,
{
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if listener.listen(channel).await.is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Only a heartbeat sent after LISTEN took effect proves anything: one sent
        // before could commit after it, behind writes whose notifications were lost.
        let floor = f.now_ms();
        // A fill whose read began before LISTEN could hold a write whose notification
        // was missed: void them all.
        forget(Invalidation::All);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let payload = n.payload();
                    if let Some(sent) = payload.strip_prefix(token.as_str()) {
                        if let Ok(ms) = sent.parse::<u64>()
                            && ms >= floor
                        {
                            f.heard(ms);
                        }
                    } else if !payload.starts_with('\u{1}') {
                        forget(Invalidation::Key(payload));
                    }
                }
                // The connection was lost: what was sent meanwhile is gone. Connect
                // again from the top (and wait for a heartbeat sent after that).
                Ok(None) | Err(_) => {
                    f.reset();
                    forget(Invalidation::All);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_only_within_max_age_of_a_heartbeat() {
        let f = Freshness::new(Duration::from_millis(1000));
        assert!(!f.is_fresh(), "no heartbeat yet");
        f.heard(f.now_ms());
        assert!(f.is_fresh());
        f.reset();
        assert!(!f.is_fresh(), "a reset waits for the next heartbeat");
        // A heartbeat sent long ago proves nothing about the writes since.
        let f = Freshness::new(Duration::from_millis(0));
        f.heard(0);
        assert!(!f.is_fresh());
    }

    #[test]
    fn an_older_heartbeat_never_moves_freshness_back() {
        let f = Freshness::new(Duration::from_secs(3600));
        f.heard(5_000);
        f.heard(10);
        assert_eq!(f.heartbeat_sent.load(Ordering::Acquire), 5_001);
    }
}
