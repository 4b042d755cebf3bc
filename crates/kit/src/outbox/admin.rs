//! The outbox as operators see it through the API (`ListOutboxRows`,
//! `RetryOutboxRows` on every service with an outbox): the same reads and re-queueing
//! as `vern outbox` over the database, as protobuf answers. One implementation for
//! every service; its handlers only hand over their database.

use crate::db::Db;
use vern_proto::common::v1 as pb;

use super::{Requeue, RowInfo};
use crate::error::ApiError;

/// Rows listed when the request sets no page size.
pub const DEFAULT_ROWS: u64 = 100;
/// Most rows listed.
pub const MAX_ROWS: u64 = 1000;

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn row(r: RowInfo) -> pb::OutboxRow {
    pb::OutboxRow {
        id: r.id,
        tenant_id: r.tenant_id,
        topic: r.topic,
        attempts: r.attempts,
        create_time: Some(timestamp(r.create_time)),
        park_time: r.parked_at.map(timestamp),
        park_reason: r.park_reason.unwrap_or_default(),
    }
}

/// `ListOutboxRows` over `db`.
pub async fn list(
    db: &Db,
    request: &pb::ListOutboxRowsRequest,
) -> Result<pb::ListOutboxRowsResponse, ApiError> {
    let limit = match request.page_size {
        n if n < 0 => return Err(ApiError::invalid("page_size", "must not be negative")),
        0 => DEFAULT_ROWS,
        n => (n as u64).min(MAX_ROWS),
    };
    // One more than returned tells whether there are more.
    let mut rows = super::list(db, request.parked_only, limit + 1)
        .await
        .map_err(|e| crate::db::api_error(&e))?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    Ok(pb::ListOutboxRowsResponse {
        rows: rows.into_iter().map(row).collect(),
        more,
    })
}

/// `RetryOutboxRows` over `db`.
pub async fn retry(
    db: &Db,
    request: &pb::RetryOutboxRowsRequest,
) -> Result<pb::RetryOutboxRowsResponse, ApiError> {
    let which = match (request.all_parked, request.ids.is_empty()) {
        (true, true) => Requeue::AllParked,
        (false, false) => Requeue::Ids(&request.ids),
        (true, false) => {
            return Err(ApiError::invalid(
                "ids",
                "must be empty when all_parked is set",
            ));
        }
        (false, true) => {
            return Err(ApiError::invalid(
                "ids",
                "name at least one row, or set all_parked",
            ));
        }
    };
    if request.ids.len() > MAX_ROWS as usize {
        return Err(ApiError::invalid(
            "ids",
            format!("at most {MAX_ROWS} ids per call"),
        ));
    }
    let n = super::retry(db, which)
        .await
        .map_err(|e| crate::db::api_error(&e))?;
    if n > 0 {
        tracing::info!(rows = n, "parked outbox rows re-queued by an operator");
    }
    Ok(pb::RetryOutboxRowsResponse {
        requeued_count: n as i64,
    })
}
