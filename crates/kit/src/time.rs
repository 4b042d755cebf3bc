//! Conversions between chrono times and protobuf timestamps.

use chrono::{DateTime, TimeZone, Utc};

/// A chrono UTC time as a protobuf timestamp.
pub fn to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A protobuf timestamp as a chrono UTC time; `None` when out of range.
pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    if t.nanos < 0 {
        return None;
    }
    Utc.timestamp_opt(t.seconds, t.nanos as u32).single()
}

/// Now, truncated to microseconds so values round-trip through PostgreSQL unchanged.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}
