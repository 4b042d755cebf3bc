//! The transactional outbox: a service writes the notifications of a change in the
//! same transaction as the change ([`enqueue`]); a relay task ([`spawn_relay`]) delivers
//! them in order, in batches, with retry and backoff, and deletes what was delivered.
//! A crash loses nothing that was committed; delivery is at least once, so receivers
//! are idempotent (by version or event id).
//!
//! A row its receiver refuses for its content (INVALID_ARGUMENT: it will never be
//! accepted) is **parked**: kept with the time and reason, skipped by the relay,
//! counted in `vern_outbox_parked` and logged, so one bad row never holds up the rows
//! behind it (of its tenant or any other). Rows that fail for any other reason (the
//! receiver is down) are retried in order.
//!
//! Each service owns its own `outbox` table (its own file or schema).

use std::sync::Arc;
use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use sea_orm_migration::prelude::{
    ColumnDef, DeriveIden, Index, MigrationName, MigrationTrait, SchemaManager, Table,
};
use tokio::sync::Notify;

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

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver could not be reached or failed: retry later, in order.
    #[error("{0}")]
    Retry(String),
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
    /// OUT_OF_RANGE refuse the content, anything else is retried.
    pub fn from_status(rpc: &str, status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                // Receivers name fields, never values, in their messages.
                DeliveryError::Refused(format!(
                    "{rpc}: {:?}: {}",
                    status.code(),
                    status.message().chars().take(500).collect::<String>()
                ))
            }
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

/// Handle of a running relay (one loop per topic it serves).
#[derive(Clone, Debug)]
pub struct Relay {
    notify: Vec<Arc<Notify>>,
}

impl Relay {
    /// Wakes the relay now (after a commit) instead of at its next poll.
    pub fn nudge(&self) {
        for n in &self.notify {
            n.notify_one();
        }
    }
}

/// Longest pause between polls when idle.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Longest backoff after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts the relay: delivers batches of up to `batch` rows (of every topic) until the
/// process ends.
pub fn spawn_relay(db: DatabaseConnection, deliver: Arc<dyn Deliver>, batch: u64) -> Relay {
    Relay {
        notify: vec![spawn_loop(db, deliver, batch, None)],
    }
}

/// Starts one relay loop per topic, so a topic whose receiver is down (say, audit) never
/// holds up another (say, subject states); order is kept within each topic.
pub fn spawn_topic_relays(
    db: DatabaseConnection,
    routes: Vec<(&'static str, Arc<dyn Deliver>)>,
    batch: u64,
) -> Relay {
    Relay {
        notify: routes
            .into_iter()
            .map(|(topic, deliver)| spawn_loop(db.clone(), deliver, batch, Some(topic)))
            .collect(),
    }
}

fn spawn_loop(
    db: DatabaseConnection,
    deliver: Arc<dyn Deliver>,
    batch: u64,
    topic: Option<&'static str>,
) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let wake = notify.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match deliver_topic(&db, deliver.as_ref(), batch, topic).await {
                Ok(n) if n > 0 => backoff = Duration::from_millis(100),
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
                }
                Err(e) => {
                    tracing::warn!(topic = topic.unwrap_or("*"), error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox delivery failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
    notify
}

/// Delivers up to `batch` rows; returns how many were delivered. Stops at the first
/// failure so later notifications never overtake earlier ones.
pub async fn deliver_once(
    db: &DatabaseConnection,
    deliver: &dyn Deliver,
    batch: u64,
) -> Result<usize, String> {
    deliver_topic(db, deliver, batch, None).await
}

/// [`deliver_once`] for the rows of one topic (`None`: all topics).
pub async fn deliver_topic(
    db: &DatabaseConnection,
    deliver: &dyn Deliver,
    batch: u64,
    topic: Option<&str>,
) -> Result<usize, String> {
    let mut query = entity::Entity::find()
        .filter(entity::Column::ParkedAt.is_null())
        .order_by_asc(entity::Column::Id);
    if let Some(t) = topic {
        query = query.filter(entity::Column::Topic.eq(t));
    }
    let rows = query
        .limit(batch)
        .all(db)
        .await
        .map_err(|_| "reading the outbox failed".to_owned())?;
    let mut delivered = 0;
    let mut i = 0;
    while i < rows.len() {
        let (tenant, topic) = (&rows[i].tenant_id, &rows[i].topic);
        let mut j = i;
        while j < rows.len() && &rows[j].tenant_id == tenant && &rows[j].topic == topic {
            j += 1;
        }
        let group = &rows[i..j];
        match deliver
            .deliver(
                tenant,
                topic,
                group.iter().map(|r| r.payload.clone()).collect(),
            )
            .await
        {
            Ok(()) => {
                delete(db, group.iter().map(|r| r.id).collect()).await?;
                delivered += group.len();
            }
            Err(DeliveryError::Refused(_)) => {
                // Find the refused rows one by one: the others go, in order.
                for row in group {
                    match deliver
                        .deliver(tenant, topic, vec![row.payload.clone()])
                        .await
                    {
                        Ok(()) => {
                            delete(db, vec![row.id]).await?;
                            delivered += 1;
                        }
                        Err(DeliveryError::Refused(reason)) => park(db, row, &reason).await?,
                        Err(DeliveryError::Retry(e)) => {
                            count_attempt(db, vec![row.id]).await;
                            return Err(e);
                        }
                    }
                }
            }
            Err(DeliveryError::Retry(e)) => {
                count_attempt(db, group.iter().map(|r| r.id).collect()).await;
                return Err(e);
            }
        }
        i = j;
    }
    Ok(delivered)
}

async fn delete(db: &DatabaseConnection, ids: Vec<i64>) -> Result<(), String> {
    entity::Entity::delete_many()
        .filter(entity::Column::Id.is_in(ids))
        .exec(db)
        .await
        .map(|_| ())
        .map_err(|_| "clearing delivered outbox rows failed".to_owned())
}

async fn count_attempt(db: &DatabaseConnection, ids: Vec<i64>) {
    let _ = entity::Entity::update_many()
        .col_expr(
            entity::Column::Attempts,
            Expr::col(entity::Column::Attempts).add(1),
        )
        .filter(entity::Column::Id.is_in(ids))
        .exec(db)
        .await;
}

/// Rows parked since start (for metrics).
pub static PARKED_ROWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn park(db: &DatabaseConnection, row: &entity::Model, reason: &str) -> Result<(), String> {
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
        .exec(db)
        .await
        .map_err(|_| "parking a refused outbox row failed".to_owned())?;
    PARKED_ROWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::error!(
        outbox_id = row.id,
        tenant = %row.tenant_id,
        topic = %row.topic,
        reason,
        "outbox row refused by its receiver: parked (see vern_outbox_parked)"
    );
    Ok(())
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
