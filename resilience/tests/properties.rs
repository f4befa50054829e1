//! Property tests of the retry backoff (the breaker's state machine has its own, next to it).

use std::time::Duration;

use proptest::prelude::*;
use resilience::backoff::Backoff;

fn millis(range: std::ops::Range<u64>) -> impl Strategy<Value = Duration> {
    range.prop_map(Duration::from_millis)
}

proptest! {
    #[test]
    fn every_wait_is_within_zero_and_the_capped_ceiling(
        base in millis(0..10_000),
        cap in millis(0..60_000),
        retry in 1u32..200,
        unit in 0.0f64..=1.0,
    ) {
        let backoff = Backoff::new(base, cap);
        let ceiling = backoff.ceiling(retry);
        prop_assert!(ceiling <= cap);
        prop_assert!(backoff.delay_at(retry, unit) <= ceiling);
        prop_assert!(backoff.delay(retry) <= ceiling);
    }

    #[test]
    fn the_ceiling_doubles_from_base_until_the_cap(
        base in millis(1..10_000),
        cap in millis(1..60_000),
        retry in 1u32..40,
    ) {
        let backoff = Backoff::new(base, cap);
        prop_assert_eq!(backoff.ceiling(1), base.min(cap));
        let (now, next) = (backoff.ceiling(retry), backoff.ceiling(retry + 1));
        prop_assert!(next >= now);
        prop_assert_eq!(next, now.saturating_mul(2).min(cap).max(now));
    }

    #[test]
    fn full_jitter_spans_the_whole_range(base in millis(10..1000), retry in 1u32..5) {
        let backoff = Backoff::new(base, base * 16);
        prop_assert_eq!(backoff.delay_at(retry, 0.0), Duration::ZERO);
        prop_assert_eq!(backoff.delay_at(retry, 1.0), backoff.ceiling(retry));
    }
}
