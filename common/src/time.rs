//! Conversions between `chrono` timestamps (as stored by sqlx) and protobuf timestamps, and the
//! parsing of periods given on the command line.

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

/// Parses a period for a repeating task (`5s`, `1m`, `250ms`): a humantime duration that is not
/// zero, since a zero period would make the task spin (and `tokio::time::interval` panics on it).
pub fn parse_period(text: &str) -> Result<std::time::Duration, String> {
    let period = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if period.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(period)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_period;

    #[test]
    fn periods_are_positive_durations() {
        assert_eq!(parse_period("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_period("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_period("0s").is_err());
        assert!(parse_period("soon").is_err());
    }
}
