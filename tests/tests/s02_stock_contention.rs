//! Scenario 2 — stock race: many approvals for one hot product with a small stock. Expected:
//! exactly `STOCK` approvals succeed, every other one fails with OUT_OF_STOCK (a definitive
//! refusal: not retried, not dead-lettered), the stock ends at zero and never oversells.

mod common;

use std::time::Duration;

use lab_drill::engine::{Pacing, Scenario, Settle, Workload};

const SEED: u64 = 2;
const CHALLENGES: usize = 300;
const STOCK: i64 = 50;
const CONCURRENCY: usize = 32;

fn scenario() -> Scenario {
    Scenario::new("s02", "s02 stock contention", SEED)
        .workload(
            Workload::new(
                CHALLENGES,
                STOCK,
                Pacing::Concurrent {
                    concurrency: CONCURRENCY,
                },
            )
            .submit_concurrency(16),
        )
        .settle(Settle {
            timeout: Duration::from_secs(15),
            ..Settle::default()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_contention_on_one_hot_product_never_oversells() {
    let mut outcome = common::drill(scenario()).await;
    let p99 = outcome.run.latency_quantile(0.99);
    outcome
        .summary
        .figure("stock_before", STOCK)
        .figure("p99", format!("{p99:?}"));
    common::finish(&outcome);

    let (run, report) = (&outcome.run, &outcome.report);
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
    assert_eq!(outcome.stock(), 0);
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.orders("CREATED"), STOCK as usize);
    assert_eq!(
        report.dead_lettered, 0,
        "OUT_OF_STOCK is definitive, never a dead letter"
    );
}
