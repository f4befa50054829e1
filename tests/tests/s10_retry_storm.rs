//! Scenario 10 — retry storm: under a steady 100 approvals/s, every call to order-svc is
//! answered UNAVAILABLE for 5 s (by the fault proxy, which counts each attempt and whether it
//! carried `grpc-previous-rpc-attempts`). Expected: the breaker opens, retries stay within the
//! retry budget (counted on the wire and by the client's own metrics), attempts never exceed the
//! logical calls (no amplification), and once the storm passes everything settles with I1–I6
//! holding.

mod common;

use std::time::Duration;

use lab_drill::engine::{Action, At, Pacing, Scenario, Settle, Workload};
use lab_drill::proxy::Fault;

const SEED: u64 = 10;
const RATE: f64 = 100.0;
const CHALLENGES: usize = 800;
const STORM_STARTS: Duration = Duration::from_millis(1_500);
const STORM: Duration = Duration::from_secs(5);

fn scenario() -> Scenario {
    Scenario::new("s10", "s10 retry storm", SEED)
        .workload(
            Workload::new(CHALLENGES, CHALLENGES as i64, Pacing::paced(RATE, 64))
                .deadline(Duration::from_secs(5)),
        )
        .at(At::Time(STORM_STARTS), Action::counters("storm_start"))
        .at(
            At::After(Duration::ZERO),
            Action::proxy(Fault::Unavailable { pushback: None }),
        )
        .at(At::After(STORM), Action::counters("storm_end"))
        .at(At::After(Duration::ZERO), Action::ClearProxy)
        .settle(Settle {
            resend_errored: Some(16),
            pause: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_storm_stays_within_the_budget_and_opens_the_breaker() {
    let mut outcome = common::drill(scenario()).await;
    let before = outcome.snapshot("storm_start").counts;
    let after = outcome.snapshot("storm_end").counts;
    let wire = outcome
        .snapshot("storm_end")
        .proxy
        .clone()
        .expect("a proxy");
    let calls = after.calls - before.calls;
    let retries = after.retries - before.retries;
    let budget = resilience::RetryConfig::default();
    let allowed = budget.budget_ratio as f64 * calls as f64
        + f64::from(budget.budget_min_per_sec) * (STORM + budget.budget_ttl).as_secs_f64();
    outcome
        .summary
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
        );
    common::finish(&outcome);

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
    common::assert_no_dead_letters(&outcome);
    let report = &outcome.report;
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CREATED"), CHALLENGES, "{report}");
}
