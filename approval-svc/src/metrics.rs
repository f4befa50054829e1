//! approval-svc's own metrics (besides `grpc_server_*` per RPC and the resilience stack's
//! `resilience_*` client metrics, and the checker's `consistency_*`):
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `approval_approvals_total{status, reason}` | counter | attempts by outcome: `approved`, or `approve_failed` with the failure reason |
//! | `approval_challenges{status}` | gauge | challenges per state (sampled) |
//! | `approval_approving_oldest_age_seconds` | gauge | age of the oldest APPROVING challenge's attempt |
//! | `approval_dead_letters` | gauge | dead-lettered challenges |
//! | `approval_completer_runs_total` | counter | completer rounds |
//! | `approval_completer_redrives_total{kind}` | counter | challenges the completer drove: `approval` (stale APPROVING or due retry) or `revoke` |
//! | `db_pool_connections{pool="approval",state}` | gauge | pool connections `in_use` / `idle` |
//! | `approval_write_batch_size{write}` | histogram | requests per group-committed transaction of the saga's writes: `start` (intents) or `finish` (outcomes) |

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::repository::AttemptOutcome;

/// Records an attempt's outcome.
pub fn attempt_finished(outcome: &AttemptOutcome) {
    match outcome {
        AttemptOutcome::Approved { .. } => {
            metrics::counter!("approval_approvals_total", "status" => "approved", "reason" => "")
                .increment(1);
        }
        AttemptOutcome::Failed { reason, .. } => {
            metrics::counter!(
                "approval_approvals_total",
                "status" => "approve_failed",
                "reason" => reason.as_str()
            )
            .increment(1);
        }
    }
}

/// HELP text of the families recorded here that need it (idempotent; a no-op before the
/// recorder is installed).
pub fn describe() {
    metrics::describe_histogram!(
        "approval_write_batch_size",
        "Requests per group-committed transaction of the approval saga's writes, by write: start (intents) or finish (outcomes)."
    );
}

/// Records one group-committed batch of `write` (`start` or `finish`) holding `requests`.
pub fn write_batch(write: &'static str, requests: usize) {
    metrics::histogram!("approval_write_batch_size", "write" => write).record(requests as f64);
}

/// Records a completer round and what it claimed.
pub fn completer_round(approvals: usize, revokes: usize) {
    metrics::counter!("approval_completer_runs_total").increment(1);
    metrics::counter!("approval_completer_redrives_total", "kind" => "approval")
        .increment(approvals as u64);
    metrics::counter!("approval_completer_redrives_total", "kind" => "revoke")
        .increment(revokes as u64);
}

const STATES: [&str; 7] = [
    "PENDING",
    "APPROVING",
    "APPROVED",
    "APPROVE_FAILED",
    "REJECTED",
    "REVOKING",
    "REVOKED",
];

/// Samples the gauges every `interval` until `shutdown`.
pub async fn sample(pool: PgPool, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let idle = pool.num_idle() as f64;
        metrics::gauge!("db_pool_connections", "pool" => "approval", "state" => "idle").set(idle);
        metrics::gauge!("db_pool_connections", "pool" => "approval", "state" => "in_use")
            .set(f64::from(pool.size()) - idle);
        if let Err(error) = sample_states(&pool).await {
            tracing::warn!(%error, "sampling challenge states failed");
        }
    }
}

async fn sample_states(pool: &PgPool) -> sqlx::Result<()> {
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM challenges GROUP BY status")
            .fetch_all(pool)
            .await?;
    for state in STATES {
        let count = counts
            .iter()
            .find(|(status, _)| status == state)
            .map_or(0, |(_, count)| *count);
        metrics::gauge!("approval_challenges", "status" => state).set(count as f64);
    }
    let (dead_letters, oldest_approving): (i64, Option<f64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM challenges WHERE dead_lettered),
                (SELECT EXTRACT(EPOCH FROM now() - min(updated_at))::float8
                 FROM challenges WHERE status = 'APPROVING')",
    )
    .fetch_one(pool)
    .await?;
    metrics::gauge!("approval_dead_letters").set(dead_letters as f64);
    metrics::gauge!("approval_approving_oldest_age_seconds").set(oldest_approving.unwrap_or(0.0));
    Ok(())
}
