//! Scenario 8 — crash of the approval service under load: `kill -9` approval-svc 30 % of the way
//! through a 2 000-approval run (paced at 400/s, with 200 ms of latency on order-svc's answers so
//! that dozens of approvals are in flight, most with their order already committed), restart it
//! on the same port and database a second later, and re-send the approvals that failed (as
//! callers would). Expected: the challenges caught APPROVING by the crash are rolled forward by
//! the restarted completer after their lease, every challenge ends APPROVED with exactly one
//! order, and I1–I6 hold.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use lab_drill::check::{CheckOptions, check};
use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{
    Summary, approve_paced, create_product, list_challenges, submit_challenges, wait_for_progress,
};
use lab_drill::proxy::Fault;
use tokio::time::Instant;

const SEED: u64 = 8;
const CHALLENGES: usize = 2_000;
const RATE: f64 = 400.0;
const MAX_IN_FLIGHT: usize = 64;
const KILL_AT: u64 = 600;
const OUTAGE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_approval_svc_mid_run_the_completer_finishes() {
    let started = Instant::now();
    let mut cluster = common::start(ClusterOptions::default().seed(SEED)).await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let reward = create_product(&mut order, "reward", CHALLENGES as i64)
        .await
        .unwrap();
    let ids = submit_challenges(&approval, &reward.product_id, CHALLENGES, 1, 32, SEED)
        .await
        .unwrap();
    cluster.proxy().handle().set_fault(Fault::Latency {
        base: Duration::from_millis(200),
        jitter: Duration::from_millis(50),
    });

    let progress = Arc::new(AtomicU64::new(0));
    let (approval_url, order_url) = (cluster.approval.url(), cluster.order.url());
    let approvals = &mut cluster.approval;
    let crash = async {
        assert!(wait_for_progress(&progress, KILL_AT, Duration::from_secs(120)).await);
        let counts = approvals
            .metrics()
            .await
            .map(|m| m.resilience())
            .unwrap_or_default();
        approvals.kill().await.expect("kill -9 approval-svc");
        tokio::time::sleep(OUTAGE).await;
        approvals.restart().await.expect("approval-svc restarts");
        // Within the lease: what the crash left in flight, before the completer takes it.
        let snapshot = check(&approval_url, &order_url, &CheckOptions::default())
            .await
            .expect("the checker reads both services");
        (counts, snapshot)
    };
    let (first, (counts_before_kill, after_restart)) = tokio::join!(
        approve_paced(
            &approval,
            &ids,
            RATE,
            MAX_IN_FLIGHT,
            Duration::from_secs(10),
            Some(progress.clone())
        ),
        crash
    );
    cluster.proxy().handle().clear();

    // Callers re-send what failed; a challenge still APPROVING answers as it stands.
    let (second, accepted) = common::resend_errored(&approval, &first, 32).await;
    let report = common::settled(
        &cluster,
        &common::accepted(&accepted),
        Duration::from_secs(60),
    )
    .await;
    // A challenge the completer re-drove carries one more attempt than its single approval.
    let rolled_forward = list_challenges(&mut cluster.approval_client())
        .await
        .unwrap()
        .iter()
        .filter(|c| c.attempts >= 2)
        .count();

    let mut summary = Summary::new("s08 kill -9 approval-svc");
    summary.requests = (first.latencies.len() + second.latencies.len()) as u64;
    summary.outcomes = first.outcomes.clone();
    summary.outcomes.merge(&second.outcomes);
    summary.resilience = Some(counts_before_kill + cluster.approval_counts().await);
    summary
        .figure("first_pass", format!("{:.2?}", first.elapsed))
        .figure("failed_calls_resent", first.errored.len())
        .figure("approving_after_restart", after_restart.in_flight)
        .figure("orders_of_approving_after_restart", after_restart.unsettled)
        .figure("rolled_forward_by_completer", rolled_forward)
        .figure("approved", report.challenges("APPROVED"))
        .figure("orders", report.orders("CREATED"))
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    assert!(
        !first.errored.is_empty(),
        "the crash failed no call: {}",
        first.outcomes
    );
    assert!(
        after_restart.in_flight > 0,
        "nothing was in flight at the crash: {after_restart}"
    );
    assert!(rolled_forward > 0, "the completer re-drove nothing");
    assert_eq!(
        second.outcomes.starting_with("error/"),
        0,
        "{}",
        second.outcomes
    );
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CREATED"), CHALLENGES, "{report}");
}
