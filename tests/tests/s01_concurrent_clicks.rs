//! Scenario 1 — duplicate approval: several administrators click "approve" on the same
//! challenge at once. Expected: every click answers OK (APPROVED, or the challenge as it stands
//! while the first click is in flight), never an error, and exactly one order per challenge.

mod common;

use std::time::Duration;

use lab_drill::engine::{Pacing, Scenario, Settle, Workload};

const SEED: u64 = 1;
const CHALLENGES: usize = 20;
const CLICKS_PER_CHALLENGE: usize = 10;
const QUANTITY: i32 = 2;
const STOCK: i64 = 1_000;

fn scenario() -> Scenario {
    // Each challenge's clicks are adjacent and the concurrency covers several challenges'
    // worth of them, so every challenge gets CLICKS_PER_CHALLENGE simultaneous approvals.
    Scenario::new("s01", "s01 concurrent clicks", SEED)
        .workload(
            Workload::new(
                CHALLENGES,
                STOCK,
                Pacing::Concurrent {
                    concurrency: 5 * CLICKS_PER_CHALLENGE,
                },
            )
            .quantity(QUANTITY)
            .submit_concurrency(8)
            .clicks_per_challenge(CLICKS_PER_CHALLENGE)
            .deadline(Duration::from_secs(5)),
        )
        .settle(Settle {
            timeout: Duration::from_secs(15),
            ..Settle::default()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clicks_on_one_challenge_make_one_order() {
    let mut outcome = common::drill(scenario()).await;
    let p99 = outcome.run.latency_quantile(0.99);
    outcome
        .summary
        .figure("challenges", CHALLENGES)
        .figure("p99", format!("{p99:?}"));
    common::finish(&outcome);

    let (run, report) = (&outcome.run, &outcome.report);
    assert_eq!(run.latencies.len(), CHALLENGES * CLICKS_PER_CHALLENGE);
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
    assert_eq!(
        outcome.stock(),
        STOCK - CHALLENGES as i64 * i64::from(QUANTITY)
    );
}
