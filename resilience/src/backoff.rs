//! Capped exponential backoff with jitter: the one schedule behind every wait in the workspace
//! (the [`retry`](crate::retry) layer, the [`breaker`](crate::breaker)'s open periods, endpoint
//! ejections, approval-svc's automatic retries, lab-common's alert webhooks).
//!
//! The n-th wait (1-based) has the ceiling `min(cap, base * 2^(n-1))` ([`Backoff::ceiling`]),
//! and one of two shapes under it:
//! - **full jitter** ([`Backoff::delay_with`]): uniform in `[0, ceiling]` (AWS architecture blog,
//!   "Exponential Backoff And Jitter"; gRFC A6 uses the same shape). For retries: clients that
//!   failed together come back spread out, not in synchronised waves;
//! - **shortened** ([`Backoff::shortened_with`]): `ceiling * (1 - jitter * u)` for a fraction
//!   `jitter` of at most [`MAX_SHORTENING`]. For open periods and ejections, which must not
//!   shrink from one to the next before the cap, while still not ending together.
//!
//! Randomness is injected: every method that draws takes the RNG, so a seeded one
//! (`rand::rngs::StdRng::seed_from_u64`) makes the jittered paths deterministic in tests.
//! [`JitterRng`] is the cloneable source a layer keeps (the thread RNG by default, or one
//! seeded generator shared by every clone), like tower's `Balance::from_rng`.
//!
//! ```
//! use std::time::Duration;
//! use rand::SeedableRng;
//! use resilience::backoff::Backoff;
//!
//! let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
//! assert_eq!(backoff.ceiling(3), Duration::from_millis(400));
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! let wait = backoff.delay_with(3, &mut rng);
//! assert!(wait <= Duration::from_millis(400));
//! // The same seed gives the same wait.
//! assert_eq!(wait, backoff.delay_with(3, &mut rand::rngs::StdRng::seed_from_u64(7)));
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Largest fraction [`Backoff::shortened_with`] may cut: a doubled ceiling shortened by at most
/// one half is never below the previous ceiling, so periods never shrink before the cap.
pub const MAX_SHORTENING: f64 = 0.5;

/// A capped exponential schedule: the n-th wait is at most `min(cap, base * 2^(n-1))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first wait.
    pub base: Duration,
    /// Largest ceiling, whatever the attempt.
    pub cap: Duration,
}

impl Backoff {
    /// A backoff starting at `base` and never above `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The ceiling of wait `n` (1-based; 0 counts as 1): `min(cap, base * 2^(n-1))`, without
    /// overflow whatever `n`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }

    /// The full-jitter wait `n` for a uniform sample `unit` in `[0, 1]` (outside values count as
    /// the nearest bound, NaN as 0).
    pub fn delay_at(&self, n: u32, unit: f64) -> Duration {
        self.ceiling(n).mul_f64(unit_interval(unit))
    }

    /// A full-jitter wait `n`: uniform in `[0, ceiling(n)]`, drawn from `rng`.
    pub fn delay_with<R: Rng + ?Sized>(&self, n: u32, rng: &mut R) -> Duration {
        self.delay_at(n, rng.random_range(0.0..=1.0))
    }

    /// A full-jitter wait `n` drawn from the thread RNG.
    pub fn delay(&self, n: u32) -> Duration {
        self.delay_with(n, &mut rand::rng())
    }

    /// Wait `n` shortened by a random fraction of at most `jitter`:
    /// `ceiling(n) * (1 - jitter * u)`, `u` uniform in `[0, 1)` drawn from `rng`. `jitter` must
    /// be in `0.0..=`[`MAX_SHORTENING`] (configurations check it, see
    /// [`crate::config::ConfigError`]); outside values count as the nearest bound.
    pub fn shortened_with<R: Rng + ?Sized>(&self, n: u32, jitter: f64, rng: &mut R) -> Duration {
        let cut = unit_interval(jitter).min(MAX_SHORTENING) * rng.random::<f64>();
        self.ceiling(n).mul_f64(1.0 - cut)
    }
}

fn unit_interval(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 1.0)
    }
}

/// The source of jitter a layer keeps: the thread RNG ([`JitterRng::thread`], the default), or
/// one seeded generator shared by every clone, so a test can replay the same waits.
#[derive(Clone, Default)]
pub struct JitterRng {
    seeded: Option<Arc<Mutex<StdRng>>>,
}

impl JitterRng {
    /// Draws from the thread RNG.
    pub fn thread() -> Self {
        Self::default()
    }

    /// A generator seeded from `rng` (as tower's `Balance::from_rng`), shared by every clone.
    pub fn from_rng<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut seed = <StdRng as SeedableRng>::Seed::default();
        rng.fill_bytes(&mut seed);
        Self::seeded(StdRng::from_seed(seed))
    }

    /// A generator seeded with `seed`, shared by every clone.
    pub fn seed_from_u64(seed: u64) -> Self {
        Self::seeded(StdRng::seed_from_u64(seed))
    }

    fn seeded(rng: StdRng) -> Self {
        Self {
            seeded: Some(Arc::new(Mutex::new(rng))),
        }
    }

    fn with<T>(&self, draw: impl FnOnce(&mut dyn RngCore) -> T) -> T {
        match &self.seeded {
            // A panic while drawing leaves the generator usable: any state is a valid state.
            Some(rng) => draw(&mut *rng.lock().unwrap_or_else(|e| e.into_inner())),
            None => draw(&mut rand::rng()),
        }
    }
}

impl RngCore for JitterRng {
    fn next_u32(&mut self) -> u32 {
        self.with(|rng| rng.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        self.with(|rng| rng.next_u64())
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.with(|rng| rng.fill_bytes(dst));
    }
}

impl fmt::Debug for JitterRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.seeded {
            Some(_) => "JitterRng::Seeded",
            None => "JitterRng::Thread",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Draws the largest sample every time.
    struct AlwaysMax;

    impl RngCore for AlwaysMax {
        fn next_u32(&mut self) -> u32 {
            u32::MAX
        }
        fn next_u64(&mut self) -> u64 {
            u64::MAX
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.fill(u8::MAX);
        }
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap_without_overflow() {
        let backoff = Backoff::new(MS(100), Duration::from_secs(1));
        assert_eq!(backoff.ceiling(0), MS(100));
        assert_eq!(backoff.ceiling(1), MS(100));
        assert_eq!(backoff.ceiling(2), MS(200));
        assert_eq!(backoff.ceiling(4), MS(800));
        assert_eq!(backoff.ceiling(5), Duration::from_secs(1));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(1));
        let huge = Backoff::new(Duration::MAX / 2, Duration::MAX);
        assert_eq!(huge.ceiling(40), Duration::MAX);
    }

    #[test]
    fn full_jitter_is_deterministic_with_a_seed_and_spans_the_range() {
        let backoff = Backoff::new(MS(100), MS(150));
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..=200)
                .map(|n| backoff.delay_with(n % 4 + 1, &mut rng))
                .collect::<Vec<_>>()
        };
        let waits = draw(42);
        assert_eq!(waits, draw(42), "same seed, same waits");
        assert_ne!(waits, draw(43), "another seed, other waits");
        assert!(waits.iter().all(|w| *w <= MS(150)));
        assert!(waits.iter().any(|w| *w < MS(15)), "reaches near zero");
        assert!(waits.iter().any(|w| *w > MS(135)), "reaches near the cap");
    }

    #[test]
    fn shortened_waits_stay_within_the_jitter_and_keep_growing() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut rng = StdRng::seed_from_u64(7);
        let periods: Vec<_> = (1..=8)
            .map(|n| backoff.shortened_with(n, 0.2, &mut rng))
            .collect();
        for (i, p) in periods.iter().enumerate() {
            let nominal = backoff.ceiling(i as u32 + 1);
            assert!(*p <= nominal && *p >= nominal.mul_f64(0.8), "{i}: {p:?}");
        }
        assert!(periods.windows(2).take(4).all(|w| w[1] > w[0]));
        // Even the largest shortening keeps a doubled period no shorter than the previous one.
        let cut = backoff.shortened_with(2, MAX_SHORTENING, &mut AlwaysMax);
        assert!(cut >= backoff.ceiling(1), "{cut:?}");
        assert!(cut < backoff.ceiling(2), "{cut:?}");
    }

    #[test]
    fn a_seeded_source_is_shared_by_its_clones() {
        let backoff = Backoff::new(MS(100), MS(100));
        let mut a = JitterRng::seed_from_u64(1);
        let mut b = a.clone();
        let mut reference = StdRng::seed_from_u64(1);
        let first = backoff.delay_with(1, &mut reference);
        let second = backoff.delay_with(1, &mut reference);
        assert_eq!(backoff.delay_with(1, &mut a), first);
        assert_eq!(
            backoff.delay_with(1, &mut b),
            second,
            "b continues a's sequence"
        );
        let mut from = JitterRng::from_rng(&mut StdRng::seed_from_u64(9));
        let mut again = JitterRng::from_rng(&mut StdRng::seed_from_u64(9));
        assert_eq!(from.next_u64(), again.next_u64());
        assert!(format!("{:?}", JitterRng::thread()).contains("Thread"));
    }
}
