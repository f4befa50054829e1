//! The drill engine: one way to run a fault scenario, for `lab drill` and for every scenario of
//! the test suite alike.
//!
//! A [`Scenario`] declares the cluster ([`crate::cluster::ClusterOptions`]: instances,
//! environment, proxy), the [`Workload`] (products, challenges, how approvals are paced), a
//! fault timeline of [`Step`]s (at a time, after a number of answers, or after the load: kill
//! -9, SIGTERM, restart an instance; a proxy fault for a while; terminate PostgreSQL
//! connections; a snapshot of counters and invariants; a scenario's own [`Hook`]), how the
//! system is let [`Settle`] and what is [`Expectations`]. [`run`] then
//!
//! 1. starts the cluster and creates the products and challenges,
//! 2. starts the sampler (every 250 ms, when asked) and a progress line (when asked),
//! 3. drives the approvals while the timeline applies its faults on time,
//! 4. re-sends what failed (when asked), lets the system settle and checks I1–I6,
//! 5. returns a [`DrillOutcome`]: every figure a scenario asserts on, its summary line and the
//!    [`DrillReport`](crate::report::DrillReport) `lab drill` writes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lab_drill::engine::DrillError> {
//! use std::time::Duration;
//! use lab_drill::engine::{Action, At, Pacing, RunOptions, Scenario, Service, Workload, run};
//!
//! let scenario = Scenario::new("kill-order-svc", "kill -9 order-svc", 7)
//!     .workload(Workload::new(2_000, 1_800, Pacing::Paced { per_second: 400.0, max_in_flight: 64 }))
//!     .at(At::Answers(600), Action::Kill(Service::Order, 0))
//!     .at(At::After(Duration::from_secs(1)), Action::Restart(Service::Order, 0));
//! let outcome = run(&scenario, &RunOptions::default()).await?;
//! assert_eq!(outcome.exit_code(), 0, "{}", outcome.report);
//! # Ok(()) }
//! ```

mod drill;
mod outcome;
mod progress;
mod scenario;
mod timeline;

use std::time::{Duration, SystemTime};

use lab_proto::order::v1 as order_pb;
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterError};
use crate::load::{self, approve_all, create_product, submit_challenges};
use crate::sampler::{self, SampleSources};

pub use self::drill::{Drill, Snapshot, accepted_options};
pub use self::outcome::{DrillOutcome, Expectation};
pub use self::scenario::{
    Action, At, Databases, Expectations, Hook, Pacing, Product, Scenario, Service, Settle, Step,
    Workload,
};

/// How the sampler samples (the report's time series).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// How to run a drill (as opposed to what it is).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Sample the system every so often for the report's plots (`None`: no time series; the
    /// scenario suite leaves it off so that its timing stays what it measured).
    pub sample_every: Option<Duration>,
    /// Draw a progress line on stderr (a bar on a terminal, a plain line every 2 s otherwise).
    pub progress: bool,
    /// Settings shown on the report besides the scenario's own (e.g. the command line).
    pub config: Vec<(String, String)>,
}

/// Why a drill could not run (a broken invariant is an outcome, not an error).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The services did not start.
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// Process control failed (kill, SIGTERM, restart).
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// A setup or read RPC failed.
    #[error("RPC failed: {0}")]
    Rpc(#[from] tonic::Status),
    /// The checker could not read the services.
    #[error("check: {0}")]
    Check(#[from] crate::check::CheckError),
    /// A database operation of the drill failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A timeline step's moment never came.
    #[error("timeline: {0}")]
    Trigger(String),
    /// An action could not be applied, or a scenario's hook failed.
    #[error("action: {0}")]
    Action(String),
}

/// Runs `scenario` from start to verdict. See the module docs.
pub async fn run(scenario: &Scenario, options: &RunOptions) -> Result<DrillOutcome, DrillError> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let cluster = Cluster::start(scenario.cluster.clone()).await?;
    let mut drill = Drill::new(cluster);
    prepare(&mut drill, scenario).await?;
    // Fault windows count from here: a fault applied before the load starts at zero.
    drill.load_started = Instant::now();
    for action in &scenario.before_load {
        drill.apply(action).await?;
    }

    let sampler = options.sample_every.map(|every| {
        sampler::spawn(
            SampleSources {
                approval_metrics: drill
                    .cluster
                    .approvals()
                    .filter_map(|p| p.metrics_addr())
                    .map(|addr| format!("http://{addr}/metrics"))
                    .collect(),
                approval: drill.approval(),
                order: drill.order(),
                product_ids: drill
                    .products
                    .iter()
                    .map(|p| p.product_id.clone())
                    .collect(),
                tally: drill.watch.tally.clone().unwrap_or_default(),
            },
            every,
        )
    });
    let calls = (scenario.workload.challenges * scenario.workload.clicks_per_challenge) as u64;
    let progress = options.progress.then(|| {
        progress::Progress::start(
            &scenario.name,
            calls,
            drill.watch.answered.clone(),
            drill.status.clone(),
        )
    });
    let driven = timeline::drive(&mut drill, scenario).await;
    if let Some(progress) = &progress {
        progress.set_status("settling");
    }
    let settled = match driven {
        Ok(()) => settle(&mut drill, scenario).await,
        Err(error) => Err(error),
    };
    if let Some(progress) = progress {
        progress.finish();
    }
    let samples = match sampler {
        Some(sampler) => sampler.finish().await,
        None => Vec::new(),
    };
    let settled = settled?;
    Ok(outcome::build(
        scenario,
        options,
        drill,
        settled,
        samples,
        started_at,
        started.elapsed(),
    ))
}

/// Creates the products and submits the challenges (to the products in turn).
async fn prepare(drill: &mut Drill, scenario: &Scenario) -> Result<(), DrillError> {
    let workload = &scenario.workload;
    let mut order = drill.order();
    for product in &workload.products {
        drill
            .products
            .push(create_product(&mut order, &product.name, product.stock).await?);
    }
    let approval = drill.approval();
    let count = drill.products.len().max(1);
    for (n, product) in drill.products.clone().iter().enumerate() {
        let share = workload.challenges / count + usize::from(n < workload.challenges % count);
        let ids = submit_challenges(
            &approval,
            &product.product_id,
            share,
            workload.quantity,
            workload.submit_concurrency,
            scenario.seed + n as u64,
        )
        .await?;
        drill.challenge_ids.extend(ids);
    }
    Ok(())
}

/// What the settling phase found.
#[derive(Debug)]
pub(crate) struct Settled {
    resent: Option<load::ApproveRun>,
    accepted: Vec<String>,
    report: crate::check::Report,
    dead_letters: Vec<String>,
    checker_healed: Option<u64>,
    resilience: crate::metrics::ResilienceCounts,
    proxy: Option<crate::proxy::ProxyStats>,
    products: Vec<order_pb::Product>,
    rolled_forward: usize,
}

/// Re-sends what failed (when asked), pauses, waits for the system to settle with no
/// operator's help (nothing requeued), and reads the end state.
async fn settle(drill: &mut Drill, scenario: &Scenario) -> Result<Settled, DrillError> {
    let approval = drill.approval();
    let mut accepted = drill.accepted_so_far.clone();
    let resent = match scenario.settle.resend_errored {
        Some(concurrency) => {
            let second = approve_all(
                &approval,
                &drill.run.errored,
                concurrency,
                Duration::from_secs(10),
                Some(drill.watch.clone()),
            )
            .await;
            drill.requests += second.latencies.len() as u64;
            accepted.extend(second.accepted.iter().cloned());
            Some(second)
        }
        None => None,
    };
    tokio::time::sleep(scenario.settle.pause).await;
    let report = drill
        .cluster
        .check_settled(&accepted_options(&accepted), scenario.settle.timeout)
        .await?;
    if !report.is_settled() {
        eprintln!("{report}");
    }
    let dead_letters = load::dead_letters(&mut drill.approval()).await?;
    let checker_healed = drill.cluster.checker_healed().await;
    let resilience = drill.cluster.approval_counts().await;
    let proxy = drill.cluster.proxy.as_ref().map(|p| p.handle().stats());
    let mut order = drill.order();
    let mut products = Vec::with_capacity(drill.products.len());
    for product in &drill.products {
        products.push(load::product(&mut order, &product.product_id).await?);
    }
    // A challenge the completer re-drove carries one more attempt than its single approval.
    let rolled_forward = load::list_challenges(&mut drill.approval())
        .await?
        .iter()
        .filter(|c| c.attempts >= 2)
        .count();
    Ok(Settled {
        resent,
        accepted,
        report,
        dead_letters,
        checker_healed,
        resilience,
        proxy,
        products,
        rolled_forward,
    })
}
