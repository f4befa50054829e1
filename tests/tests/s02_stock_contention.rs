//! Scenario 2 — stock race: many approvals for one hot product with a small stock. Expected:
//! exactly `STOCK` approvals succeed, every other one fails with OUT_OF_STOCK (a definitive
//! refusal: not retried, not dead-lettered), the stock ends at zero and never oversells.

mod common;

use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{Summary, approve_all, create_product, product, submit_challenges};
use tokio::time::Instant;

const SEED: u64 = 2;
const CHALLENGES: usize = 300;
const STOCK: i64 = 50;
const CONCURRENCY: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_contention_on_one_hot_product_never_oversells() {
    let started = Instant::now();
    let cluster = common::start(ClusterOptions::default().seed(SEED)).await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let hot = create_product(&mut order, "hot item", STOCK).await.unwrap();
    let ids = submit_challenges(&approval, &hot.product_id, CHALLENGES, 1, 16, SEED)
        .await
        .unwrap();

    let run = approve_all(&approval, &ids, CONCURRENCY, Duration::from_secs(10), None).await;
    let report = common::settled(
        &cluster,
        &common::accepted(&run.accepted),
        Duration::from_secs(15),
    )
    .await;
    let stock = product(&mut order, &hot.product_id).await.unwrap().stock;

    let mut summary = Summary::new("s02 stock contention");
    summary.requests = ids.len() as u64;
    summary.outcomes = run.outcomes.clone();
    summary
        .figure("stock_before", STOCK)
        .figure("stock_after", stock)
        .figure("orders", report.orders("CREATED"))
        .figure("dead_letters", report.dead_lettered)
        .figure("p99", format!("{:?}", run.latency_quantile(0.99)))
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    assert_eq!(run.outcomes.starting_with("error/"), 0, "{}", run.outcomes);
    assert_eq!(
        run.outcomes.get("APPROVED"),
        STOCK as u64,
        "{}",
        run.outcomes
    );
    assert_eq!(
        run.outcomes.get("APPROVE_FAILED/OUT_OF_STOCK"),
        (CHALLENGES as i64 - STOCK) as u64,
        "{}",
        run.outcomes
    );
    assert_eq!(stock, 0);
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.orders("CREATED"), STOCK as usize);
    assert_eq!(
        report.dead_lettered, 0,
        "OUT_OF_STOCK is definitive, never a dead letter"
    );
}
