//! The transactional outbox: a service writes the notifications of a change in the
//! same transaction as the change ([`enqueue`]); relay loops ([`spawn_topic_relays`],
//! one per topic) deliver them in order, in batches, with retry and backoff, and delete
//! what was delivered. A crash loses nothing that was committed; delivery is at least
//! once, so receivers are idempotent (by version or event id).
//!
//! **One replica delivers a topic at a time.** Each service's replicas share its
//! outbox; the relay loop of a topic delivers only while it holds the topic's lease
//! (a row of `outbox_leases`, see [`lease`]), so each row is normally delivered
//! exactly once and in order within its (topic, tenant). A lease rather than
//! `FOR UPDATE SKIP LOCKED`: row locks would let two replicas take different rows of
//! the same tenant and deliver them out of order (keeping the order needs a lock per
//! (topic, tenant) held across the receiver's call), they would hold a transaction
//! open during a network call, and SQLite has no `SKIP LOCKED`. One holder per topic
//! is enough throughput (a relay loop delivered a topic alone before), and the same
//! code runs on both backends. A holder that loses its lease (a receiver call that
//! outlasted it) stops before its next delivery; the row it was delivering may then
//! be delivered twice, which receivers tolerate.
//!
//! A row its receiver refuses for its content (INVALID_ARGUMENT: it will never be
//! accepted) is **parked**: kept with the time and reason, skipped by the relay,
//! counted in `vern_outbox_parked` and logged, so one bad row never holds up the rows
//! behind it (of its tenant or any other). A row its receiver keeps failing on
//! ([`DeliveryError::Retry`]) is retried with backoff per (topic, tenant) — other
//! tenants' rows go on meanwhile — and parked after `outbox.max_attempts`
//! deliveries. A receiver that cannot be reached ([`DeliveryError::Unavailable`])
//! holds up its topic and parks nothing: it is not the rows' fault. Operators list and
//! re-queue parked rows with [`list`] and [`retry`] (`vern outbox`).
//!
//! Each service owns its own `outbox` table (its own file or schema).

pub mod admin;
pub mod lease;
mod relay;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use crate::db::Db;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use sea_orm_migration::prelude::{
    ColumnDef, DeriveIden, Index, MigrationName, MigrationTrait, SchemaManager, Table,
};
use tokio::sync::Notify;

pub use relay::{Pass, RelayError, TopicRelay};

/// Pending notifications.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One pending notification.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        /// Order of enqueueing.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Tenant the notification belongs to.
        pub tenant_id: String,
        /// What kind of notification, e.g. `subject_state`.
        pub topic: String,
        /// The encoded notification (protobuf).
        pub payload: Vec<u8>,
        /// Failed delivery attempts.
        pub attempts: i32,
        /// When it was enqueued.
        pub create_time: ChronoDateTimeUtc,
        /// When the receiver refused it for good; the relay skips parked rows.
        pub parked_at: Option<ChronoDateTimeUtc>,
        /// Why it was parked (the receiver's status code and message; never values).
        pub park_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Adds a notification inside the caller's transaction.
pub async fn enqueue(
    txn: &impl ConnectionTrait,
    tenant_id: &str,
    topic: &str,
    payload: Vec<u8>,
) -> Result<(), DbErr> {
    entity::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        topic: Set(topic.to_owned()),
        payload: Set(payload),
        attempts: Set(0),
        create_time: Set(crate::time::now()),
        parked_at: Set(None),
        park_reason: Set(None),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(())
}

/// Adds several notifications of one tenant and topic inside the caller's transaction,
/// with multi-row inserts (in enqueue order: ids ascend with the order of `payloads`).
pub async fn enqueue_many(
    txn: &impl ConnectionTrait,
    tenant_id: &str,
    topic: &str,
    payloads: Vec<Vec<u8>>,
) -> Result<(), DbErr> {
    let now = crate::time::now();
    let mut rows = payloads.into_iter().map(|payload| entity::ActiveModel {
        tenant_id: Set(tenant_id.to_owned()),
        topic: Set(topic.to_owned()),
        payload: Set(payload),
        attempts: Set(0),
        create_time: Set(now),
        parked_at: Set(None),
        park_reason: Set(None),
        ..Default::default()
    });
    loop {
        // 200 rows of 7 values stay far below SQLite's and PostgreSQL's parameter limits.
        let chunk: Vec<_> = rows.by_ref().take(200).collect();
        if chunk.is_empty() {
            return Ok(());
        }
        entity::Entity::insert_many(chunk)
            .exec_without_returning(txn)
            .await?;
    }
}

/// Notifications waiting for delivery (parked ones not counted).
pub async fn backlog(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    entity::Entity::find()
        .filter(entity::Column::ParkedAt.is_null())
        .count(db)
        .await
}

/// Parked notifications: refused by their receiver, kept for an operator to look at.
pub async fn parked(db: &impl ConnectionTrait) -> Result<Vec<entity::Model>, DbErr> {
    entity::Entity::find()
        .filter(entity::Column::ParkedAt.is_not_null())
        .order_by_asc(entity::Column::Id)
        .all(db)
        .await
}

/// An outbox row as an operator sees it: everything but the payload (which holds the
/// notification, possibly personal data).
#[derive(Debug, Clone, PartialEq, Eq, sea_orm::FromQueryResult)]
pub struct RowInfo {
    /// Order of enqueueing (per service).
    pub id: i64,
    /// Tenant the notification belongs to.
    pub tenant_id: String,
    /// What kind of notification.
    pub topic: String,
    /// Failed delivery attempts.
    pub attempts: i32,
    /// When it was enqueued.
    pub create_time: chrono::DateTime<chrono::Utc>,
    /// When it was parked, if it is.
    pub parked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why it was parked.
    pub park_reason: Option<String>,
}

/// Up to `limit` rows in enqueue order, without their payloads: all of them, or only
/// the parked ones.
pub async fn list(
    db: &impl ConnectionTrait,
    parked_only: bool,
    limit: u64,
) -> Result<Vec<RowInfo>, DbErr> {
    use entity::Column as C;
    let mut query = entity::Entity::find()
        .select_only()
        .columns([
            C::Id,
            C::TenantId,
            C::Topic,
            C::Attempts,
            C::CreateTime,
            C::ParkedAt,
            C::ParkReason,
        ])
        .order_by_asc(C::Id)
        .limit(limit);
    if parked_only {
        query = query.filter(C::ParkedAt.is_not_null());
    }
    query.into_model::<RowInfo>().all(db).await
}

/// Which parked rows [`retry`] puts back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue<'a> {
    /// These rows (those of them that are parked).
    Ids(&'a [i64]),
    /// Every parked row.
    AllParked,
}

/// Puts parked rows back in the queue with their attempts reset; returns how many.
/// The relay delivers them at its next poll, after rows of their tenant that were
/// delivered while they were parked (receivers order by version or event id).
pub async fn retry(db: &impl ConnectionTrait, which: Requeue<'_>) -> Result<u64, DbErr> {
    use entity::Column as C;
    let mut update = entity::Entity::update_many()
        .col_expr(
            C::ParkedAt,
            Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .col_expr(C::ParkReason, Expr::value(Option::<String>::None))
        .col_expr(C::Attempts, Expr::value(0))
        .filter(C::ParkedAt.is_not_null());
    if let Requeue::Ids(ids) = which {
        if ids.is_empty() {
            return Ok(0);
        }
        update = update.filter(C::Id.is_in(ids.iter().copied()));
    }
    Ok(update.exec(db).await?.rows_affected)
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver failed on these notifications: retried later, in order, with
    /// backoff per (topic, tenant), and parked after `outbox.max_attempts`.
    #[error("{0}")]
    Retry(String),
    /// The receiver cannot take anything now (unreachable, overloaded, timed out):
    /// the topic waits and nothing is counted against the rows.
    #[error("{0}")]
    Unavailable(String),
    /// The receiver refused the content: it never will accept it. With several
    /// payloads, at least one of them is refused.
    #[error("refused: {0}")]
    Refused(String),
}

impl From<String> for DeliveryError {
    fn from(e: String) -> Self {
        DeliveryError::Retry(e)
    }
}

impl DeliveryError {
    /// The error for a call of `rpc` that answered `status`: INVALID_ARGUMENT and
    /// OUT_OF_RANGE refuse the content; UNAVAILABLE, RESOURCE_EXHAUSTED,
    /// DEADLINE_EXCEEDED and CANCELLED (tonic's client timeout) say the receiver
    /// cannot take it now; anything else is the receiver failing on these rows.
    pub fn from_status(rpc: &str, status: &tonic::Status) -> Self {
        use tonic::Code;
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                // Receivers name fields, never values, in their messages.
                DeliveryError::Refused(format!(
                    "{rpc}: {:?}: {}",
                    status.code(),
                    status.message().chars().take(500).collect::<String>()
                ))
            }
            code @ (Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Cancelled) => DeliveryError::Unavailable(format!("{rpc} failed: {code:?}")),
            code => DeliveryError::Retry(format!("{rpc} failed: {code:?}")),
        }
    }
}

/// Delivers one batch of notifications of one tenant and topic, in order.
#[async_trait::async_trait]
pub trait Deliver: Send + Sync + 'static {
    /// Delivers `payloads` (in enqueue order); an error leaves them for a retry, or
    /// (refused) has the relay find and park the refused ones.
    async fn deliver(
        &self,
        tenant_id: &str,
        topic: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), DeliveryError>;
}

/// How a relay loop works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// Rows read per pass (of every tenant).
    pub batch: u64,
    /// Deliveries a row gets when its receiver keeps failing on it before it is
    /// parked; 0: never parked for failures.
    pub max_attempts: u32,
    /// How long a topic's lease lasts unless renewed (renewed after a third of it).
    pub lease: Duration,
}

impl RelaySettings {
    /// Batches of `batch` rows, `outbox.max_attempts` from `config`, the default lease.
    pub fn new(batch: u64, config: &crate::config::OutboxConfig) -> Self {
        Self {
            batch,
            max_attempts: config.max_attempts,
            ..Self::default()
        }
    }
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch: 500,
            max_attempts: crate::config::OutboxConfig::default().max_attempts,
            lease: lease::LEASE,
        }
    }
}

/// Handle of a running relay (one loop per topic it serves). The loops stop when the
/// last clone is dropped: a service that is gone (a start refused half-way, a suite
/// stopped in-process) leaves no loop holding its database pool.
#[derive(Clone, Debug)]
pub struct Relay {
    notify: Vec<Arc<Notify>>,
    tasks: Vec<tokio::task::AbortHandle>,
    _loops: Arc<StopOnDrop>,
}

/// Aborts the relay's loops when the last handle goes.
#[derive(Debug)]
struct StopOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Relay {
    /// Wakes the relay now (after a commit) instead of at its next poll.
    pub fn nudge(&self) {
        for n in &self.notify {
            n.notify_one();
        }
    }

    /// Stops the relay's loops (their leases lapse after `lease`).
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Longest pause between polls when idle.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// First backoff after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest backoff after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts one relay loop per topic, so a topic whose receiver is down (say, audit) never
/// holds up another (say, subject states); order is kept within each topic and tenant.
pub fn spawn_topic_relays(
    db: Db,
    routes: Vec<(&'static str, Arc<dyn Deliver>)>,
    settings: RelaySettings,
) -> Relay {
    let (notify, tasks): (Vec<_>, Vec<_>) = routes
        .into_iter()
        .map(|(topic, deliver)| spawn_loop(db.clone(), deliver, topic, settings.clone()))
        .unzip();
    Relay {
        notify,
        _loops: Arc::new(StopOnDrop(tasks.clone())),
        tasks,
    }
}

fn spawn_loop(
    db: Db,
    deliver: Arc<dyn Deliver>,
    topic: &'static str,
    settings: RelaySettings,
) -> (Arc<Notify>, tokio::task::AbortHandle) {
    let notify = Arc::new(Notify::new());
    let wake = notify.clone();
    let task = tokio::spawn(async move {
        let mut relay = TopicRelay::new(db, topic, settings);
        let mut backoff = MIN_BACKOFF;
        loop {
            match relay.pass(deliver.as_ref()).await {
                Ok(pass) => {
                    backoff = MIN_BACKOFF;
                    if !pass.held {
                        // Another replica delivers this topic: ask again when its lease
                        // may have lapsed (nudges are for the holder).
                        tokio::time::sleep(relay.lease_retry()).await;
                    } else if pass.delivered + pass.parked + pass.failed == 0 {
                        // (After a failure the next pass goes at once: it leaves the
                        // failing tenant out and reaches the rows behind it.)
                        let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(topic, error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox delivery failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
    (notify, task.abort_handle())
}

/// One pass over `topic`'s rows, up to `batch` of them, as a relay of its own: takes
/// the topic's lease (or answers [`RelayError::Leased`] when another relay holds it),
/// delivers, and gives the lease back. Returns how many rows were delivered, or the
/// first failure (the rows of other tenants are delivered all the same).
pub async fn deliver_topic(
    db: &Db,
    deliver: &dyn Deliver,
    batch: u64,
    topic: &str,
) -> Result<usize, RelayError> {
    let mut relay = TopicRelay::new(
        db.clone(),
        topic,
        RelaySettings {
            batch,
            ..RelaySettings::default()
        },
    );
    let pass = relay.pass(deliver).await;
    // Best effort: an unreleased lease lapses by itself.
    let _ = relay.release().await;
    let pass = pass?;
    if !pass.held {
        return Err(RelayError::Leased);
    }
    match pass.failure {
        Some(e) => Err(RelayError::Delivery(e)),
        None => Ok(pass.delivered),
    }
}

/// Rows parked since start (for metrics).
pub static PARKED_ROWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Indexes the outbox by (topic, id): a relay reads the oldest unparked rows of its
/// topic, which without it is a scan and sort of the whole outbox on every pass (20 ms
/// at 37,000 rows behind a bulk import, and slower the further the relay falls behind;
/// BENCHMARKS.md, "Import: what slowed it down").
pub struct TopicIndexMigration;

impl MigrationName for TopicIndexMigration {
    fn name(&self) -> &str {
        "m0000_outbox_topic_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for TopicIndexMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("outbox_topic_idx")
                    .table(Outbox::Table)
                    .col(Outbox::Topic)
                    .col(Outbox::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("outbox_topic_idx")
                    .table(Outbox::Table)
                    .to_owned(),
            )
            .await
    }
}

/// Creates `outbox_leases`: which relay delivers each topic, until when (see [`lease`]).
pub struct LeaseMigration;

impl MigrationName for LeaseMigration {
    fn name(&self) -> &str {
        "m0000_outbox_leases"
    }
}

#[derive(DeriveIden)]
enum OutboxLeases {
    Table,
    Topic,
    Holder,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for LeaseMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OutboxLeases::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(OutboxLeases::Topic)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(OutboxLeases::Holder).string().not_null())
                    // Milliseconds since the epoch by the database's clock, so replicas'
                    // clocks need not agree.
                    .col(
                        ColumnDef::new(OutboxLeases::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(OutboxLeases::Table).to_owned())
            .await
    }
}

/// Adds `parked_at` and `park_reason` to the `outbox` table.
pub struct ParkingMigration;

impl MigrationName for ParkingMigration {
    fn name(&self) -> &str {
        "m0000_outbox_parking"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ParkingMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .add_column(
                        ColumnDef::new(Outbox::ParkedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .add_column(ColumnDef::new(Outbox::ParkReason).string().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Outbox::ParkedAt, Outbox::ParkReason] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Outbox::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Creates the `outbox` table.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0000_outbox"
    }
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    TenantId,
    Topic,
    Payload,
    Attempts,
    CreateTime,
    ParkedAt,
    ParkReason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Outbox::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Outbox::TenantId).string().not_null())
                    .col(ColumnDef::new(Outbox::Topic).string().not_null())
                    .col(ColumnDef::new(Outbox::Payload).binary().not_null())
                    .col(ColumnDef::new(Outbox::Attempts).integer().not_null())
                    .col(
                        ColumnDef::new(Outbox::CreateTime)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("outbox_tenant_idx")
                    .table(Outbox::Table)
                    .col(Outbox::TenantId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Outbox::Table).to_owned())
            .await
    }
}
