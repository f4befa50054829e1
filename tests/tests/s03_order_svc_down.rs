//! Scenario 3 — dead shop: order-svc is killed (`kill -9`) while approvals keep coming.
//! Expected: every approval answers APPROVE_FAILED fast (well within the order-call budget), the
//! breaker opens (later answers say CIRCUIT_OPEN and never reach the network), and when
//! order-svc comes back on the same port the breaker closes, new approvals succeed and the
//! failed ones are rolled forward by automatic retries alone (nothing dead-lettered, nothing
//! requeued, no consistency check healing), with I1–I6 holding.

mod common;

use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{Summary, approve_all, create_product, submit_challenges};
use tokio::time::Instant;

const SEED: u64 = 3;
const WARM_UP: usize = 5;
const DURING_OUTAGE: usize = 60;
const AFTER_RECOVERY: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_svc_down_fails_fast_opens_the_breaker_and_recovers() {
    let started = Instant::now();
    let mut cluster = common::start(ClusterOptions::default().seed(SEED)).await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let reward = create_product(&mut order, "reward", 1_000).await.unwrap();
    let ids = submit_challenges(
        &approval,
        &reward.product_id,
        WARM_UP + DURING_OUTAGE + AFTER_RECOVERY,
        1,
        16,
        SEED,
    )
    .await
    .unwrap();
    let (warm_up, rest) = ids.split_at(WARM_UP);
    let (outage, after) = rest.split_at(DURING_OUTAGE);

    let warm = approve_all(&approval, warm_up, 4, Duration::from_secs(5), None).await;
    assert_eq!(
        warm.outcomes.get("APPROVED"),
        WARM_UP as u64,
        "{}",
        warm.outcomes
    );

    cluster.order.kill().await.expect("kill -9 order-svc");
    let proxy = cluster.proxy().handle();
    let before = proxy.stats();
    let down = approve_all(&approval, outage, 4, Duration::from_secs(5), None).await;
    let during = proxy.stats();
    let counts_down = cluster.approval_counts().await;

    cluster
        .order
        .restart()
        .await
        .expect("order-svc restarts on its port");
    let recovered_at = Instant::now();
    // New approvals succeed once the breaker lets a probe through (open period <= 1 s).
    let mut recovered = approve_all(&approval, &after[..1], 1, Duration::from_secs(5), None).await;
    while recovered.outcomes.get("APPROVED") == 0
        && recovered_at.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        recovered = approve_all(&approval, &after[..1], 1, Duration::from_secs(5), None).await;
    }
    let recovery = recovered_at.elapsed();
    let fresh = approve_all(&approval, &after[1..], 4, Duration::from_secs(5), None).await;

    // Automatic retries alone roll the outage's failures forward.
    let mut all_accepted = warm.accepted.clone();
    all_accepted.extend(down.accepted.iter().cloned());
    all_accepted.extend(fresh.accepted.iter().cloned());
    let (dead_letters, report) =
        common::settle_unaided(&cluster, &all_accepted, Duration::from_secs(30)).await;
    let counts = cluster.approval_counts().await;

    let mut summary = Summary::new("s03 order-svc down");
    summary.requests = (warm.latencies.len() + down.latencies.len() + fresh.latencies.len()) as u64;
    summary.outcomes = down.outcomes.clone();
    summary.resilience = Some(counts);
    summary
        .figure("outage_p99", format!("{:?}", down.latency_quantile(0.99)))
        .figure("outage_max", format!("{:?}", down.max_latency()))
        .figure(
            "outage_wire_attempts",
            during.upstream_connect_failures - before.upstream_connect_failures,
        )
        .figure("outage_breaker_opened", counts_down.breaker_opened)
        .figure("recovery", format!("{recovery:?}"))
        .figure("dead_letters", dead_letters.len())
        .figure("approved", report.challenges("APPROVED"))
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    // Fast: every outage answer is an APPROVE_FAILED, far inside the 2 s order-call budget.
    assert_eq!(
        down.outcomes.starting_with("APPROVE_FAILED/"),
        DURING_OUTAGE as u64,
        "{}",
        down.outcomes
    );
    assert!(
        down.max_latency() < Duration::from_millis(1_500),
        "slow failure: {:?}",
        down.max_latency()
    );
    // The breaker opened and shielded the network: calls failed fast without a connection.
    assert!(
        down.outcomes.get("APPROVE_FAILED/CIRCUIT_OPEN") > 0,
        "{}",
        down.outcomes
    );
    assert!(counts_down.breaker_opened >= 1);
    let wire = during.upstream_connect_failures - before.upstream_connect_failures;
    assert!(
        wire < DURING_OUTAGE as u64,
        "{wire} connection attempts for {DURING_OUTAGE} approvals: the breaker did not shield"
    );
    // It recovered: closed again, new approvals succeed, the failed ones were rolled forward.
    assert!(counts.breaker_closed >= 1, "{counts}");
    assert_eq!(
        fresh.outcomes.get("APPROVED"),
        (AFTER_RECOVERY - 1) as u64,
        "{}",
        fresh.outcomes
    );
    // Nothing requeued: every transient failure must be finished by the automatic retries.
    assert!(
        dead_letters.is_empty(),
        "the completer gave up on {} challenge(s), dead-lettered: {dead_letters:?}",
        dead_letters.len()
    );
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), ids.len(), "{report}");
    assert_eq!(report.orders("CREATED"), ids.len());
}
