//! What a drill's load records per answered call, for the sampler to read: cumulative answers
//! by outcome and the latencies of the current window. A module of its own so that the load
//! driver (which records) and the sampler (which reads) do not depend on each other.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Most latencies one window keeps; past it answers still count but their latency is dropped,
/// so a tally nobody drains cannot grow without bound.
const MAX_WINDOW_LATENCIES: usize = 200_000;

/// What the drill's load driver records per answered call: cheap and shared (`Clone` hands out
/// the same tally), so every load task records into one.
#[derive(Clone, Default, Debug)]
pub struct LiveTally {
    inner: Arc<Mutex<Window>>,
}

#[derive(Default, Debug)]
struct Window {
    /// Cumulative answers by outcome label.
    outcomes: BTreeMap<String, u64>,
    /// Latencies (ms) of the answers since the last [`LiveTally::take_window`].
    latencies_ms: Vec<f64>,
}

/// What a tally held at the end of one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowTally {
    /// Cumulative answers by outcome label.
    pub outcomes: BTreeMap<String, u64>,
    /// Median latency of the window's answers, in ms; `None` when nothing was answered.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency of the window's answers, in ms.
    pub latency_p99_ms: Option<f64>,
}

impl LiveTally {
    /// Records one answered call: its outcome label (`load::outcome_label`) and latency.
    pub fn record(&self, label: &str, latency: Duration) {
        let mut window = self.lock();
        match window.outcomes.get_mut(label) {
            Some(count) => *count += 1,
            None => {
                window.outcomes.insert(label.to_owned(), 1);
            }
        }
        if window.latencies_ms.len() < MAX_WINDOW_LATENCIES {
            window.latencies_ms.push(latency.as_secs_f64() * 1000.0);
        }
    }

    /// The cumulative outcome counts so far.
    pub fn outcomes(&self) -> BTreeMap<String, u64> {
        self.lock().outcomes.clone()
    }

    /// The cumulative outcome counts and the latency quantiles of the answers since the previous
    /// call; starts a new window.
    pub fn take_window(&self) -> WindowTally {
        let (outcomes, mut latencies) = {
            let mut window = self.lock();
            (
                window.outcomes.clone(),
                std::mem::take(&mut window.latencies_ms),
            )
        };
        // Sorting outside the lock: recorders never wait for the sampler's arithmetic.
        latencies.sort_by(f64::total_cmp);
        WindowTally {
            outcomes,
            latency_p50_ms: quantile(&latencies, 0.50),
            latency_p99_ms: quantile(&latencies, 0.99),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        // A recorder that panicked mid-update left at worst one count behind: keep counting.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Nearest-rank quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_counts_outcomes_and_window_quantiles() {
        let tally = LiveTally::default();
        let recorder = tally.clone();
        for ms in 1..=100 {
            recorder.record(
                if ms % 10 == 0 {
                    "error/UNAVAILABLE"
                } else {
                    "APPROVED"
                },
                Duration::from_millis(ms),
            );
        }
        let window = tally.take_window();
        assert_eq!(window.outcomes["APPROVED"], 90);
        assert_eq!(window.outcomes["error/UNAVAILABLE"], 10);
        assert_eq!(window.latency_p50_ms, Some(50.0));
        assert_eq!(window.latency_p99_ms, Some(99.0));
        // The next window has no answers yet but keeps the cumulative counts.
        let empty = tally.take_window();
        assert_eq!((empty.latency_p50_ms, empty.latency_p99_ms), (None, None));
        assert_eq!(empty.outcomes["APPROVED"], 90);
    }

    #[test]
    fn quantiles_of_tiny_windows() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[1.0, 2.0], 0.5), Some(1.0));
        assert_eq!(quantile(&[1.0, 2.0], 0.99), Some(2.0));
    }
}
