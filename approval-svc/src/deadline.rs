//! The caller's deadline (`grpc-timeout`) and the budget it leaves for the call to order-svc.
//!
//! The approval must answer within the caller's deadline even when order-svc hangs, and must
//! still have time to write the outcome after the call: the order call gets the remaining time
//! minus a margin, and never more than the configured order-call timeout.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// Request metadata carrying the caller's timeout (gRPC over HTTP/2 spec).
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The instant by which the caller expects an answer, if it sent a `grpc-timeout`.
pub fn caller_deadline(metadata: &MetadataMap, received_at: Instant) -> Option<Instant> {
    let value = metadata.get(GRPC_TIMEOUT)?.to_str().ok()?;
    parse_grpc_timeout(value).map(|timeout| received_at + timeout)
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H M S m u n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Time the order call may take: `min(limit, time left before deadline − margin)`. Zero means
/// there is no time for a call at all.
pub fn call_budget(deadline: Option<Instant>, limit: Duration, margin: Duration) -> Duration {
    match deadline {
        None => limit,
        Some(deadline) => deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(margin)
            .min(limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_garbage() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "10", "10x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn budget_keeps_the_margin_and_the_limit() {
        let limit = Duration::from_secs(5);
        let margin = Duration::from_millis(100);
        assert_eq!(call_budget(None, limit, margin), limit);
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(call_budget(Some(far), limit, margin), limit);
        let near = Instant::now() + Duration::from_millis(500);
        let budget = call_budget(Some(near), limit, margin);
        assert!(budget <= Duration::from_millis(400) && budget > Duration::from_millis(300));
        let past = Instant::now();
        assert_eq!(call_budget(Some(past), limit, margin), Duration::ZERO);
    }
}
