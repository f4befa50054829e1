//! Scenario 4 — slow shop: every order-svc answer is delayed beyond the per-attempt timeout
//! (1.5 s ± 100 ms against 1 s), while the requests themselves arrive on time, so order-svc
//! commits orders whose answers come too late. Expected: each approval answers APPROVE_FAILED
//! within the caller's deadline, after a bounded number of attempts; the orders committed late
//! are then settled by the completer's retries with the same idempotency key (replayed, never
//! duplicated) once the latency is gone.
//!
//! The breaker is switched off here (no consecutive-failure or failure-rate trip), so every call
//! takes the timeout-and-retry path this scenario is about; with it on, the first five timeouts
//! open it and the rest fail fast with CIRCUIT_OPEN, which scenarios 3 and 10 cover.

mod common;

use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{Summary, approve_all, create_product, submit_challenges};
use lab_drill::proxy::Fault;
use tokio::time::Instant;

const SEED: u64 = 4;
const CHALLENGES: usize = 30;
const CALLER_DEADLINE: Duration = Duration::from_secs(3);
/// ORDER_CALL_ATTEMPTS of approval-svc (its default).
const ATTEMPTS_PER_CALL: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_order_svc_fails_within_the_deadline_and_late_commits_settle() {
    let started = Instant::now();
    let cluster = common::start(
        ClusterOptions::default()
            .seed(SEED)
            .approval_env("BREAKER_CONSECUTIVE_FAILURES", "0")
            .approval_env("BREAKER_FAILURE_RATE", "2.0"),
    )
    .await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let reward = create_product(&mut order, "reward", 1_000).await.unwrap();
    let ids = submit_challenges(&approval, &reward.product_id, CHALLENGES, 1, 16, SEED)
        .await
        .unwrap();

    let proxy = cluster.proxy().handle();
    proxy.set_fault(Fault::Latency {
        base: Duration::from_millis(1_500),
        jitter: Duration::from_millis(100),
    });
    let before = cluster.approval_counts().await;
    let slow = approve_all(&approval, &ids, 10, CALLER_DEADLINE, None).await;
    let during = cluster.approval_counts().await;
    let wire = proxy.stats().requests;
    // Late commits: orders exist while their challenges are still APPROVE_FAILED.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let snapshot = cluster
        .check(&common::accepted(&slow.accepted))
        .await
        .unwrap();

    proxy.clear();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (dead_letters, report) =
        common::settle_unaided(&cluster, &slow.accepted, Duration::from_secs(30)).await;

    let calls = during.calls - before.calls;
    let attempts = during.attempts - before.attempts;
    let mut summary = Summary::new("s04 order-svc slow");
    summary.requests = ids.len() as u64;
    summary.outcomes = slow.outcomes.clone();
    summary
        .figure("slow_calls", calls)
        .figure("slow_attempts", attempts)
        .figure(
            "attempt_timeouts",
            during.attempt_timeouts - before.attempt_timeouts,
        )
        .figure("max_latency", format!("{:?}", slow.max_latency()))
        .figure("late_commits_seen", snapshot.orders("CREATED"))
        .figure("dead_letters", dead_letters.len())
        .figure("orders", report.orders("CREATED"))
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    // Within the deadline, and a failure that says why.
    assert!(
        slow.max_latency() <= CALLER_DEADLINE,
        "{:?}",
        slow.max_latency()
    );
    assert_eq!(
        slow.outcomes.get("APPROVE_FAILED/DEADLINE_EXCEEDED"),
        CHALLENGES as u64,
        "{}",
        slow.outcomes
    );
    // Retries happened (the per-attempt timeout fired and a second attempt went out)…
    assert!(
        attempts > calls,
        "{attempts} attempts for {calls} calls: no retry"
    );
    // Bounded retries: never more than ORDER_CALL_ATTEMPTS per logical call, on the wire too.
    assert!(
        attempts <= calls * ATTEMPTS_PER_CALL,
        "{attempts} attempts for {calls} calls"
    );
    assert!(
        wire <= calls * ATTEMPTS_PER_CALL,
        "{wire} requests on the wire for {calls} calls"
    );
    // The slow answers were commits: orders existed before any challenge was APPROVED.
    assert_eq!(
        snapshot.orders("CREATED"),
        CHALLENGES,
        "late commits: {snapshot}"
    );
    assert_eq!(snapshot.challenges("APPROVED"), 0, "{snapshot}");
    // Settled: every challenge APPROVED with exactly one order, however many attempts it took.
    // Nothing requeued: every transient failure must be finished by the automatic retries.
    assert!(
        dead_letters.is_empty(),
        "the completer gave up on {} challenge(s), dead-lettered: {dead_letters:?}",
        dead_letters.len()
    );
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CREATED"), CHALLENGES, "{report}");
}
