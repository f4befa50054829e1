//! Scenario 9 — database trouble under load: three times during a 2 000-approval run (paced at
//! 400/s), every connection of both services' databases is terminated with
//! `pg_terminate_backend`, as a PostgreSQL restart or failover would. Expected: the calls caught
//! by it fail cleanly (an error status without database details, or a transient
//! APPROVE_FAILED), the pools reconnect by themselves (later calls succeed without restarting
//! anything), re-sent approvals and automatic retries finish the rest, and I1–I6 hold.

mod common;

use std::time::Duration;

use lab_drill::engine::{Action, At, Databases, Pacing, Scenario, Settle, Workload};

const SEED: u64 = 9;
const CHALLENGES: usize = 2_000;
const RATE: f64 = 400.0;
const MAX_IN_FLIGHT: usize = 64;
const TERMINATE_AT: [u64; 3] = [500, 1_000, 1_500];

fn scenario() -> Scenario {
    let mut scenario = Scenario::new("s09", "s09 postgres connections killed", SEED)
        .workload(Workload::new(
            CHALLENGES,
            CHALLENGES as i64,
            Pacing::paced(RATE, MAX_IN_FLIGHT),
        ))
        .settle(Settle {
            resend_errored: Some(32),
            pause: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
        });
    for at in TERMINATE_AT {
        scenario = scenario.at(
            At::Answers(at),
            Action::TerminateConnections(Databases::Both),
        );
    }
    scenario
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_killed_mid_run_pools_recover() {
    let mut outcome = common::drill(scenario()).await;
    let terminated = outcome.terminated.clone();
    let second = outcome.resent.clone().expect("failed calls were re-sent");
    outcome
        .summary
        .figure("connections_terminated", format!("{terminated:?}"))
        .figure("failed_calls_resent", outcome.run.errored.len());
    common::finish(&outcome);

    assert!(
        terminated.len() == TERMINATE_AT.len() && terminated.iter().all(|n| *n > 0),
        "no connection to terminate: {terminated:?}"
    );
    // The pools recovered by themselves: the re-sent calls all went through.
    assert_eq!(
        second.outcomes.starting_with("error/"),
        0,
        "{}",
        second.outcomes
    );
    common::assert_no_dead_letters(&outcome);
    let report = &outcome.report;
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CREATED"), CHALLENGES, "{report}");
}
