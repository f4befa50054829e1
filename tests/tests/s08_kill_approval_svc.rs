//! Scenario 8 — crash of the approval service under load: `kill -9` approval-svc 30 % of the way
//! through a 2 000-approval run (paced at 400/s, with 200 ms of latency on order-svc's answers so
//! that dozens of approvals are in flight, most with their order already committed), restart it
//! on the same port and database a second later, and re-send the approvals that failed (as
//! callers would). Expected: the challenges caught APPROVING by the crash are rolled forward by
//! the restarted completer after their lease, every challenge ends APPROVED with exactly one
//! order, and I1–I6 hold.

mod common;

use std::time::Duration;

use lab_drill::engine::{Action, At, Pacing, Scenario, Service, Settle, Workload};
use lab_drill::proxy::Fault;

const SEED: u64 = 8;
const CHALLENGES: usize = 2_000;
const RATE: f64 = 400.0;
const MAX_IN_FLIGHT: usize = 64;
const KILL_AT: u64 = 600;
const OUTAGE: Duration = Duration::from_secs(1);

fn scenario() -> Scenario {
    Scenario::new("s08", "s08 kill -9 approval-svc", SEED)
        .workload(Workload::new(
            CHALLENGES,
            CHALLENGES as i64,
            Pacing::paced(RATE, MAX_IN_FLIGHT),
        ))
        .before_load(Action::proxy(Fault::Latency {
            base: Duration::from_millis(200),
            jitter: Duration::from_millis(50),
        }))
        .at(At::Answers(KILL_AT), Action::counters("before_kill"))
        .at(
            At::After(Duration::ZERO),
            Action::Kill(Service::Approval, 0),
        )
        .at(At::After(OUTAGE), Action::Restart(Service::Approval, 0))
        // Within the lease: what the crash left in flight, before the completer takes it.
        .at(At::After(Duration::ZERO), Action::checked("after_restart"))
        .at(At::LoadDone(Duration::ZERO), Action::ClearProxy)
        // Callers re-send what failed; a challenge still APPROVING answers as it stands.
        .settle(Settle {
            resend_errored: Some(32),
            pause: Duration::ZERO,
            timeout: Duration::from_secs(60),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_approval_svc_mid_run_the_completer_finishes() {
    let mut outcome = common::drill(scenario()).await;
    let counts_before_kill = outcome.snapshot("before_kill").counts;
    let after_restart = outcome.snapshot("after_restart").report().clone();
    let second = outcome.resent.clone().expect("failed calls were re-sent");
    outcome.summary.resilience = Some(counts_before_kill + outcome.resilience);
    outcome
        .summary
        .figure("failed_calls_resent", outcome.run.errored.len())
        .figure("approving_after_restart", after_restart.in_flight)
        .figure("orders_of_approving_after_restart", after_restart.unsettled)
        .figure("rolled_forward_by_completer", outcome.rolled_forward);
    common::finish(&outcome);

    let (first, report) = (&outcome.run, &outcome.report);
    assert!(
        !first.errored.is_empty(),
        "the crash failed no call: {}",
        first.outcomes
    );
    assert!(
        after_restart.in_flight > 0,
        "nothing was in flight at the crash: {after_restart}"
    );
    assert!(outcome.rolled_forward > 0, "the completer re-drove nothing");
    assert_eq!(
        second.outcomes.starting_with("error/"),
        0,
        "{}",
        second.outcomes
    );
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CREATED"), CHALLENGES, "{report}");
}
