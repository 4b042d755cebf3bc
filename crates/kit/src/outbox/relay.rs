//! One topic's relay: passes over its rows while it holds the topic's lease.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::db::Db;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::lease::Lease;
use super::{Deliver, DeliveryError, MAX_BACKOFF, MIN_BACKOFF, RelaySettings, entity};

/// Why a pass stopped. Messages name what failed, never database text or values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The outbox could not be read or written.
    #[error("{0} failed")]
    Database(&'static str),
    /// The receiver cannot take anything now: the whole topic waits.
    #[error("receiver unavailable: {0}")]
    Unavailable(String),
    /// The receiver failed on some rows (their tenants back off; see [`Pass`]).
    #[error("delivery failed: {0}")]
    Delivery(String),
    /// Another relay holds the topic's lease.
    #[error("another relay holds the topic")]
    Leased,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Whether this relay held the topic's lease (nothing is delivered without it).
    pub held: bool,
    /// Rows delivered (and deleted).
    pub delivered: usize,
    /// Rows parked: refused, or out of attempts.
    pub parked: usize,
    /// Tenants whose rows failed and now back off.
    pub failed: usize,
    /// The first of those failures.
    pub failure: Option<String>,
}

/// Tenants backing off, excluded from the query (more are skipped after reading, so
/// a backing-off tenant's rows never fill a batch while others wait).
const EXCLUDED_IN_QUERY: usize = 500;

/// The relay of one topic over one outbox: the topic's lease and the tenants backing
/// off. The lease row, the attempts and parking are in the database; the backoff is
/// in memory (a new holder tries once, then backs off by the row's attempts).
pub struct TopicRelay {
    db: Db,
    topic: String,
    settings: RelaySettings,
    lease: Lease,
    /// Tenant → when its rows may be tried again.
    waiting: HashMap<String, Instant>,
}

impl TopicRelay {
    /// A relay of `topic` over `db`'s outbox, with a holder id of its own.
    pub fn new(db: Db, topic: &str, settings: RelaySettings) -> Self {
        Self {
            lease: Lease::new(topic, settings.lease),
            db,
            topic: topic.to_owned(),
            settings,
            waiting: HashMap::new(),
        }
    }

    /// How long a relay without the lease waits before asking again.
    pub fn lease_retry(&self) -> Duration {
        self.settings.lease / 3
    }

    /// Gives the lease back (if held), so another relay may take it at once.
    pub async fn release(&mut self) -> Result<(), RelayError> {
        self.lease
            .release(&self.db)
            .await
            .map_err(|_| RelayError::Database("releasing the outbox lease"))
    }

    /// Delivers up to `batch` rows, grouped by tenant, each tenant's in enqueue order,
    /// if this relay holds (or can take) the topic's lease. A tenant whose delivery
    /// fails is left for the rest of the pass and backs off; the other tenants go on.
    pub async fn pass(&mut self, deliver: &dyn Deliver) -> Result<Pass, RelayError> {
        let mut pass = Pass::default();
        if !self.hold().await? {
            return Ok(pass);
        }
        pass.held = true;
        let now = Instant::now();
        self.waiting.retain(|_, until| *until > now);
        let rows = self.read().await?;
        for (tenant, group) in by_tenant(rows) {
            if self.waiting.contains_key(&tenant) {
                continue;
            }
            if !self
                .deliver_group(deliver, &tenant, &group, &mut pass)
                .await?
            {
                // The lease was lost: its new holder delivers the rest.
                pass.held = false;
                break;
            }
        }
        Ok(pass)
    }

    async fn hold(&mut self) -> Result<bool, RelayError> {
        self.lease
            .hold(&self.db)
            .await
            .map_err(|_| RelayError::Database("taking the outbox lease"))
    }

    async fn read(&self) -> Result<Vec<entity::Model>, RelayError> {
        use entity::Column as C;
        let mut query = entity::Entity::find()
            .filter(C::ParkedAt.is_null())
            .filter(C::Topic.eq(self.topic.as_str()))
            .order_by_asc(C::Id);
        if !self.waiting.is_empty() {
            query = query.filter(
                C::TenantId.is_not_in(self.waiting.keys().take(EXCLUDED_IN_QUERY).cloned()),
            );
        }
        query
            .limit(self.settings.batch)
            .all(&self.db)
            .await
            .map_err(|_| RelayError::Database("reading the outbox"))
    }

    /// Delivers one tenant's rows: as one batch, then (after a refusal, or for a row on
    /// its last attempt) one by one. Returns false when the lease was lost.
    async fn deliver_group(
        &mut self,
        deliver: &dyn Deliver,
        tenant: &str,
        group: &[entity::Model],
        pass: &mut Pass,
    ) -> Result<bool, RelayError> {
        let max = i64::from(self.settings.max_attempts);
        let mut rest = group;
        let mut one_by_one = false;
        while let Some(head) = rest.first() {
            if !self.hold().await? {
                return Ok(false);
            }
            let last_try = max > 0 && i64::from(head.attempts) + 1 >= max;
            let take = if one_by_one || last_try {
                1
            } else {
                rest.len()
            };
            let chunk = &rest[..take];
            let payloads = chunk.iter().map(|r| r.payload.clone()).collect();
            match deliver.deliver(tenant, &self.topic, payloads).await {
                Ok(()) => {
                    // Only the rows delivered here, whoever holds the lease by now.
                    self.delete(chunk.iter().map(|r| r.id).collect()).await?;
                    pass.delivered += take;
                    rest = &rest[take..];
                }
                Err(DeliveryError::Refused(reason)) if take == 1 => {
                    self.park(head, &reason).await?;
                    pass.parked += 1;
                    rest = &rest[1..];
                }
                // Find the refused rows one by one: the others go, in order.
                Err(DeliveryError::Refused(_)) => one_by_one = true,
                Err(DeliveryError::Unavailable(e)) => return Err(RelayError::Unavailable(e)),
                Err(DeliveryError::Retry(e)) if last_try => {
                    let reason = format!("failed {} times: {e}", head.attempts + 1);
                    self.park(head, &reason).await?;
                    pass.parked += 1;
                    rest = &rest[1..];
                }
                Err(DeliveryError::Retry(e)) => {
                    self.count_attempt(chunk.iter().map(|r| r.id).collect())
                        .await;
                    let attempts = head.attempts + 1;
                    let wait = backoff(attempts);
                    self.waiting
                        .insert(tenant.to_owned(), Instant::now() + wait);
                    tracing::warn!(
                        topic = %self.topic,
                        tenant,
                        attempts,
                        retry_in_ms = wait.as_millis() as u64,
                        error = %e,
                        "outbox delivery failed"
                    );
                    pass.failed += 1;
                    pass.failure.get_or_insert(e);
                    return Ok(true);
                }
            }
        }
        Ok(true)
    }

    async fn delete(&self, ids: Vec<i64>) -> Result<(), RelayError> {
        entity::Entity::delete_many()
            .filter(entity::Column::Id.is_in(ids))
            .exec(&self.db)
            .await
            .map(|_| ())
            .map_err(|_| RelayError::Database("clearing delivered outbox rows"))
    }

    async fn count_attempt(&self, ids: Vec<i64>) {
        // Best effort: an attempt not counted only delays parking.
        let _ = entity::Entity::update_many()
            .col_expr(
                entity::Column::Attempts,
                Expr::col(entity::Column::Attempts).add(1),
            )
            .filter(entity::Column::Id.is_in(ids))
            .exec(&self.db)
            .await;
    }

    async fn park(&self, row: &entity::Model, reason: &str) -> Result<(), RelayError> {
        entity::Entity::update_many()
            .col_expr(entity::Column::ParkedAt, Expr::value(crate::time::now()))
            .col_expr(
                entity::Column::ParkReason,
                Expr::value(reason.chars().take(1000).collect::<String>()),
            )
            .col_expr(
                entity::Column::Attempts,
                Expr::col(entity::Column::Attempts).add(1),
            )
            .filter(entity::Column::Id.eq(row.id))
            .exec(&self.db)
            .await
            .map_err(|_| RelayError::Database("parking an outbox row"))?;
        super::PARKED_ROWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Reasons are status codes and the receivers' messages, which name fields, never
        // values.
        tracing::error!(
            outbox_id = row.id,
            tenant = %row.tenant_id,
            topic = %row.topic,
            reason,
            "outbox row parked (see vern_outbox_parked, vern outbox list --parked)"
        );
        Ok(())
    }
}

/// The wait after a row's `attempts`-th failure: 100 ms doubling, at most 30 s.
fn backoff(attempts: i32) -> Duration {
    let doublings = std::cmp::min(u32::try_from(attempts.saturating_sub(1)).unwrap_or(0), 16);
    std::cmp::min(MIN_BACKOFF * 2u32.pow(doublings), MAX_BACKOFF)
}

/// Rows grouped by tenant, tenants in the order of their first row, each tenant's
/// rows in enqueue order.
fn by_tenant(rows: Vec<entity::Model>) -> Vec<(String, Vec<entity::Model>)> {
    let mut groups: Vec<(String, Vec<entity::Model>)> = vec![];
    let mut index: HashMap<String, usize> = HashMap::new();
    for row in rows {
        match index.get(&row.tenant_id) {
            Some(&i) => groups[i].1.push(row),
            None => {
                index.insert(row.tenant_id.clone(), groups.len());
                groups.push((row.tenant_id.clone(), vec![row]));
            }
        }
    }
    groups
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_30_s() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(9), Duration::from_millis(25_600));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(i32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(0), MIN_BACKOFF);
    }
}
