//! Conversions between `chrono` timestamps (as stored by sqlx) and protobuf timestamps.

use chrono::{DateTime, Utc};

/// Converts a UTC timestamp into a `google.protobuf.Timestamp`.
pub fn to_proto(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        // Always within 0..1_000_000_000, so the cast cannot truncate.
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// Converts an optional UTC timestamp; `None` stays unset on the wire.
pub fn to_proto_opt(at: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    at.map(to_proto)
}
