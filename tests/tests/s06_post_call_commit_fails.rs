//! Scenario 6 — ghost order: order-svc created the order, but approval-svc's post-call commit
//! (APPROVING → APPROVED) fails. The failure is real, made inside approval-svc's own database: a
//! trigger rejects the first `CHALLENGES` such updates (and lets every later one through), so the
//! release binary runs unmodified. Expected: right after the approvals, orders exist for
//! challenges still APPROVING (the ghost window, visible as unsettled, not as violations);
//! after the lease the completer re-drives each one with the same key, order-svc replays the
//! order, and no ghost remains: every challenge APPROVED with exactly its one order.

mod common;

use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{Summary, approve_all, create_product, submit_challenges};
use sqlx::Connection;
use tokio::time::Instant;

const SEED: u64 = 6;
const CHALLENGES: usize = 20;

/// Installs the fault: the next `n` APPROVING → APPROVED updates of `challenges` fail. A
/// sequence counts them because it is not rolled back with the failing transaction.
async fn fail_next_approved_commits(database_url: &str, n: usize) {
    let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
    for statement in [
        "CREATE SEQUENCE lab_fault_approved_commits".to_owned(),
        format!(
            "CREATE FUNCTION lab_fault_fail_approved() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('lab_fault_approved_commits') <= {n} THEN
                     RAISE EXCEPTION 'injected: post-call commit fails';
                 END IF;
                 RETURN NEW;
             END $$"
        ),
        "CREATE TRIGGER lab_fault_fail_approved BEFORE UPDATE ON challenges FOR EACH ROW
         WHEN (OLD.status = 'APPROVING' AND NEW.status = 'APPROVED')
         EXECUTE FUNCTION lab_fault_fail_approved()"
            .to_owned(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut db)
            .await
            .unwrap();
    }
}

async fn injected_failures(database_url: &str) -> i64 {
    let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
    sqlx::query_scalar("SELECT last_value FROM lab_fault_approved_commits")
        .fetch_one(&mut db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_post_call_commit_leaves_no_ghost_after_the_completer() {
    let started = Instant::now();
    let cluster = common::start(ClusterOptions::default().seed(SEED)).await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let reward = create_product(&mut order, "reward", 1_000).await.unwrap();
    let ids = submit_challenges(&approval, &reward.product_id, CHALLENGES, 1, 16, SEED)
        .await
        .unwrap();
    fail_next_approved_commits(cluster.approval.database_url(), CHALLENGES).await;

    let run = approve_all(&approval, &ids, 4, Duration::from_secs(5), None).await;
    let window = cluster
        .check(&common::accepted(&run.accepted))
        .await
        .unwrap();
    let report = common::settled(
        &cluster,
        &common::accepted(&run.accepted),
        Duration::from_secs(30),
    )
    .await;
    let injected = injected_failures(cluster.approval.database_url()).await;

    let mut summary = Summary::new("s06 post-call commit fails");
    summary.requests = ids.len() as u64;
    summary.outcomes = run.outcomes.clone();
    summary
        .figure("injected_commit_failures", injected.min(CHALLENGES as i64))
        .figure("ghost_window_orders", window.unsettled)
        .figure("approving_after_run", window.challenges("APPROVING"))
        .figure("orders", report.orders("CREATED"))
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    // The caller saw the challenge as it stands (APPROVING), not an error.
    assert_eq!(
        run.outcomes.get("APPROVING"),
        CHALLENGES as u64,
        "{}",
        run.outcomes
    );
    // The ghost window was real: every order existed while its challenge was not APPROVED, and
    // the checker counted them as settling rather than as ghosts.
    assert_eq!(window.unsettled, CHALLENGES, "{window}");
    assert!(window.is_clean(), "{window}");
    assert!(injected >= CHALLENGES as i64);
    // Rolled forward: no ghost, exactly one order per challenge.
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CREATED"), CHALLENGES, "{report}");
}
