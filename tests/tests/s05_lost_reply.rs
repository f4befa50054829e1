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

use lab_drill::engine::{Action, At, Pacing, Scenario, Settle, Workload};
use lab_drill::proxy::Fault;

const SEED: u64 = 5;
const CHALLENGES: usize = 60;
const LOSS: f64 = 0.3;

fn scenario() -> Scenario {
    Scenario::new("s05", "s05 lost reply", SEED)
        .workload(
            Workload::new(CHALLENGES, 1_000, Pacing::Concurrent { concurrency: 2 })
                .submit_concurrency(16)
                .deadline(Duration::from_secs(5)),
        )
        .before_load(Action::proxy(Fault::LoseResponses { probability: LOSS }))
        .at(At::LoadDone(Duration::ZERO), Action::checked("after_run"))
        // Automatic retries run into the same losses for a while.
        .at(At::After(Duration::from_secs(2)), Action::counters("lossy"))
        .at(At::After(Duration::ZERO), Action::ClearProxy)
        .settle(Settle {
            resend_errored: None,
            pause: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_after_commit_leave_one_order_per_challenge() {
    let mut outcome = common::drill(scenario()).await;
    let snapshot = outcome.snapshot("after_run").report().clone();
    let lossy = outcome.snapshot("lossy").proxy.clone().expect("a proxy");
    outcome
        .summary
        .figure("responses_lost", lossy.responses_lost)
        .figure("wire_requests", lossy.requests)
        .figure("orders_after_run", snapshot.orders("CREATED"))
        .figure("unsettled_after_run", snapshot.unsettled);
    common::finish(&outcome);

    let wire = outcome.proxy.as_ref().expect("a proxy").requests;
    let report = &outcome.report;
    summary_check(&outcome.run.outcomes);
    assert!(lossy.responses_lost >= 3, "the fault hardly fired: {lossy}");
    common::assert_no_dead_letters(&outcome);
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
