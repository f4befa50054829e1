//! The load driver every benchmark phase shares: a fixed number of calls spread over a fixed
//! number of concurrent callers and connections, bounded in count and in time, each call timed
//! and its outcome tallied by label.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lab_drill::load::Outcomes;
use tokio::sync::Barrier;
use tokio::time::Instant;

/// Label of a call cut short because the phase's time ran out.
pub(super) const CUT_BY_MAX_DURATION: &str = "error/CUT_BY_MAX_DURATION";

/// How much load one phase applies.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    /// Calls in total; the phase ends after them.
    pub calls: usize,
    /// Calls in flight at once (callers).
    pub concurrency: usize,
    /// The phase ends after this long, whatever is left (a call still running is cut).
    pub max_duration: Duration,
}

/// What one phase's calls did.
#[derive(Debug, Default)]
pub(super) struct Load {
    /// From the first call's start to the last call's end.
    pub elapsed: Duration,
    /// Every call's latency, sorted ascending.
    pub latencies: Vec<Duration>,
    /// The same latencies by outcome label, each sorted ascending: a phase whose answers take
    /// different paths (an order sold against a refusal from memory) shows each path's own
    /// spread.
    pub latencies_by_outcome: BTreeMap<String, Vec<Duration>>,
    /// Outcomes by label (`CREATED`, `OUT_OF_STOCK`, `error/UNAVAILABLE`, …).
    pub outcomes: Outcomes,
    /// True when the phase's time ran out before every call was made.
    pub cut_short: bool,
}

impl Load {
    /// Calls made (answered or cut).
    pub(super) fn calls(&self) -> usize {
        self.latencies.len()
    }

    /// One caller's call: its latency under its outcome label; a call cut by the phase's time
    /// marks the phase cut short. Only `latencies_by_outcome` is kept per caller; [`drive`]
    /// derives the phase's counts and its whole spread from it once ([`Load::settle`]).
    fn record(&mut self, label: String, latency: Duration) {
        self.cut_short |= label == CUT_BY_MAX_DURATION;
        self.latencies_by_outcome
            .entry(label)
            .or_default()
            .push(latency);
    }

    /// Adds another caller's calls.
    fn merge(&mut self, other: Load) {
        self.cut_short |= other.cut_short;
        for (label, latencies) in other.latencies_by_outcome {
            self.latencies_by_outcome
                .entry(label)
                .or_default()
                .extend(latencies);
        }
    }

    /// Sorts each outcome's latencies and derives the outcome counts and the phase's sorted
    /// latencies from them.
    fn settle(&mut self) {
        for (label, latencies) in &mut self.latencies_by_outcome {
            latencies.sort_unstable();
            self.outcomes.add(label, latencies.len() as u64);
            self.latencies.extend_from_slice(latencies);
        }
        self.latencies.sort_unstable();
    }

    /// Calls per second over the phase.
    pub(super) fn calls_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.calls() as f64 / seconds
        } else {
            0.0
        }
    }

    /// The latency at quantile `q` (0.0–1.0), nearest rank.
    pub(super) fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
}

/// The value at quantile `q` (0.0–1.0) of `sorted` (ascending), nearest rank; zero when empty.
pub(super) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A progress line on stderr (drawn only when stderr is a terminal, so logs and tests stay
/// clean).
pub(super) fn progress(label: &str, calls: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(calls as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>28} [{bar:30}] {pos:>6}/{len:6} {per_sec:>12} {elapsed:>4}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// Makes `shape.calls` calls with `shape.concurrency` callers, caller `i` using
/// `clients[i % clients.len()]` (one client per connection); `call(client, n)` makes call `n`
/// (0-based, each `n` exactly once) and returns its outcome label.
pub(super) async fn drive<C, F, Fut>(clients: &[C], shape: Shape, label: &str, call: F) -> Load
where
    C: Clone + Send + 'static,
    F: Fn(C, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    assert!(!clients.is_empty() && shape.concurrency > 0);
    let bar = progress(label, shape.calls);
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    // Every caller starts at once, so the first calls do not run against an idle server.
    let barrier = Arc::new(Barrier::new(shape.concurrency + 1));
    let mut callers = Vec::with_capacity(shape.concurrency);
    for caller in 0..shape.concurrency {
        let client = clients[caller % clients.len()].clone();
        let (call, next, barrier, bar) = (call.clone(), next.clone(), barrier.clone(), bar.clone());
        callers.push(tokio::spawn(async move {
            let mut load = Load::default();
            let deadline = barrier_then_deadline(&barrier, shape.max_duration).await;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= shape.calls {
                    break;
                }
                if Instant::now() >= deadline {
                    load.cut_short = true;
                    break;
                }
                let sent = Instant::now();
                let outcome = tokio::time::timeout_at(deadline, call(client.clone(), n)).await;
                let latency = sent.elapsed();
                bar.inc(1);
                let label = outcome.unwrap_or_else(|_| CUT_BY_MAX_DURATION.to_owned());
                load.record(label, latency);
                if load.cut_short {
                    break;
                }
            }
            load
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut total = Load::default();
    for caller in callers {
        // A caller only panics on a bug in the driver itself; its calls are then missing
        // from the figures, which the call count shows.
        if let Ok(load) = caller.await {
            total.merge(load);
        }
    }
    total.elapsed = started.elapsed();
    total.settle();
    bar.finish_and_clear();
    total
}

async fn barrier_then_deadline(barrier: &Barrier, max_duration: Duration) -> Instant {
    barrier.wait().await;
    Instant::now() + max_duration
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn makes_every_call_once_and_tallies_outcomes() {
        let shape = Shape {
            calls: 100,
            concurrency: 7,
            max_duration: Duration::from_secs(10),
        };
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let load = drive(&[(), ()], shape, "test", move |(), n| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(n);
                if n % 2 == 0 { "even" } else { "odd" }.to_owned()
            }
        })
        .await;
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(load.calls(), 100);
        assert_eq!(load.outcomes.get("even"), 50);
        assert_eq!(load.outcomes.get("odd"), 50);
        assert!(!load.cut_short);
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_each_outcomes_latencies_apart() {
        let shape = Shape {
            calls: 40,
            concurrency: 4,
            max_duration: Duration::from_secs(60),
        };
        // Sold calls take 30 ms, refusals 2 ms: the phase's spread mixes two paths.
        let load = drive(&[()], shape, "test", |(), n| async move {
            if n % 4 == 0 {
                tokio::time::sleep(Duration::from_millis(30)).await;
                "CREATED".to_owned()
            } else {
                tokio::time::sleep(Duration::from_millis(2)).await;
                "OUT_OF_STOCK".to_owned()
            }
        })
        .await;
        let created = &load.latencies_by_outcome["CREATED"];
        let refused = &load.latencies_by_outcome["OUT_OF_STOCK"];
        assert_eq!((created.len(), refused.len()), (10, 30));
        assert!(created.is_sorted() && refused.is_sorted());
        assert_eq!(quantile(created, 0.5), Duration::from_millis(30));
        assert_eq!(quantile(refused, 0.99), Duration::from_millis(2));
        assert_eq!(load.quantile(1.0), Duration::from_millis(30));
    }

    #[tokio::test]
    async fn stops_at_the_max_duration() {
        let shape = Shape {
            calls: 1_000_000,
            concurrency: 4,
            max_duration: Duration::from_millis(200),
        };
        let started = std::time::Instant::now();
        let load = drive(&[()], shape, "test", |(), _| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "never".to_owned()
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(load.cut_short);
        assert_eq!(load.outcomes.get(CUT_BY_MAX_DURATION), 4);
        assert_eq!(load.latencies_by_outcome[CUT_BY_MAX_DURATION].len(), 4);
    }
}
