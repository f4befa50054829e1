//! Full-jitter capped exponential backoff (AWS architecture blog, "Exponential Backoff And
//! Jitter"; gRFC A6 uses the same shape).

use std::time::Duration;

use rand::Rng;

/// Backoff before retry `n` (1-based) is uniform in `[0, min(cap, base * 2^(n-1))]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// A backoff starting at `base` and never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The upper bound of the wait before retry `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }

    /// The wait before retry `retry` for a uniform sample `unit` in `[0, 1]`.
    pub fn delay_at(&self, retry: u32, unit: f64) -> Duration {
        self.ceiling(retry).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// A random wait before retry `retry`.
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_at(retry, rand::rng().random_range(0.0..=1.0))
    }
}
