//! Scenario 9 — database trouble under load: three times during a 2 000-approval run (paced at
//! 400/s), every connection of both services' databases is terminated with
//! `pg_terminate_backend`, as a PostgreSQL restart or failover would. Expected: the calls caught
//! by it fail cleanly (an error status without database details, or a transient
//! APPROVE_FAILED), the pools reconnect by themselves (later calls succeed without restarting
//! anything), re-sent approvals and automatic retries finish the rest, and I1–I6 hold.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{
    Summary, approve_paced, create_product, submit_challenges, wait_for_progress,
};
use lab_drill::process::terminate_connections;
use tokio::time::Instant;

const SEED: u64 = 9;
const CHALLENGES: usize = 2_000;
const RATE: f64 = 400.0;
const MAX_IN_FLIGHT: usize = 64;
const TERMINATE_AT: [u64; 3] = [500, 1_000, 1_500];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_killed_mid_run_pools_recover() {
    let started = Instant::now();
    let cluster = common::start(ClusterOptions::default().seed(SEED)).await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let reward = create_product(&mut order, "reward", CHALLENGES as i64)
        .await
        .unwrap();
    let ids = submit_challenges(&approval, &reward.product_id, CHALLENGES, 1, 32, SEED)
        .await
        .unwrap();

    let progress = Arc::new(AtomicU64::new(0));
    let databases = [
        cluster.approval.database_url().to_owned(),
        cluster.order.database_url().to_owned(),
    ];
    let chaos = async {
        let mut terminated = Vec::new();
        for at in TERMINATE_AT {
            assert!(wait_for_progress(&progress, at, Duration::from_secs(120)).await);
            let mut round = 0;
            for database in &databases {
                round += terminate_connections(database)
                    .await
                    .expect("pg_terminate_backend");
            }
            terminated.push(round);
        }
        terminated
    };
    let (first, terminated) = tokio::join!(
        approve_paced(
            &approval,
            &ids,
            RATE,
            MAX_IN_FLIGHT,
            Duration::from_secs(10),
            Some(progress.clone())
        ),
        chaos
    );

    let (second, accepted) = common::resend_errored(&approval, &first, 32).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (dead_letters, report) =
        common::settle_unaided(&cluster, &accepted, Duration::from_secs(60)).await;

    let mut summary = Summary::new("s09 postgres connections killed");
    summary.requests = (first.latencies.len() + second.latencies.len()) as u64;
    summary.outcomes = first.outcomes.clone();
    summary.outcomes.merge(&second.outcomes);
    summary
        .figure("connections_terminated", format!("{terminated:?}"))
        .figure("failed_calls_resent", first.errored.len())
        .figure("dead_letters", dead_letters.len())
        .figure("approved", report.challenges("APPROVED"))
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    assert!(
        terminated.iter().all(|n| *n > 0),
        "no connection to terminate: {terminated:?}"
    );
    // The pools recovered by themselves: the re-sent calls all went through.
    assert_eq!(
        second.outcomes.starting_with("error/"),
        0,
        "{}",
        second.outcomes
    );
    // Nothing requeued: every transient failure must be finished by the automatic retries.
    assert!(
        dead_letters.is_empty(),
        "the completer gave up on {} challenge(s), dead-lettered: {dead_letters:?}",
        dead_letters.len()
    );
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CREATED"), CHALLENGES, "{report}");
}
