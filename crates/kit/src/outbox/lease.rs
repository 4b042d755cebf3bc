//! Which relay delivers a topic: a lease in `outbox_leases` (topic, holder, expiry).
//!
//! A relay takes or renews the lease with one conditional UPSERT (the row is free, its
//! own, or expired) and holds it for [`LEASE`], renewing it after a third of that;
//! expiries are the database's clock, so replicas' clocks need not agree. A relay that
//! cannot renew stops delivering: it never acts on a lease older than a third of its
//! length plus one receiver call. One without the lease asks again every third of it,
//! so a dead holder's topic moves within about 1⅓ leases.
//!
//! A holder id is `<host>@<pid namespace>/<pid>/<random>`. A relay may take at once a
//! lease whose holder ran on the same host and pid namespace in a process that is
//! gone (a `vern dev` or a container restarted after a crash), instead of waiting out
//! its expiry; a holder in another process that is still running, or anywhere else,
//! is waited for.

use std::time::{Duration, Instant};

use crate::db::Db;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

/// How long a lease lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(15);

/// Milliseconds since the epoch by the database's clock.
fn now_ms(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        _ => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

/// `sql` with `{now}` the database's clock and `$1`, `$2`… as the backend's
/// placeholders (each used once, in order).
fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let mut sql = sql.replace("{now}", now_ms(backend));
    if backend == DbBackend::Sqlite {
        for i in (1..=values.len()).rev() {
            sql = sql.replace(&format!("${i}"), "?");
        }
    }
    Statement::from_sql_and_values(backend, sql, values)
}

/// One relay's lease of one topic.
pub(super) struct Lease {
    topic: String,
    holder: String,
    length: Duration,
    /// When it was last taken or renewed (this process's clock), while held.
    renewed: Option<Instant>,
}

impl Lease {
    pub(super) fn new(topic: &str, length: Duration) -> Self {
        Self {
            topic: topic.to_owned(),
            holder: holder_id(),
            length,
            renewed: None,
        }
    }

    /// Whether this relay holds the lease: held and renewed less than a third of it
    /// ago, or taken or renewed now.
    pub(super) async fn hold(&mut self, db: &Db) -> Result<bool, DbErr> {
        if self
            .renewed
            .is_some_and(|at| at.elapsed() < self.length / 3)
        {
            return Ok(true);
        }
        // Before the statement: the database's expiry is counted from later.
        let asked = Instant::now();
        self.renewed = None;
        let held = self.take(db).await?;
        if held {
            self.renewed = Some(asked);
        }
        Ok(held)
    }

    async fn take(&self, db: &Db) -> Result<bool, DbErr> {
        let backend = db.get_database_backend();
        let length = i64::try_from(self.length.as_millis()).unwrap_or(i64::MAX);
        let taken = db
            .execute_raw(statement(
                backend,
                "INSERT INTO outbox_leases (topic, holder, expires_at) VALUES ($1, $2, {now} + $3) \
                 ON CONFLICT (topic) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE outbox_leases.holder = excluded.holder OR outbox_leases.expires_at < {now}",
                vec![
                    self.topic.clone().into(),
                    self.holder.clone().into(),
                    length.into(),
                ],
            ))
            .await?
            .rows_affected()
            == 1;
        if taken {
            return Ok(true);
        }
        let current = db
            .query_one_raw(statement(
                backend,
                "SELECT holder FROM outbox_leases WHERE topic = $1",
                vec![self.topic.clone().into()],
            ))
            .await?
            .map(|row| row.try_get::<String>("", "holder"))
            .transpose()?;
        let Some(current) = current.filter(|h| is_gone(h)) else {
            return Ok(false);
        };
        // Compare-and-set: another relay may take the dead holder's lease first.
        Ok(db
            .execute_raw(statement(
                backend,
                "UPDATE outbox_leases SET holder = $1, expires_at = {now} + $2 \
                 WHERE topic = $3 AND holder = $4",
                vec![
                    self.holder.clone().into(),
                    length.into(),
                    self.topic.clone().into(),
                    current.into(),
                ],
            ))
            .await?
            .rows_affected()
            == 1)
    }

    /// Gives the lease back if this relay holds it.
    pub(super) async fn release(&mut self, db: &Db) -> Result<(), DbErr> {
        if self.renewed.take().is_none() {
            return Ok(());
        }
        db.execute_raw(statement(
            db.get_database_backend(),
            "DELETE FROM outbox_leases WHERE topic = $1 AND holder = $2",
            vec![self.topic.clone().into(), self.holder.clone().into()],
        ))
        .await
        .map(|_| ())
    }
}

/// `<host>@<pid namespace>`, on Linux; `None` elsewhere (no lease is then taken over
/// before it expires).
pub(super) fn local_scope() -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}@{}", host.trim(), ns.display()))
}

fn holder_id() -> String {
    format!(
        "{}/{}/{}",
        local_scope().unwrap_or_else(|| "?".to_owned()),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Whether `holder` ran in this host's pid namespace, in another process that no
/// longer exists. (A reused pid reads as alive: the lease is then waited out.)
pub(super) fn is_gone(holder: &str) -> bool {
    let mut parts = holder.rsplitn(3, '/');
    let (Some(_random), Some(pid), Some(scope)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    local_scope().is_some_and(|me| me == scope)
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn only_a_gone_process_of_this_host_is_taken_over() {
        let Some(scope) = local_scope() else {
            // Not Linux: nothing is taken over early.
            assert!(!is_gone(&holder_id()));
            return;
        };
        // A process that ran here and has exited (and was reaped).
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let gone = child.id();
        child.wait().expect("wait");
        assert!(is_gone(&format!("{scope}/{gone}/abc")));
        // Another relay of this process, a live process, another host or namespace.
        assert!(!is_gone(&holder_id()));
        assert!(!is_gone(&format!("{scope}/1/abc")));
        assert!(!is_gone(&format!("other@pid:[1]/{gone}/abc")));
        assert!(!is_gone("garbage"));
        assert!(!is_gone(&format!("{scope}/../abc")));
    }

    #[test]
    fn placeholders_per_backend() {
        let s = statement(
            DbBackend::Sqlite,
            "UPDATE t SET a = $1 WHERE b = $2 AND c < {now}",
            vec![1.into(), 2.into()],
        );
        assert!(
            s.sql
                .starts_with("UPDATE t SET a = ? WHERE b = ? AND c < CAST((julianday")
        );
        let s = statement(DbBackend::Postgres, "SELECT $1", vec![1.into()]);
        assert_eq!(s.sql, "SELECT $1");
    }
}
