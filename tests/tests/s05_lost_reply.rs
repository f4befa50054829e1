//! Scenario 5 — lost response: the proxy loses 30 % of order-svc's responses right when
//! order-svc starts sending them, i.e. after the order was committed (the connection is reset,
//! taking every call in flight on it along). Expected: the approval fails transiently (the
//! outcome is unknown), the completer retries with the same idempotency key, order-svc replays
//! the committed order instead of creating a second one, and in the end there is exactly one
//! order per challenge.
//!
//! A connection reset mid-call reaches the resilient client as UNAVAILABLE, so a call carrying
//! an idempotency key is first retried within its own deadline; when the losses outlast that
//! budget (or open the breaker) the approval fails with a transient reason — UNAVAILABLE,
//! CIRCUIT_OPEN or DEADLINE_EXCEEDED — and the saga's automatic retry rolls it forward.

mod common;

use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{Summary, approve_all, create_product, submit_challenges};
use lab_drill::proxy::Fault;
use tokio::time::Instant;

const SEED: u64 = 5;
const CHALLENGES: usize = 60;
const LOSS: f64 = 0.3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_after_commit_leave_one_order_per_challenge() {
    let started = Instant::now();
    let cluster = common::start(ClusterOptions::default().seed(SEED)).await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let reward = create_product(&mut order, "reward", 1_000).await.unwrap();
    let ids = submit_challenges(&approval, &reward.product_id, CHALLENGES, 1, 16, SEED)
        .await
        .unwrap();

    let proxy = cluster.proxy().handle();
    proxy.set_fault(Fault::LoseResponses { probability: LOSS });
    let run = approve_all(&approval, &ids, 2, Duration::from_secs(5), None).await;
    let snapshot = cluster.check(&Default::default()).await.unwrap();
    // Automatic retries run into the same losses for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lossy = proxy.stats();

    proxy.clear();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (dead_letters, report) =
        common::settle_unaided(&cluster, &run.accepted, Duration::from_secs(30)).await;

    let mut summary = Summary::new("s05 lost reply");
    summary.requests = ids.len() as u64;
    summary.outcomes = run.outcomes.clone();
    summary
        .figure("responses_lost", lossy.responses_lost)
        .figure("wire_requests", lossy.requests)
        .figure("orders_after_run", snapshot.orders("CREATED"))
        .figure("unsettled_after_run", snapshot.unsettled)
        .figure("dead_letters", dead_letters.len())
        .figure("orders", report.orders("CREATED"))
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    let wire = cluster.proxy().handle().stats().requests;
    summary_check(&run.outcomes);
    assert!(lossy.responses_lost >= 3, "the fault hardly fired: {lossy}");
    // Nothing requeued: every transient failure must be finished by the automatic retries.
    assert!(
        dead_letters.is_empty(),
        "the completer gave up on {} challenge(s), dead-lettered: {dead_letters:?}",
        dead_letters.len()
    );
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(
        report.orders("CREATED"),
        CHALLENGES,
        "exactly one order per challenge: {report}"
    );
    // Each lost response belonged to a committed order whose challenge could only be approved
    // by one more CreateOrder reaching order-svc: a replay, since no second order exists.
    assert!(
        wire >= CHALLENGES as u64 + lossy.responses_lost,
        "{wire} requests for {CHALLENGES} orders and {} lost responses",
        lossy.responses_lost
    );
}

/// Answers are OK and any failure is transient (retried automatically), never an error nor a
/// final refusal such as OUT_OF_STOCK.
fn summary_check(outcomes: &lab_drill::load::Outcomes) {
    assert_eq!(outcomes.starting_with("error/"), 0, "{outcomes}");
    assert_eq!(
        outcomes.starting_with("APPROVE_FAILED/"),
        outcomes.get("APPROVE_FAILED/ORDER_SERVICE_UNAVAILABLE")
            + outcomes.get("APPROVE_FAILED/CIRCUIT_OPEN")
            + outcomes.get("APPROVE_FAILED/DEADLINE_EXCEEDED"),
        "{outcomes}"
    );
}
