//! Capped exponential backoff with full jitter for the automatic retry schedule.
//!
//! Full jitter (a uniform delay between zero and the capped exponential) spreads the retries of
//! many challenges that failed together (an order-svc outage) instead of sending them back in
//! synchronised waves when it returns.

use std::time::Duration;

use rand::Rng;

/// The retry schedule's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the delay after the first failed attempt.
    pub base: Duration,
    /// Largest ceiling, whatever the attempt.
    pub cap: Duration,
}

impl Backoff {
    /// The ceiling after `failed_attempts` failures (1 for the first): `min(cap, base·2^(n-1))`.
    pub fn ceiling(&self, failed_attempts: u32) -> Duration {
        let exponent = failed_attempts.saturating_sub(1).min(31);
        self.base
            .checked_mul(1_u32 << exponent)
            .map_or(self.cap, |delay| delay.min(self.cap))
    }

    /// A random delay in `0..=ceiling(failed_attempts)`.
    pub fn delay(&self, failed_attempts: u32) -> Duration {
        let ceiling = self.ceiling(failed_attempts);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(backoff.ceiling(1), Duration::from_millis(100));
        assert_eq!(backoff.ceiling(2), Duration::from_millis(200));
        assert_eq!(backoff.ceiling(4), Duration::from_millis(800));
        assert_eq!(backoff.ceiling(5), Duration::from_secs(1));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn delays_stay_within_the_ceiling() {
        let backoff = Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(300),
        };
        for attempt in 1..20 {
            assert!(backoff.delay(attempt) <= backoff.ceiling(attempt));
        }
    }
}
