//! Scenario 7 — crash of the shop under load: `kill -9` order-svc 30 % of the way through a
//! 2 000-approval run paced at 400 approvals/s (about 5 s), restart it on the same port and
//! database a second later. Expected: the
//! approvals in flight and during the outage fail transiently (never an error to the caller),
//! automatic retries alone roll them forward after the restart (nothing dead-lettered, nothing
//! requeued, no consistency check healing), and the end state is exact: `STOCK` approvals, the rest OUT_OF_STOCK, stock zero,
//! I1–I6 holding.

mod common;

use std::time::Duration;

use lab_drill::engine::{Action, At, Pacing, Scenario, Service, Settle, Workload};

const SEED: u64 = 7;
const CHALLENGES: usize = 2_000;
const STOCK: i64 = 1_800;
const RATE: f64 = 400.0;
const MAX_IN_FLIGHT: usize = 64;
const KILL_AT: u64 = 600;
const OUTAGE: Duration = Duration::from_secs(1);

fn scenario() -> Scenario {
    Scenario::new("s07", "s07 kill -9 order-svc", SEED)
        .workload(Workload::new(
            CHALLENGES,
            STOCK,
            Pacing::paced(RATE, MAX_IN_FLIGHT),
        ))
        .at(At::Answers(KILL_AT), Action::Kill(Service::Order, 0))
        .at(At::After(OUTAGE), Action::Restart(Service::Order, 0))
        .settle(Settle {
            resend_errored: None,
            pause: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_order_svc_mid_run_keeps_the_invariants() {
    let mut outcome = common::drill(scenario()).await;
    let killed_at = outcome.fault_at("kill -9").expect("the kill happened");
    let throughput = CHALLENGES as f64 / outcome.run.elapsed.as_secs_f64();
    outcome
        .summary
        .figure("killed_at", format!("{killed_at:.2?}"))
        .figure("throughput", format!("{throughput:.0}/s"))
        .figure("out_of_stock", outcome.report.challenges("APPROVE_FAILED"));
    common::finish(&outcome);

    let (run, report) = (&outcome.run, &outcome.report);
    assert_eq!(run.outcomes.starting_with("error/"), 0, "{}", run.outcomes);
    assert!(
        run.outcomes.starting_with("APPROVE_FAILED/")
            > run.outcomes.get("APPROVE_FAILED/OUT_OF_STOCK"),
        "the crash caused no transient failure: {}",
        run.outcomes
    );
    common::assert_no_dead_letters(&outcome);
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), STOCK as usize, "{report}");
    assert_eq!(report.orders("CREATED"), STOCK as usize, "{report}");
    assert_eq!(
        report.challenges("APPROVE_FAILED"),
        CHALLENGES - STOCK as usize,
        "{report}"
    );
    assert_eq!(outcome.stock(), 0);
}
