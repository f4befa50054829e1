//! The breaker's failure policies: failsafe's `ConsecutiveFailures`, a count-based failure-rate
//! window implementing failsafe's [`FailurePolicy`], both fed a jittered exponential open period.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use failsafe::FailurePolicy;
use failsafe::failure_policy::consecutive_failures;

use crate::backoff::{Backoff, JitterRng};
use crate::config::BreakerConfig;

/// Open periods: `base * 2^n` capped at `cap`, each shortened by a random fraction of at most
/// `jitter` ([`Backoff::shortened_with`]). Because the nominal period doubles and the jitter is
/// at most one half ([`MAX_SHORTENING`](crate::backoff::MAX_SHORTENING), checked by
/// [`BreakerConfig::validate`]), no period is shorter than the one before it until the cap.
#[derive(Debug, Clone)]
pub struct OpenBackoff {
    backoff: Backoff,
    jitter: f64,
    step: u32,
    rng: JitterRng,
}

impl OpenBackoff {
    /// Periods from `base` to `cap`, shortened by up to `jitter` (0.0 to [`MAX_SHORTENING`](crate::backoff::MAX_SHORTENING)),
    /// drawn from the thread RNG.
    pub fn new(base: Duration, cap: Duration, jitter: f64) -> Self {
        Self::with_rng(base, cap, jitter, JitterRng::thread())
    }

    /// Like [`new`](Self::new), drawing the jitter from `rng` (seeded in tests).
    pub fn with_rng(base: Duration, cap: Duration, jitter: f64, rng: JitterRng) -> Self {
        Self {
            backoff: Backoff::new(base, cap),
            jitter,
            step: 0,
            rng,
        }
    }

    /// The un-jittered period of the `step`-th opening (0-based).
    pub fn nominal(&self, step: u32) -> Duration {
        self.backoff.ceiling(step.saturating_add(1))
    }

    /// A jittered period of the `step`-th opening (0-based).
    pub fn period(&mut self, step: u32) -> Duration {
        self.backoff
            .shortened_with(step.saturating_add(1), self.jitter, &mut self.rng)
    }
}

impl Iterator for OpenBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let period = self.period(self.step);
        self.step = self.step.saturating_add(1).min(32);
        Some(period)
    }
}

/// Trips when, over the last `window` outcomes and once at least `minimum` are known, the
/// fraction of failures reaches `threshold`. failsafe's own rate policy is an EMA over wall-clock
/// time on `std::time::Instant`: it cannot trip before a whole window of time has passed and
/// cannot be driven by tokio's paused clock, hence this count-based one.
pub struct FailureRateWindow<B> {
    threshold: f64,
    minimum: usize,
    size: usize,
    outcomes: VecDeque<bool>,
    failures: usize,
    backoff: B,
    fresh_backoff: B,
}

impl<B: Clone> FailureRateWindow<B> {
    /// A window of `size` outcomes (at least 1) that trips at `threshold` once `minimum` are in.
    pub fn new(threshold: f64, size: u32, minimum: u32, backoff: B) -> Self {
        let size = size.max(1) as usize;
        Self {
            threshold,
            minimum: (minimum as usize).clamp(1, size),
            size,
            outcomes: VecDeque::with_capacity(size),
            failures: 0,
            fresh_backoff: backoff.clone(),
            backoff,
        }
    }

    fn push(&mut self, failed: bool) {
        if self.outcomes.len() == self.size && self.outcomes.pop_front() == Some(true) {
            self.failures -= 1;
        }
        self.outcomes.push_back(failed);
        self.failures += usize::from(failed);
    }
}

impl<B> fmt::Debug for FailureRateWindow<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailureRateWindow")
            .field("threshold", &self.threshold)
            .field("failures", &self.failures)
            .field("calls", &self.outcomes.len())
            .finish()
    }
}

impl<B> FailurePolicy for FailureRateWindow<B>
where
    B: Iterator<Item = Duration> + Clone,
{
    fn record_success(&mut self) {
        self.push(false);
    }

    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        self.push(true);
        let calls = self.outcomes.len();
        let tripped =
            calls >= self.minimum && self.failures as f64 >= self.threshold * calls as f64;
        if tripped { self.backoff.next() } else { None }
    }

    fn revived(&mut self) {
        self.outcomes.clear();
        self.failures = 0;
        self.backoff = self.fresh_backoff.clone();
    }
}

/// A policy that never trips (both triggers disabled).
#[derive(Debug, Clone, Copy)]
struct Never;

impl FailurePolicy for Never {
    fn record_success(&mut self) {}
    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        None
    }
    fn revived(&mut self) {}
}

/// The policy a [`BreakerConfig`] describes: consecutive failures OR failure rate, composed with
/// failsafe's `or_else` (when both trip, the longer period wins). Open periods draw from `rng`.
pub(crate) fn from_config(config: &BreakerConfig, rng: JitterRng) -> Box<dyn FailurePolicy + Send> {
    let backoff = OpenBackoff::with_rng(config.open_base, config.open_cap, config.open_jitter, rng);
    let rate = config.failure_rate.map(|rate| {
        FailureRateWindow::new(
            rate,
            config.window_calls,
            config.minimum_calls,
            backoff.clone(),
        )
    });
    let consecutive = (config.consecutive_failures > 0)
        .then(|| consecutive_failures(config.consecutive_failures, backoff));
    match (consecutive, rate) {
        (Some(c), Some(r)) => Box::new(c.or_else(r)),
        (Some(c), None) => Box::new(c),
        (None, Some(r)) => Box::new(r),
        (None, None) => Box::new(Never),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constant() -> std::iter::Repeat<Duration> {
        std::iter::repeat(Duration::from_secs(1))
    }

    #[test]
    fn rate_needs_the_minimum_then_trips_at_threshold() {
        let mut p = FailureRateWindow::new(0.5, 10, 4, constant());
        p.record_success();
        p.record_success();
        assert_eq!(p.mark_dead_on_failure(), None, "3 calls < minimum 4");
        assert!(p.mark_dead_on_failure().is_some(), "2 of 4 = 50%");
    }

    #[test]
    fn rate_forgets_outcomes_that_slide_out() {
        let mut p = FailureRateWindow::new(0.5, 4, 4, constant());
        p.mark_dead_on_failure();
        for _ in 0..4 {
            p.record_success();
        }
        // The early failure slid out: 1 of 4 is 25 %.
        assert_eq!(p.mark_dead_on_failure(), None);
        p.revived();
        assert_eq!(p.outcomes.len(), 0);
    }

    #[test]
    fn open_backoff_grows_and_is_bounded() {
        let b = OpenBackoff::new(Duration::from_secs(1), Duration::from_secs(30), 0.2);
        let periods: Vec<_> = b.clone().take(8).collect();
        for (i, p) in periods.iter().enumerate() {
            let nominal = b.nominal(i as u32);
            assert!(*p <= nominal && *p >= nominal.mul_f64(0.8), "{i}: {p:?}");
        }
        assert!(periods.windows(2).take(4).all(|w| w[1] > w[0]));
        assert_eq!(b.nominal(10), Duration::from_secs(30));
    }

    #[test]
    fn seeded_open_periods_are_reproducible_and_jittered() {
        let seeded = |seed| {
            let rng = JitterRng::seed_from_u64(seed);
            OpenBackoff::with_rng(Duration::from_secs(1), Duration::from_secs(30), 0.5, rng)
                .take(6)
                .collect::<Vec<_>>()
        };
        let periods = seeded(3);
        assert_eq!(periods, seeded(3));
        assert_ne!(periods, seeded(4));
        let b = OpenBackoff::new(Duration::from_secs(1), Duration::from_secs(30), 0.5);
        assert!(
            periods
                .iter()
                .enumerate()
                .any(|(i, p)| *p < b.nominal(i as u32)),
            "some period is shortened: {periods:?}"
        );
    }
}
