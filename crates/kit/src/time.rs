//! Conversions between chrono times and protobuf timestamps, and the one place where
//! a timestamp read from a request is checked.
//!
//! Every timestamp of every request goes through [`field`] (or [`check`]), which gives
//! a field violation naming the field when the value is not a valid protobuf
//! `Timestamp` (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z, nanos
//! 0..=999,999,999) or lies outside the field's [`Bounds`]:
//!
//! | bounds | from | to | for |
//! |---|---|---|---|
//! | [`Bounds::Protobuf`] | 0001-01-01 | 9999-12-31 | filters and cursors (`from`, `to`, `older_than`, `due_before`, …) |
//! | [`Bounds::Event`] | 1900-01-01 | now + [`CLOCK_SKEW`] | when something happened (`occur_time`, `collected_at`, `received_at`, …) |
//! | [`Bounds::Business`] | 1900-01-01 | 2200-01-01 | ends, expiries and as-of times (`expires_at`, `end_time`, `evaluate_time`, …) and times other services send |
//!
//! Rules relative to another field (an expiry after the event, a hold ending in the
//! future) stay with the domain.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use crate::error::FieldViolation;

/// How far in the future a time that "has happened" may lie: clock skew between the
/// caller's systems and ours.
pub const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

/// Seconds of 0001-01-01T00:00:00Z, the earliest protobuf `Timestamp`.
pub const PROTOBUF_MIN_SECONDS: i64 = -62_135_596_800;
/// Seconds of 9999-12-31T23:59:59Z, the last second of the protobuf `Timestamp` range.
pub const PROTOBUF_MAX_SECONDS: i64 = 253_402_300_799;
/// Seconds of 1900-01-01T00:00:00Z: no event, record or request of ours is older.
pub const EARLIEST_SECONDS: i64 = -2_208_988_800;
/// Seconds of 2200-01-01T00:00:00Z: no expiry, end or as-of time of ours is later
/// (periods of decades added to it stay far inside the protobuf range).
pub const LATEST_SECONDS: i64 = 7_258_118_400;

/// What a timestamp field may hold, besides being a valid protobuf `Timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    /// Any valid protobuf `Timestamp` (filters and cursors).
    Protobuf,
    /// A time something happened: not before 1900, not after now + [`CLOCK_SKEW`].
    Event,
    /// An end, expiry or as-of time: not before 1900, not after 2200-01-01.
    Business,
}

/// A chrono UTC time as a protobuf timestamp.
pub fn to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A protobuf timestamp as a chrono UTC time; `None` when it is not a valid protobuf
/// `Timestamp` (seconds outside years 1–9999, nanos outside 0..=999,999,999).
pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    if !(0..=999_999_999).contains(&t.nanos)
        || !(PROTOBUF_MIN_SECONDS..=PROTOBUF_MAX_SECONDS).contains(&t.seconds)
    {
        return None;
    }
    Utc.timestamp_opt(t.seconds, t.nanos as u32).single()
}

/// Checks the timestamp `t` of request field `field` against `bounds` at `now`.
pub fn check(
    field: &str,
    t: &prost_types::Timestamp,
    bounds: Bounds,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, FieldViolation> {
    let Some(at) = from_timestamp(t) else {
        return Err(FieldViolation::new(
            field,
            if (0..=999_999_999).contains(&t.nanos) {
                "must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z"
            } else {
                "must have nanos between 0 and 999,999,999"
            },
        ));
    };
    match bounds {
        Bounds::Protobuf => Ok(at),
        Bounds::Event | Bounds::Business if at.timestamp() < EARLIEST_SECONDS => Err(
            FieldViolation::new(field, "must not be before 1900-01-01T00:00:00Z"),
        ),
        Bounds::Event if at > now + CLOCK_SKEW => Err(FieldViolation::new(
            field,
            "must not be in the future (more than 5 minutes ahead)",
        )),
        Bounds::Business if (at.timestamp(), at.timestamp_subsec_nanos()) > (LATEST_SECONDS, 0) => {
            Err(FieldViolation::new(
                field,
                "must not be after 2200-01-01T00:00:00Z",
            ))
        }
        Bounds::Event | Bounds::Business => Ok(at),
    }
}

/// An optional request timestamp, checked by [`check`] at [`now`]; `None` when unset.
pub fn field(
    field: &str,
    t: Option<&prost_types::Timestamp>,
    bounds: Bounds,
) -> Result<Option<DateTime<Utc>>, FieldViolation> {
    t.map(|t| check(field, t, bounds, now())).transpose()
}

/// `t` as microseconds since the epoch (saturating): a version number.
pub fn micros(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos / 1_000))
}

/// Now, truncated to microseconds so values round-trip through PostgreSQL unchanged.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    #[test]
    fn constants_are_the_dates_they_name() {
        assert_eq!(at("0001-01-01T00:00:00Z").timestamp(), PROTOBUF_MIN_SECONDS);
        assert_eq!(at("9999-12-31T23:59:59Z").timestamp(), PROTOBUF_MAX_SECONDS);
        assert_eq!(at("1900-01-01T00:00:00Z").timestamp(), EARLIEST_SECONDS);
        assert_eq!(at("2200-01-01T00:00:00Z").timestamp(), LATEST_SECONDS);
    }

    #[test]
    fn the_protobuf_range_is_enforced_to_the_nanosecond() {
        let now = at("2026-11-23T12:00:00Z");
        let p = Bounds::Protobuf;
        assert!(check("t", &ts(PROTOBUF_MIN_SECONDS, 0), p, now).is_ok());
        assert!(check("t", &ts(PROTOBUF_MAX_SECONDS, 999_999_999), p, now).is_ok());
        for (s, n) in [
            (PROTOBUF_MIN_SECONDS - 1, 999_999_999),
            (PROTOBUF_MAX_SECONDS + 1, 0),
            (i64::MAX, 0),
            (i64::MIN, 0),
            (0, -1),
            (0, 1_000_000_000),
            (0, i32::MAX),
            (0, i32::MIN),
        ] {
            let v = check("records[0].collected_at", &ts(s, n), p, now).expect_err("refused");
            assert_eq!(v.field, "records[0].collected_at", "{s} {n}");
            assert!(from_timestamp(&ts(s, n)).is_none(), "{s} {n}");
        }
        // Year 10000 and year 0 (chrono would accept both).
        let y10000 = at("9999-12-31T23:59:59Z").timestamp() + 1;
        assert!(check("t", &ts(y10000, 0), p, now).is_err());
        assert!(check("t", &ts(PROTOBUF_MIN_SECONDS - 86_400, 0), p, now).is_err());
        let v = check("t", &ts(0, 1_000_000_000), p, now).expect_err("nanos");
        assert!(v.description.contains("nanos"), "{}", v.description);
    }

    #[test]
    fn events_lie_between_1900_and_now_plus_the_skew() {
        let now = at("2026-11-23T12:00:00Z");
        let e = Bounds::Event;
        let ok = |s: &str| check("occur_time", &to_timestamp(at(s)), e, now);
        assert!(ok("1900-01-01T00:00:00Z").is_ok());
        assert!(ok("2026-11-23T12:05:00Z").is_ok());
        assert!(ok("1899-12-31T23:59:59Z").is_err());
        assert!(ok("2026-11-23T12:05:00.000001Z").is_err());
        assert!(ok("0001-01-01T00:00:00Z").is_err());
        let v = ok("2027-01-01T00:00:00Z").expect_err("future");
        assert_eq!(v.field, "occur_time");
        assert!(v.description.contains("future"));
    }

    #[test]
    fn business_times_lie_between_1900_and_2200() {
        let now = at("2026-11-23T12:00:00Z");
        let b = Bounds::Business;
        let ok = |s: &str| check("expires_at", &to_timestamp(at(s)), b, now);
        assert!(ok("1900-01-01T00:00:00Z").is_ok());
        assert!(ok("2200-01-01T00:00:00Z").is_ok());
        assert!(ok("2199-06-01T00:00:00Z").is_ok());
        assert!(ok("2200-01-01T00:00:00.000001Z").is_err());
        assert!(ok("9999-12-31T23:59:59Z").is_err());
        assert!(ok("1899-12-31T23:59:59Z").is_err());
        // A protobuf-range filter takes any of them.
        let f = |s: &str| check("from", &to_timestamp(at(s)), Bounds::Protobuf, now);
        assert!(f("0001-01-01T00:00:00Z").is_ok());
        assert!(f("9999-12-31T23:59:59.999999999Z").is_ok());
    }

    #[test]
    fn an_unset_field_is_none_and_a_set_one_is_converted() {
        assert_eq!(field("t", None, Bounds::Event), Ok(None));
        let t = at("2020-02-29T10:00:00.123456Z");
        assert_eq!(
            field("t", Some(&to_timestamp(t)), Bounds::Event),
            Ok(Some(t))
        );
    }
}
