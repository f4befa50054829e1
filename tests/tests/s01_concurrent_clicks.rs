//! Scenario 1 — duplicate approval: several administrators click "approve" on the same
//! challenge at once. Expected: every click answers OK (APPROVED, or the challenge as it stands
//! while the first click is in flight), never an error, and exactly one order per challenge.

use std::time::Duration;

use lab_drill::check::CheckOptions;
use lab_drill::cluster::{Cluster, ClusterOptions};
use lab_drill::load::{Summary, approve_all, create_product, product, submit_challenges};
use tokio::time::Instant;

const SEED: u64 = 1;
const CHALLENGES: usize = 20;
const CLICKS_PER_CHALLENGE: usize = 10;
const QUANTITY: i32 = 2;
const STOCK: i64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clicks_on_one_challenge_make_one_order() {
    let started = Instant::now();
    let cluster = Cluster::start(ClusterOptions::default().seed(SEED))
        .await
        .expect("cluster starts");
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let reward = create_product(&mut order, "reward", STOCK).await.unwrap();
    let ids = submit_challenges(&approval, &reward.product_id, CHALLENGES, QUANTITY, 8, SEED)
        .await
        .unwrap();

    // Each challenge's clicks are adjacent and the concurrency covers several challenges'
    // worth of them, so every challenge gets CLICKS_PER_CHALLENGE simultaneous approvals.
    let clicks: Vec<String> = ids
        .iter()
        .flat_map(|id| std::iter::repeat_n(id.clone(), CLICKS_PER_CHALLENGE))
        .collect();
    let run = approve_all(
        &approval,
        &clicks,
        5 * CLICKS_PER_CHALLENGE,
        Duration::from_secs(5),
        None,
    )
    .await;

    let mut accepted = run.accepted.clone();
    accepted.sort();
    accepted.dedup();
    let options = CheckOptions {
        accepted,
        ..CheckOptions::default()
    };
    let report = cluster
        .check_settled(&options, Duration::from_secs(15))
        .await
        .expect("check runs");
    let stock = product(&mut order, &reward.product_id).await.unwrap().stock;

    let mut summary = Summary::new("s01 concurrent clicks");
    summary.requests = clicks.len() as u64;
    summary.outcomes = run.outcomes.clone();
    summary.resilience = Some(cluster.approval_counts().await);
    summary.proxy = Some(cluster.proxy().handle().stats());
    summary
        .figure("challenges", CHALLENGES)
        .figure("orders", report.orders("CREATED"))
        .figure("stock", stock)
        .figure("p99", format!("{:?}", run.latency_quantile(0.99)))
        .figure("violations", report.violation_count());
    summary.elapsed = started.elapsed();
    summary.print();

    assert_eq!(
        run.outcomes.starting_with("error/"),
        0,
        "a duplicate click must never look like a failure: {}",
        run.outcomes
    );
    assert_eq!(
        run.outcomes.starting_with("APPROVE_FAILED"),
        0,
        "{}",
        run.outcomes
    );
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(
        report.orders("CREATED"),
        CHALLENGES,
        "one order per challenge: {report}"
    );
    assert_eq!(stock, STOCK - CHALLENGES as i64 * i64::from(QUANTITY));
}
