//! Scenario 6 — ghost order: order-svc created the order, but approval-svc's post-call commit
//! (APPROVING → APPROVED) fails. The failure is real, made inside approval-svc's own database: a
//! trigger rejects the first `CHALLENGES` such updates (and lets every later one through), so the
//! release binary runs unmodified. Expected: right after the approvals, orders exist for
//! challenges still APPROVING (the ghost window, visible as unsettled, not as violations);
//! after the lease the completer re-drives each one with the same key, order-svc replays the
//! order, and no ghost remains: every challenge APPROVED with exactly its one order.

mod common;

use std::time::Duration;

use lab_drill::engine::{Action, At, Drill, DrillError, Hook, Pacing, Scenario, Settle, Workload};
use sqlx::Connection;

const SEED: u64 = 6;
const CHALLENGES: usize = 20;

/// Installs the fault: the next `CHALLENGES` APPROVING → APPROVED updates of `challenges`
/// fail. A sequence counts them because it is not rolled back with the failing transaction.
async fn fail_next_approved_commits(drill: &mut Drill) -> Result<(), DrillError> {
    let n = CHALLENGES;
    let mut db = sqlx::PgConnection::connect(drill.cluster.approval.database_url()).await?;
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
            .await?;
    }
    Ok(())
}

async fn injected_failures(database_url: &str) -> i64 {
    let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
    sqlx::query_scalar("SELECT last_value FROM lab_fault_approved_commits")
        .fetch_one(&mut db)
        .await
        .unwrap()
}

fn scenario() -> Scenario {
    Scenario::new("s06", "s06 post-call commit fails", SEED)
        .workload(
            Workload::new(CHALLENGES, 1_000, Pacing::Concurrent { concurrency: 4 })
                .submit_concurrency(16)
                .deadline(Duration::from_secs(5)),
        )
        .before_load(Action::Custom(Hook::new(|drill| {
            Box::pin(fail_next_approved_commits(drill))
        })))
        .at(At::LoadDone(Duration::ZERO), Action::checked("window"))
        .settle(Settle {
            timeout: Duration::from_secs(30),
            ..Settle::default()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_post_call_commit_leaves_no_ghost_after_the_completer() {
    let mut outcome = common::drill(scenario()).await;
    // The database outlives the drill's processes.
    let injected = injected_failures(&outcome.approval_database_url).await;
    let window = outcome.snapshot("window").report().clone();
    outcome
        .summary
        .figure("injected_commit_failures", injected.min(CHALLENGES as i64))
        .figure("ghost_window_orders", window.unsettled)
        .figure("approving_after_run", window.challenges("APPROVING"));
    common::finish(&outcome);

    let (run, report) = (&outcome.run, &outcome.report);
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
