//! Scenario 7 — crash of the shop under load: `kill -9` order-svc 30 % of the way through a
//! 2 000-approval run paced at 400 approvals/s (about 5 s), restart it on the same port and
//! database a second later. Expected: the
//! approvals in flight and during the outage fail transiently (never an error to the caller),
//! automatic retries alone roll them forward after the restart (nothing dead-lettered, nothing
//! requeued, no consistency check healing), and the end state is exact: `STOCK` approvals, the rest OUT_OF_STOCK, stock zero,
//! I1–I6 holding.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{
    Summary, approve_paced, create_product, product, submit_challenges, wait_for_progress,
};
use tokio::time::Instant;

const SEED: u64 = 7;
const CHALLENGES: usize = 2_000;
const STOCK: i64 = 1_800;
const RATE: f64 = 400.0;
const MAX_IN_FLIGHT: usize = 64;
const KILL_AT: u64 = 600;
const OUTAGE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_order_svc_mid_run_keeps_the_invariants() {
    let started = Instant::now();
    let mut cluster = common::start(ClusterOptions::default().seed(SEED)).await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let hot = create_product(&mut order, "hot item", STOCK).await.unwrap();
    let ids = submit_challenges(&approval, &hot.product_id, CHALLENGES, 1, 32, SEED)
        .await
        .unwrap();

    let progress = Arc::new(AtomicU64::new(0));
    let run_started = Instant::now();
    let shop = &mut cluster.order;
    let crash = async {
        assert!(wait_for_progress(&progress, KILL_AT, Duration::from_secs(120)).await);
        let killed_at = run_started.elapsed();
        shop.kill().await.expect("kill -9 order-svc");
        tokio::time::sleep(OUTAGE).await;
        shop.restart().await.expect("order-svc restarts");
        killed_at
    };
    let (run, killed_at) = tokio::join!(
        approve_paced(
            &approval,
            &ids,
            RATE,
            MAX_IN_FLIGHT,
            Duration::from_secs(10),
            Some(progress.clone())
        ),
        crash
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let (dead_letters, report) =
        common::settle_unaided(&cluster, &run.accepted, Duration::from_secs(60)).await;
    let stock = product(&mut order, &hot.product_id).await.unwrap().stock;

    let mut summary = Summary::new("s07 kill -9 order-svc");
    summary.requests = ids.len() as u64;
    summary.outcomes = run.outcomes.clone();
    summary
        .figure("killed_at", format!("{killed_at:.2?}"))
        .figure("run", format!("{:.2?}", run.elapsed))
        .figure(
            "throughput",
            format!("{:.0}/s", ids.len() as f64 / run.elapsed.as_secs_f64()),
        )
        .figure("dead_letters", dead_letters.len())
        .figure("approved", report.challenges("APPROVED"))
        .figure("out_of_stock", report.challenges("APPROVE_FAILED"))
        .figure("stock", stock)
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    assert_eq!(run.outcomes.starting_with("error/"), 0, "{}", run.outcomes);
    assert!(
        run.outcomes.starting_with("APPROVE_FAILED/")
            > run.outcomes.get("APPROVE_FAILED/OUT_OF_STOCK"),
        "the crash caused no transient failure: {}",
        run.outcomes
    );
    // Nothing requeued: every transient failure must be finished by the automatic retries.
    assert!(
        dead_letters.is_empty(),
        "the completer gave up on {} challenge(s), dead-lettered: {dead_letters:?}",
        dead_letters.len()
    );
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), STOCK as usize, "{report}");
    assert_eq!(report.orders("CREATED"), STOCK as usize, "{report}");
    assert_eq!(
        report.challenges("APPROVE_FAILED"),
        CHALLENGES - STOCK as usize,
        "{report}"
    );
    assert_eq!(stock, 0);
}
