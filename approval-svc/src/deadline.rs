//! The caller's deadline (`grpc-timeout`) and the budget it leaves for the call to order-svc.
//!
//! The approval must answer within the caller's deadline even when order-svc hangs, and must
//! still have time to write the outcome after the call: the order call gets the remaining time
//! minus a margin, and never more than the configured order-call timeout.

use std::time::Duration;

use resilience::metadata::{GRPC_TIMEOUT, decode_timeout_text};
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// The instant by which the caller expects an answer, if it sent a valid `grpc-timeout`
/// (decoded by [`resilience::metadata::decode_timeout_text`]); `None` too when the instant is
/// beyond what the clock can represent, which is as good as no deadline.
pub fn caller_deadline(metadata: &MetadataMap, received_at: Instant) -> Option<Instant> {
    let value = metadata.get(GRPC_TIMEOUT)?.to_str().ok()?;
    received_at.checked_add(decode_timeout_text(value)?)
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

    /// The timeout the caller's `grpc-timeout` metadata `value` gives, through
    /// [`caller_deadline`].
    fn timeout_of(value: &str) -> Option<Duration> {
        let mut metadata = MetadataMap::new();
        if let Ok(value) = value.parse() {
            metadata.insert(GRPC_TIMEOUT, value);
        }
        let received_at = Instant::now();
        caller_deadline(&metadata, received_at).map(|deadline| deadline - received_at)
    }

    #[test]
    fn parses_every_unit_and_refuses_garbage() {
        assert_eq!(timeout_of("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout_of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(timeout_of("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "10", "10x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(timeout_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_largest_timeout_does_not_panic() {
        let far = timeout_of("99999999H");
        assert!(
            far.is_none_or(|t| t == Duration::from_secs(99_999_999 * 3600)),
            "{far:?}"
        );
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
