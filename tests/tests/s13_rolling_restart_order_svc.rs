//! Scenario 13 (issue 10) — a deploy: three order-svc instances on one database, one
//! approval-svc balancing over all three, 5 000 approvals paced at 400/s (stock 3 000), and a
//! rolling restart of every instance once 400 answers are in: SIGTERM, wait for the exit (a
//! graceful drain exits 0), start it again on the same port and database, wait until it serves,
//! pause as a deploy tool would, then the next. Expected: no approval fails at all (the draining
//! instance steers its clients away before it closes, the others take the calls), everything
//! settles, and I1–I6 hold.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{
    Summary, approve_paced, create_product, product, submit_challenges, wait_for_progress,
};
use tokio::time::Instant;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_three_order_svc_fails_no_approval() {
    let started = Instant::now();
    let mut cluster =
        common::start(ClusterOptions::default().order_instances(ORDER_INSTANCES)).await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let hot = create_product(&mut order, "hot item", STOCK).await.unwrap();
    let ids = submit_challenges(&approval, &hot.product_id, CHALLENGES, 1, 32, SEED)
        .await
        .unwrap();

    let progress = Arc::new(AtomicU64::new(0));
    let run_started = Instant::now();
    let deploy = async {
        assert!(wait_for_progress(&progress, RESTART_AT, Duration::from_secs(60)).await);
        let began = run_started.elapsed();
        let mut steps = Vec::with_capacity(ORDER_INSTANCES);
        for n in 0..ORDER_INSTANCES {
            let instance = cluster.order_instance(n);
            let signalled = Instant::now();
            let status = instance
                .terminate(DRAIN_TIMEOUT)
                .await
                .expect("order-svc exits after SIGTERM");
            assert!(status.success(), "order-svc #{n} exited with {status}");
            let drained = signalled.elapsed();
            instance.restart().await.expect("order-svc starts again");
            steps.push(format!(
                "#{n}:drain={drained:.0?},back={:.0?}",
                signalled.elapsed()
            ));
            tokio::time::sleep(PAUSE_BETWEEN_INSTANCES).await;
        }
        let answered_by_then = progress.load(Ordering::Relaxed);
        (began, run_started.elapsed(), answered_by_then, steps)
    };
    let (run, (began, ended, answered_by_then, steps)) = tokio::join!(
        approve_paced(
            &approval,
            &ids,
            RATE,
            MAX_IN_FLIGHT,
            Duration::from_secs(10),
            Some(progress.clone())
        ),
        deploy
    );

    let settling = Instant::now();
    let (dead_letters, report) =
        common::settle_unaided(&cluster, &run.accepted, Duration::from_secs(30)).await;
    let settle = settling.elapsed();
    let stock = product(&mut order, &hot.product_id).await.unwrap().stock;
    let failed = run.outcomes.failed_approvals();

    let mut summary = Summary::new("s13 rolling restart of three order-svc");
    summary.requests = ids.len() as u64;
    summary.outcomes = run.outcomes.clone();
    summary
        .figure("failed", failed)
        .figure("restart", format!("{began:.2?}..{ended:.2?}"))
        .figure("steps", steps.join(";"))
        .figure("run", format!("{:.2?}", run.elapsed))
        .figure("p99", format!("{:.0?}", run.latency_quantile(0.99)))
        .figure("settle", format!("{settle:.2?}"))
        .figure("dead_letters", dead_letters.len())
        .figure("approved", report.challenges("APPROVED"))
        .figure("out_of_stock", report.challenges("APPROVE_FAILED"))
        .figure("stock", stock)
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    assert!(
        answered_by_then < CHALLENGES as u64,
        "the load ended before the rolling restart did ({answered_by_then} answers by then): \
         the scenario proved nothing"
    );
    assert_eq!(
        failed, 0,
        "{failed} of {CHALLENGES} approvals failed during a rolling restart: {}",
        run.outcomes
    );
    assert!(
        dead_letters.is_empty(),
        "the completer gave up on {} challenge(s), dead-lettered: {dead_letters:?}",
        dead_letters.len()
    );
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.violation_count(), 0, "{report}");
    assert_eq!(report.challenges("APPROVED"), STOCK as usize, "{report}");
    assert_eq!(report.orders("CREATED"), STOCK as usize, "{report}");
    assert_eq!(
        report.challenges("APPROVE_FAILED"),
        CHALLENGES - STOCK as usize,
        "{report}"
    );
    assert_eq!(stock, 0);
}
