//! Samples a running drill every 250 ms into the report's time series
//! ([`report::Sample`](crate::report::Sample)).
//!
//! Two halves. [`LiveTally`] is what the load driver writes to: one short lock per answered call
//! (the outcome's cumulative count and the latency, kept until the next sample takes the
//! window's quantiles). [`spawn`] starts the sampler proper: a poller per source (each
//! approval-svc `/metrics` page, the products' stock, challenges by state, dead letters) keeps
//! the latest value it read, and a ticker assembles a sample from the latest values every
//! interval. The ticker never waits for a source, so a source that hangs (a drill black-holes
//! and kills services on purpose) makes its own values stale, not the whole series sparse.
//!
//! A failed or timed-out read keeps the previous value and the poller tries again next interval;
//! nothing a source does ends the sampler. Counters from `/metrics` restart at zero with their
//! process; the sampler folds each restart in (as Prometheus's `rate` does), so the report's
//! counters only grow.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lab_proto::approval::v1 as approval_pb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1 as order_pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::transport::Channel;

use crate::metrics::{self, Metrics};
use crate::report::Sample;
pub use crate::tally::{LiveTally, WindowTally};

/// How long one read of one source may take before it counts as failed.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most pages of `ListChallenges` one count reads (500 each): a bound on what the sampler asks
/// of a service under test. Past it the counts cover the oldest 50 000 challenges only.
const MAX_CHALLENGE_PAGES: usize = 100;
/// The shortest interval the sampler accepts (`tokio::time::interval` panics on zero).
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Where the sampler reads from.
#[derive(Debug)]
pub struct SampleSources {
    /// `http://HOST:PORT/metrics` of each approval-svc instance (the path is always `/metrics`).
    pub approval_metrics: Vec<String>,
    /// An approval-svc client, for challenges by state and dead letters.
    pub approval: ApprovalServiceClient<Channel>,
    /// An order-svc client, for the products' stock.
    pub order: OrderServiceClient<Channel>,
    /// The drill's products, whose stock is summed.
    pub product_ids: Vec<String>,
    /// The load driver's tally: outcomes and latencies.
    pub tally: LiveTally,
}

/// A running sampler; [`finish`](Self::finish) stops it.
#[derive(Debug)]
pub struct SamplerHandle {
    tasks: JoinSet<()>,
    latest: Arc<Mutex<Latest>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tally: LiveTally,
    origin: Instant,
}

impl SamplerHandle {
    /// Stops every poller, takes one last sample (so the series reaches the end of the drill)
    /// and returns all samples in time order.
    pub async fn finish(mut self) -> Vec<Sample> {
        self.tasks.shutdown().await;
        let last = compose(&lock(&self.latest), &self.tally, self.origin);
        let mut samples = std::mem::take(&mut *lock(&self.samples));
        samples.push(last);
        samples
    }
}

/// Samples every `interval` (250 ms) until [`SamplerHandle::finish`], with `t_s` counted from
/// now. A failed read keeps the previous value and never ends the sampler.
pub fn spawn(sources: SampleSources, interval: Duration) -> SamplerHandle {
    spawn_since(sources, interval, std::time::Instant::now())
}

/// [`spawn`], with `t_s` counted from `started` (the drill's start, so samples and fault
/// windows share one clock even when the sampler starts a little later).
pub fn spawn_since(
    sources: SampleSources,
    interval: Duration,
    started: std::time::Instant,
) -> SamplerHandle {
    let interval = interval.max(MIN_INTERVAL);
    let origin = Instant::from_std(started);
    let latest = Arc::new(Mutex::new(Latest {
        instances: vec![InstanceCounts::default(); sources.approval_metrics.len()],
        ..Latest::default()
    }));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();

    for (index, url) in sources.approval_metrics.iter().enumerate() {
        tasks.spawn(poll_metrics(url.clone(), index, latest.clone(), interval));
    }
    tasks.spawn(poll_stock(
        sources.order,
        sources.product_ids,
        latest.clone(),
        interval,
    ));
    tasks.spawn(poll_challenges(
        sources.approval.clone(),
        latest.clone(),
        interval,
    ));
    tasks.spawn(poll_dead_letters(
        sources.approval,
        latest.clone(),
        interval,
    ));
    {
        let (latest, samples, tally) = (latest.clone(), samples.clone(), sources.tally.clone());
        tasks.spawn(async move {
            let mut ticks = ticker(interval);
            loop {
                ticks.tick().await;
                let sample = compose(&lock(&latest), &tally, origin);
                lock(&samples).push(sample);
            }
        });
    }
    SamplerHandle {
        tasks,
        latest,
        samples,
        tally: sources.tally,
        origin,
    }
}

/// The latest value read from each source.
#[derive(Debug, Default)]
struct Latest {
    /// Per approval-svc instance, in `approval_metrics` order.
    instances: Vec<InstanceCounts>,
    stock: Option<i64>,
    challenges_by_state: BTreeMap<String, u64>,
    dead_letters: u64,
}

/// One approval-svc instance's counters, restarts folded in, and its breaker state.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct InstanceCounts {
    calls: u64,
    attempts: u64,
    retries: u64,
    breaker_state: u8,
}

fn compose(latest: &Latest, tally: &LiveTally, origin: Instant) -> Sample {
    let window = tally.take_window();
    let sum = |field: fn(&InstanceCounts) -> u64| latest.instances.iter().map(field).sum();
    Sample {
        t_s: origin.elapsed().as_secs_f64(),
        outcomes: window.outcomes,
        latency_p50_ms: window.latency_p50_ms,
        latency_p99_ms: window.latency_p99_ms,
        order_calls: sum(|i| i.calls),
        attempts: sum(|i| i.attempts),
        retries: sum(|i| i.retries),
        breaker_state: latest
            .instances
            .iter()
            .map(|i| i.breaker_state)
            .max()
            .unwrap_or(0),
        stock: latest.stock,
        challenges_by_state: latest.challenges_by_state.clone(),
        dead_letters: latest.dead_letters,
    }
}

/// A counter across restarts of its process: a value below the previous one means the process
/// started again from zero, so what it had counted before is kept as an offset.
#[derive(Debug, Default, Clone, Copy)]
struct Monotonic {
    offset: u64,
    last: u64,
}

impl Monotonic {
    fn observe(&mut self, raw: u64) -> u64 {
        if raw < self.last {
            self.offset += self.last;
        }
        self.last = raw;
        self.offset + raw
    }
}

async fn poll_metrics(url: String, index: usize, latest: Arc<Mutex<Latest>>, interval: Duration) {
    let (mut calls, mut attempts, mut retries) = <(Monotonic, Monotonic, Monotonic)>::default();
    let mut ticks = ticker(interval);
    loop {
        ticks.tick().await;
        let Some(metrics) = scrape(&url).await else {
            continue;
        };
        let counts = metrics.resilience();
        let breaker = metrics
            .samples
            .iter()
            .filter(|s| s.name == "resilience_breaker_state")
            .map(|s| s.value)
            .fold(0.0, f64::max);
        lock(&latest).instances[index] = InstanceCounts {
            calls: calls.observe(counts.calls),
            attempts: attempts.observe(counts.attempts),
            retries: retries.observe(counts.retries),
            breaker_state: breaker.clamp(0.0, 3.0) as u8,
        };
    }
}

/// Scrapes one `/metrics` URL; `None` on any failure (unreachable, refused, slow, not 200).
async fn scrape(url: &str) -> Option<Metrics> {
    let authority = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .split('/')
        .next()?;
    let addr: SocketAddr = match authority.parse() {
        Ok(addr) => addr,
        Err(_) => tokio::net::lookup_host(authority).await.ok()?.next()?,
    };
    let page = tokio::time::timeout(SOURCE_TIMEOUT, metrics::fetch(addr))
        .await
        .ok()?
        .ok()?;
    Some(Metrics::parse(&page))
}

async fn poll_stock(
    order: OrderServiceClient<Channel>,
    product_ids: Vec<String>,
    latest: Arc<Mutex<Latest>>,
    interval: Duration,
) {
    if product_ids.is_empty() {
        return;
    }
    let mut stock: Vec<Option<i64>> = vec![None; product_ids.len()];
    let mut ticks = ticker(interval);
    loop {
        ticks.tick().await;
        let reads = product_ids.iter().map(|id| {
            let mut order = order.clone();
            let request = order_pb::GetProductRequest {
                product_id: id.clone(),
            };
            async move {
                let answer = tokio::time::timeout(SOURCE_TIMEOUT, order.get_product(request));
                let product = answer.await.ok()?.ok()?.into_inner().product?;
                Some(product.stock)
            }
        });
        for (kept, read) in stock.iter_mut().zip(futures::future::join_all(reads).await) {
            if read.is_some() {
                *kept = read;
            }
        }
        // A sum over only some products would jump when the others first answer: wait for all.
        let total: Option<i64> = stock.iter().copied().sum();
        if total.is_some() {
            lock(&latest).stock = total;
        }
    }
}

async fn poll_challenges(
    approval: ApprovalServiceClient<Channel>,
    latest: Arc<Mutex<Latest>>,
    interval: Duration,
) {
    let mut ticks = ticker(interval);
    loop {
        ticks.tick().await;
        let began = Instant::now();
        if let Some(counts) = count_challenges(approval.clone()).await {
            lock(&latest).challenges_by_state = counts;
        }
        // Counting thousands of challenges is real work for the service under test: rest as
        // long as the count took, so the sampler reads at most half the time.
        tokio::time::sleep(began.elapsed()).await;
    }
}

/// Challenges by state, paging through `ListChallenges` (at most [`MAX_CHALLENGE_PAGES`]);
/// `None` when a page fails, so a half-read count never replaces a whole one.
async fn count_challenges(
    mut approval: ApprovalServiceClient<Channel>,
) -> Option<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    let mut page_token = String::new();
    for _ in 0..MAX_CHALLENGE_PAGES {
        let request = approval_pb::ListChallengesRequest {
            status: approval_pb::ChallengeStatus::Unspecified as i32,
            page_size: 500,
            page_token,
        };
        let page = tokio::time::timeout(SOURCE_TIMEOUT, approval.list_challenges(request))
            .await
            .ok()?
            .ok()?
            .into_inner();
        for challenge in &page.challenges {
            *counts.entry(state_name(challenge.status)).or_default() += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Some(counts)
}

/// `PENDING`, `APPROVING`, … (the enum name without its prefix).
fn state_name(status: i32) -> String {
    approval_pb::ChallengeStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("CHALLENGE_STATUS_")
                .to_owned()
        })
        .unwrap_or_else(|_| format!("STATUS_{status}"))
}

async fn poll_dead_letters(
    mut approval: ApprovalServiceClient<Channel>,
    latest: Arc<Mutex<Latest>>,
    interval: Duration,
) {
    let mut ticks = ticker(interval);
    loop {
        ticks.tick().await;
        let read = tokio::time::timeout(SOURCE_TIMEOUT, crate::load::dead_letters(&mut approval));
        if let Ok(Ok(ids)) = read.await {
            lock(&latest).dead_letters = ids.len() as u64;
        }
    }
}

/// An interval whose missed ticks are not made up in a burst: after a slow read the next one
/// waits a whole interval.
fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The sampler's state is plain values: a panicked writer leaves nothing half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_counter_keeps_what_it_had_counted() {
        let mut counter = Monotonic::default();
        assert_eq!(counter.observe(10), 10);
        assert_eq!(counter.observe(25), 25);
        assert_eq!(counter.observe(3), 28);
        assert_eq!(counter.observe(5), 30);
    }

    #[test]
    fn state_names_lose_their_prefix() {
        assert_eq!(
            state_name(approval_pb::ChallengeStatus::ApproveFailed as i32),
            "APPROVE_FAILED"
        );
        assert_eq!(state_name(99), "STATUS_99");
    }
}
