//! Scenario 10 — retry storm: under a steady 100 approvals/s, every call to order-svc is
//! answered UNAVAILABLE for 5 s (by the fault proxy, which counts each attempt and whether it
//! carried `grpc-previous-rpc-attempts`). Expected: the breaker opens, retries stay within the
//! retry budget (counted on the wire and by the client's own metrics), attempts never exceed the
//! logical calls (no amplification), and once the storm passes everything settles with I1–I6
//! holding.

mod common;

use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{Summary, approve_paced, create_product, submit_challenges};
use lab_drill::proxy::Fault;
use tokio::time::Instant;

const SEED: u64 = 10;
const RATE: f64 = 100.0;
const CHALLENGES: usize = 800;
const STORM_STARTS: Duration = Duration::from_millis(1_500);
const STORM: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_storm_stays_within_the_budget_and_opens_the_breaker() {
    let started = Instant::now();
    let cluster = common::start(ClusterOptions::default().seed(SEED)).await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let reward = create_product(&mut order, "reward", CHALLENGES as i64)
        .await
        .unwrap();
    let ids = submit_challenges(&approval, &reward.product_id, CHALLENGES, 1, 32, SEED)
        .await
        .unwrap();

    let proxy = cluster.proxy().handle();
    let storm = async {
        tokio::time::sleep(STORM_STARTS).await;
        let before = cluster.approval_counts().await;
        proxy.set_fault(Fault::Unavailable { pushback: None });
        tokio::time::sleep(STORM).await;
        let after = cluster.approval_counts().await;
        let wire = proxy.stats();
        proxy.clear();
        (before, after, wire)
    };
    let (first, (before, after, wire)) = tokio::join!(
        approve_paced(&approval, &ids, RATE, 64, Duration::from_secs(5), None),
        storm
    );

    let (second, accepted) = common::resend_errored(&approval, &first, 16).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (dead_letters, report) =
        common::settle_unaided(&cluster, &accepted, Duration::from_secs(60)).await;

    let calls = after.calls - before.calls;
    let retries = after.retries - before.retries;
    let budget = resilience::RetryConfig::default();
    let allowed = budget.budget_ratio as f64 * calls as f64
        + f64::from(budget.budget_min_per_sec) * (STORM + budget.budget_ttl).as_secs_f64();
    let mut summary = Summary::new("s10 retry storm");
    summary.requests = (first.latencies.len() + second.latencies.len()) as u64;
    summary.outcomes = first.outcomes.clone();
    summary.outcomes.merge(&second.outcomes);
    summary
        .figure("storm_calls", calls)
        .figure("storm_wire_attempts", wire.unavailable_answers)
        .figure("storm_wire_retries", wire.unavailable_retries)
        .figure("storm_client_retries", retries)
        .figure("retry_budget_allows", format!("{allowed:.0}"))
        .figure(
            "storm_budget_refused",
            after.budget_exhausted - before.budget_exhausted,
        )
        .figure(
            "storm_breaker_opened",
            after.breaker_opened - before.breaker_opened,
        )
        .figure(
            "storm_breaker_rejections",
            after.breaker_rejections - before.breaker_rejections,
        )
        .figure(
            "amplification",
            format!(
                "{:.2}",
                wire.unavailable_answers as f64 / calls.max(1) as f64
            ),
        )
        .figure("dead_letters", dead_letters.len())
        .figure("approved", report.challenges("APPROVED"))
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    assert!(
        calls >= 300,
        "too little load during the storm: {calls} calls"
    );
    assert!(
        wire.unavailable_answers > 0,
        "the storm never reached the wire"
    );
    assert!(
        after.breaker_opened > before.breaker_opened,
        "the breaker never opened"
    );
    // No amplification: fewer attempts reached the (failing) server than logical calls were made.
    assert!(
        wire.unavailable_answers <= calls,
        "{} attempts for {calls} calls",
        wire.unavailable_answers
    );
    // Retries within the budget, as the client counted them and as the wire saw them.
    assert!(
        (retries as f64) <= allowed,
        "{retries} retries, budget allows {allowed:.0}"
    );
    assert!((wire.unavailable_retries as f64) <= allowed);
    // And after the storm everything settles.
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
