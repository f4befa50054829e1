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
//! | `approval_sold_out_refusals_total` | counter | attempts refused OUT_OF_STOCK without a call, the product remembered sold out (also counted in `approval_approvals_total`) |
//! | `approval_write_batch_size{write}` | histogram | requests per group-committed transaction of the saga's writes: `start` (intents) or `finish` (outcomes) |
//!
//! The checker's `consistency_*` families are recorded, described and registered in
//! [`crate::consistency::metrics`] (this module does not depend on the checker). [`register`]
//! exports every family of its own, described, before the first scrape: counters at 0 for each
//! known label value, gauges sampled once.

use std::time::Duration;

use lab_common::shutdown::Shutdown;
use lab_proto::approval::v1::FILE_DESCRIPTOR_SET;
use lab_proto::approval::v1::approval_service_server::SERVICE_NAME as APPROVAL_SERVICE;
use lab_proto::approval::v1::ops_service_server::SERVICE_NAME as OPS_SERVICE;
use metrics::{Unit, describe_counter, describe_gauge};
use sqlx::PgPool;

use crate::domain::{AttemptOutcome, FailureReason, Status};

const APPROVALS: &str = "approval_approvals_total";
const CHALLENGES: &str = "approval_challenges";
const APPROVING_OLDEST_AGE: &str = "approval_approving_oldest_age_seconds";
const DEAD_LETTERS: &str = "approval_dead_letters";
const COMPLETER_RUNS: &str = "approval_completer_runs_total";
const COMPLETER_REDRIVES: &str = "approval_completer_redrives_total";
const POOL_CONNECTIONS: &str = "db_pool_connections";
const SOLD_OUT_REFUSALS: &str = "approval_sold_out_refusals_total";

/// Installs the process's recorder (if not yet), describes every family, exports the counters
/// at 0 for each known label value (the per-RPC ones for every method and code too) and sets
/// the gauges (sampled once), so the first scrape already shows every family. Call before
/// serving `/metrics`, with [`crate::consistency::metrics::register`].
pub async fn register(pool: &PgPool) {
    lab_common::metrics_http::prometheus();
    describe();
    // Not `absolute(0)`: in tests several servers share the process's counts.
    metrics::counter!(APPROVALS, "status" => "approved", "reason" => "").increment(0);
    for reason in FailureReason::ALL {
        metrics::counter!(APPROVALS, "status" => "approve_failed", "reason" => reason.as_str())
            .increment(0);
    }
    metrics::counter!(COMPLETER_RUNS).increment(0);
    metrics::counter!(SOLD_OUT_REFUSALS).increment(0);
    for kind in ["approval", "revoke"] {
        metrics::counter!(COMPLETER_REDRIVES, "kind" => kind).increment(0);
    }
    if let Err(error) = lab_common::grpc_metrics::preinitialise(
        &[FILE_DESCRIPTOR_SET],
        &[APPROVAL_SERVICE, OPS_SERVICE],
    ) {
        tracing::warn!(%error, "the embedded descriptor set does not decode");
    }
    sample_once(pool).await;
}

fn describe() {
    metrics::describe_histogram!(
        "approval_write_batch_size",
        "Requests per group-committed transaction of the approval saga's writes, by write: start (intents) or finish (outcomes)."
    );
    describe_counter!(
        APPROVALS,
        "Approval attempts by outcome: status approved, or approve_failed with the failure reason."
    );
    describe_counter!(
        SOLD_OUT_REFUSALS,
        "Approval attempts refused OUT_OF_STOCK without a call to order-svc, the product remembered sold out (also counted in approval_approvals_total)."
    );
    describe_gauge!(CHALLENGES, "Challenges per state (sampled).");
    describe_gauge!(
        APPROVING_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest challenge in APPROVING (0 when there is none)."
    );
    describe_gauge!(DEAD_LETTERS, "Dead-lettered challenges (sampled).");
    describe_counter!(COMPLETER_RUNS, "Completer rounds run by this instance.");
    describe_counter!(
        COMPLETER_REDRIVES,
        "Challenges the completer drove, by kind: approval (stale APPROVING or due retry) or revoke."
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "Database pool connections, by pool and state (in_use, idle)."
    );
}

/// Records an attempt's outcome.
pub fn attempt_finished(outcome: &AttemptOutcome) {
    match outcome {
        AttemptOutcome::Approved { .. } => {
            metrics::counter!(APPROVALS, "status" => "approved", "reason" => "").increment(1);
        }
        AttemptOutcome::Failed { reason, .. } => {
            metrics::counter!(
                APPROVALS,
                "status" => "approve_failed",
                "reason" => reason.as_str()
            )
            .increment(1);
        }
    }
}

/// Records an attempt refused OUT_OF_STOCK from the sold-out memory, without a call.
pub fn refused_sold_out() {
    metrics::counter!(APPROVALS, "status" => "approve_failed", "reason" => FailureReason::OutOfStock.as_str())
        .increment(1);
    metrics::counter!(SOLD_OUT_REFUSALS).increment(1);
}

/// Records one group-committed batch of `write` (`start` or `finish`) holding `requests`.
pub fn write_batch(write: &'static str, requests: usize) {
    metrics::histogram!("approval_write_batch_size", "write" => write).record(requests as f64);
}

/// Records a completer round and what it claimed.
pub fn completer_round(approvals: usize, revokes: usize) {
    metrics::counter!(COMPLETER_RUNS).increment(1);
    metrics::counter!(COMPLETER_REDRIVES, "kind" => "approval").increment(approvals as u64);
    metrics::counter!(COMPLETER_REDRIVES, "kind" => "revoke").increment(revokes as u64);
}

/// Samples the gauges every `interval` until `shutdown`.
pub async fn sample(pool: PgPool, interval: Duration, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.triggered() => return,
        }
        sample_once(&pool).await;
    }
}

async fn sample_once(pool: &PgPool) {
    let idle = pool.num_idle() as f64;
    metrics::gauge!(POOL_CONNECTIONS, "pool" => "approval", "state" => "idle").set(idle);
    metrics::gauge!(POOL_CONNECTIONS, "pool" => "approval", "state" => "in_use")
        .set(f64::from(pool.size()) - idle);
    if let Err(error) = sample_states(pool).await {
        tracing::warn!(%error, "sampling challenge states failed");
    }
}

async fn sample_states(pool: &PgPool) -> sqlx::Result<()> {
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM challenges GROUP BY status")
            .fetch_all(pool)
            .await?;
    for state in Status::ALL.map(Status::as_str) {
        let count = counts
            .iter()
            .find(|(status, _)| status == state)
            .map_or(0, |(_, count)| *count);
        metrics::gauge!(CHALLENGES, "status" => state).set(count as f64);
    }
    let (dead_letters, oldest_approving): (i64, Option<f64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM challenges WHERE dead_lettered),
                (SELECT EXTRACT(EPOCH FROM now() - min(updated_at))::float8
                 FROM challenges WHERE status = 'APPROVING')",
    )
    .fetch_one(pool)
    .await?;
    metrics::gauge!(DEAD_LETTERS).set(dead_letters as f64);
    metrics::gauge!(APPROVING_OLDEST_AGE).set(oldest_approving.unwrap_or(0.0));
    Ok(())
}
