//! Issue 10's benchmark (ignored by default; run one test at a time with
//! `cargo test -p lab-scenarios --test bench_order_instances -- --ignored --test-threads 1
//! --nocapture`): an unpaced flood of approvals through one approval-svc by 64 concurrent
//! callers, each test bounded by its approval count and a 10 s deadline per call.
//!
//! - `flood_one_order_instance` / `flood_three_order_instances`: approvals/s through one vs
//!   three order-svc instances (stock for every approval, so each one creates an order).
//! - `flood_kill_9_one_of_three` / `flood_sigterm_one_of_three`: the report — 6 000
//!   approvals (stock 3 000) and one instance of three killed (`kill -9`) or terminated
//!   (SIGTERM) after 1 s: how many approvals fail, by reason.
//!
//! Each prints a SUMMARY line; none asserts a figure (s12 and s13 are the acceptance tests).

mod common;

use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{Summary, approve_all, create_product, submit_challenges};
use tokio::time::Instant;

const CALLERS: usize = 64;
const DEADLINE: Duration = Duration::from_secs(10);
const STOP_ONE_AFTER: Duration = Duration::from_secs(1);

/// What happens to order-svc instance 1 during the flood.
#[derive(Debug, Clone, Copy)]
enum Disruption {
    None,
    Kill9,
    Sigterm,
}

async fn flood(
    name: &str,
    order_instances: usize,
    approvals: usize,
    stock: i64,
    disruption: Disruption,
) {
    let started = Instant::now();
    let mut cluster = common::start(
        ClusterOptions::default()
            .without_proxy()
            .order_instances(order_instances),
    )
    .await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let item = create_product(&mut order, "bench item", stock)
        .await
        .unwrap();
    let ids = submit_challenges(&approval, &item.product_id, approvals, 1, 32, 10)
        .await
        .unwrap();
    let instance = cluster.order_instance(order_instances.min(2) - 1);
    let stop_one = async {
        match disruption {
            Disruption::None => {}
            Disruption::Kill9 => {
                tokio::time::sleep(STOP_ONE_AFTER).await;
                instance.kill().await.expect("kill -9 order-svc #1");
            }
            Disruption::Sigterm => {
                tokio::time::sleep(STOP_ONE_AFTER).await;
                instance
                    .terminate(Duration::from_secs(10))
                    .await
                    .expect("order-svc #1 exits after SIGTERM");
            }
        }
    };
    let (run, ()) = tokio::join!(
        approve_all(&approval, &ids, CALLERS, DEADLINE, None),
        stop_one
    );

    let mut summary = Summary::new(name);
    summary.requests = ids.len() as u64;
    summary.outcomes = run.outcomes.clone();
    summary
        .figure("order_instances", order_instances)
        .figure("callers", CALLERS)
        .figure("disruption", format!("{disruption:?}"))
        .figure("failed", run.outcomes.failed_approvals())
        .figure(
            "approvals_per_s",
            format!("{:.0}", ids.len() as f64 / run.elapsed.as_secs_f64()),
        )
        .figure("p50", format!("{:.1?}", run.latency_quantile(0.5)))
        .figure("p99", format!("{:.1?}", run.latency_quantile(0.99)))
        .figure("run", format!("{:.2?}", run.elapsed));
    summary.resilience = Some(cluster.approval_counts().await);
    summary.elapsed = started.elapsed();
    summary.print();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on its own with --ignored"]
async fn flood_one_order_instance() {
    flood("bench 1 order-svc", 1, 6_000, 6_000, Disruption::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on its own with --ignored"]
async fn flood_three_order_instances() {
    flood("bench 3 order-svc", 3, 6_000, 6_000, Disruption::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on its own with --ignored"]
async fn flood_kill_9_one_of_three() {
    flood(
        "bench kill -9 1 of 3 order-svc",
        3,
        6_000,
        3_000,
        Disruption::Kill9,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on its own with --ignored"]
async fn flood_sigterm_one_of_three() {
    flood(
        "bench SIGTERM 1 of 3 order-svc",
        3,
        6_000,
        3_000,
        Disruption::Sigterm,
    )
    .await;
}
