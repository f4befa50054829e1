//! The completer's claim: take a lease on due work in one short statement.

use std::time::Duration;

use sqlx::PgPool;

use crate::domain::Challenge;

/// Claims up to `limit` challenges that need the completer, each under a fresh lease, in one
/// statement (its own short transaction):
///
/// - APPROVING past its lease (the instance crashed, or its post-call write failed) and
///   APPROVE_FAILED with a retry due (only when `include_retries`) become APPROVING with one more
///   attempt, so the new attempt fences off any late write of the old one;
/// - REVOKING past its lease keeps its state and gets a new lease.
///
/// Stuck work (no `next_attempt_at`) comes first, then the retries due longest: when a round
/// may claim only a few (the breaker's probes during an outage), the probes rotate over the
/// due challenges instead of spending one challenge's budget again and again.
///
/// `FOR UPDATE SKIP LOCKED` lets several instances claim at once without waiting on each other
/// or claiming the same row; a row another instance claimed meanwhile no longer matches (its
/// lease is in the future), as PostgreSQL re-checks the condition on the locked version.
pub async fn claim_due(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
    include_retries: bool,
) -> sqlx::Result<Vec<Challenge>> {
    sqlx::query_as(
        "WITH due AS (
             SELECT challenge_id FROM challenges
             WHERE (status IN ('APPROVING', 'REVOKING') AND lease_expires_at <= now())
                OR ($3 AND status = 'APPROVE_FAILED' AND NOT dead_lettered
                    AND next_attempt_at <= now())
             ORDER BY next_attempt_at NULLS FIRST, challenge_id
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE challenges c SET
             status = CASE WHEN c.status = 'REVOKING' THEN 'REVOKING' ELSE 'APPROVING' END,
             attempts = CASE WHEN c.status = 'REVOKING' THEN c.attempts ELSE c.attempts + 1 END,
             lease_expires_at = now() + $2::interval,
             failure_reason = NULL,
             failure_message = '',
             next_attempt_at = NULL,
             updated_at = now()
         FROM due
         WHERE c.challenge_id = due.challenge_id
         RETURNING c.*",
    )
    .bind(limit)
    .bind(lease)
    .bind(include_retries)
    .fetch_all(pool)
    .await
}
