//! Scenario 13 (issue 10) — a deploy: three order-svc instances on one database, one
//! approval-svc balancing over all three, 5 000 approvals paced at 400/s (stock 3 000), and a
//! rolling restart of every instance once 400 answers are in: SIGTERM, wait for the exit (a
//! graceful drain exits 0), start it again on the same port and database, wait until it serves,
//! pause as a deploy tool would, then the next. Expected: no approval fails at all (the draining
//! instance steers its clients away before it closes, the others take the calls), everything
//! settles, and I1–I6 hold.

mod common;

use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::engine::{Action, At, Pacing, Scenario, Service, Settle, Workload};

const SEED: u64 = 13;
const CHALLENGES: usize = 5_000;
const STOCK: i64 = 3_000;
const RATE: f64 = 400.0;
const MAX_IN_FLIGHT: usize = 64;
const RESTART_AT: u64 = 400;
const ORDER_INSTANCES: usize = 3;
/// How long a SIGTERMed instance may take to drain and exit.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The deploy's pause between one instance serving again and the next one's SIGTERM (the part
/// of the scenario a `minReadySeconds` plays in Kubernetes).
const PAUSE_BETWEEN_INSTANCES: Duration = Duration::from_millis(500);

fn scenario() -> Scenario {
    // The engine's rolling restart fails the drill when an instance does not exit 0 after
    // SIGTERM within DRAIN_TIMEOUT.
    Scenario::new("s13", "s13 rolling restart of three order-svc", SEED)
        .cluster(ClusterOptions::default().order_instances(ORDER_INSTANCES))
        .workload(Workload::new(
            CHALLENGES,
            STOCK,
            Pacing::paced(RATE, MAX_IN_FLIGHT),
        ))
        .at(
            At::Answers(RESTART_AT),
            Action::RollingRestart {
                service: Service::Order,
                drain: DRAIN_TIMEOUT,
                pause: PAUSE_BETWEEN_INSTANCES,
            },
        )
        .at(At::After(Duration::ZERO), Action::counters("deployed"))
        .settle(Settle {
            timeout: Duration::from_secs(30),
            ..Settle::default()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_three_order_svc_fails_no_approval() {
    let mut outcome = common::drill(scenario()).await;
    let answered_by_then = outcome.snapshot("deployed").answered;
    let p99 = outcome.run.latency_quantile(0.99);
    outcome
        .summary
        .figure("p99", format!("{p99:.0?}"))
        .figure("out_of_stock", outcome.report.challenges("APPROVE_FAILED"));
    common::finish(&outcome);

    let (failed, report) = (outcome.failed, &outcome.report);
    assert_eq!(
        outcome.faults.len(),
        ORDER_INSTANCES,
        "every instance restarted: {:?}",
        outcome.faults
    );
    assert!(
        answered_by_then < CHALLENGES as u64,
        "the load ended before the rolling restart did ({answered_by_then} answers by then): \
         the scenario proved nothing"
    );
    assert_eq!(
        failed, 0,
        "{failed} of {CHALLENGES} approvals failed during a rolling restart: {}",
        outcome.run.outcomes
    );
    common::assert_no_dead_letters(&outcome);
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.violation_count(), 0, "{report}");
    assert_eq!(report.challenges("APPROVED"), STOCK as usize, "{report}");
    assert_eq!(report.orders("CREATED"), STOCK as usize, "{report}");
    assert_eq!(
        report.challenges("APPROVE_FAILED"),
        CHALLENGES - STOCK as usize,
        "{report}"
    );
    assert_eq!(outcome.stock(), 0);
}
