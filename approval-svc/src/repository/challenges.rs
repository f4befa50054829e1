//! Challenges: submission, reads, and the state transitions of the approval saga.

use std::time::Duration;

use lab_common::paging::PageRequest;
use sqlx::PgPool;
use uuid::Uuid;

use super::attempts::FinishError;
use crate::domain::{Challenge, NewChallenge, Status, Transition};

/// The smallest UUID: `challenge_id > it` keeps the keyset condition index-friendly on the first
/// page, where `$n IS NULL OR …` would not be.
const NIL: Uuid = Uuid::nil();

/// Inserts a PENDING challenge.
pub async fn insert(pool: &PgPool, id: Uuid, new: &NewChallenge) -> sqlx::Result<Challenge> {
    sqlx::query_as(
        "INSERT INTO challenges (challenge_id, user_id, product_id, quantity, title, status)
         VALUES ($1, $2, $3, $4, $5, 'PENDING')
         RETURNING *",
    )
    .bind(id)
    .bind(new.user_id)
    .bind(new.product_id)
    .bind(new.quantity)
    .bind(&new.title)
    .fetch_one(pool)
    .await
}

/// One challenge.
pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Challenge>> {
    sqlx::query_as("SELECT * FROM challenges WHERE challenge_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A page of challenges in id order, optionally in one state and of one user (rows:
/// `page.fetch_limit()`).
pub async fn list(
    pool: &PgPool,
    status: Option<Status>,
    user_id: Option<Uuid>,
    page: &PageRequest,
) -> sqlx::Result<Vec<Challenge>> {
    let after = page.after.unwrap_or(NIL);
    match status {
        Some(status) => {
            sqlx::query_as(
                "SELECT * FROM challenges
                 WHERE status = $1 AND challenge_id > $2
                   AND ($4::uuid IS NULL OR user_id = $4)
                 ORDER BY challenge_id LIMIT $3",
            )
            .bind(status.as_str())
            .bind(after)
            .bind(page.fetch_limit())
            .bind(user_id)
            .fetch_all(pool)
            .await
        }
        None => {
            sqlx::query_as(
                "SELECT * FROM challenges
                 WHERE challenge_id > $1 AND ($3::uuid IS NULL OR user_id = $3)
                 ORDER BY challenge_id LIMIT $2",
            )
            .bind(after)
            .bind(page.fetch_limit())
            .bind(user_id)
            .fetch_all(pool)
            .await
        }
    }
}

/// A page of dead letters in id order.
pub async fn list_dead_letters(pool: &PgPool, page: &PageRequest) -> sqlx::Result<Vec<Challenge>> {
    sqlx::query_as(
        "SELECT * FROM challenges
         WHERE dead_lettered AND challenge_id > $1
         ORDER BY challenge_id LIMIT $2",
    )
    .bind(page.after.unwrap_or(NIL))
    .bind(page.fetch_limit())
    .fetch_all(pool)
    .await
}

/// PENDING → REJECTED in one conditional statement; `None` when not PENDING (or missing).
pub async fn reject(
    pool: &PgPool,
    id: Uuid,
    approver: &str,
    reason: &str,
) -> sqlx::Result<Option<Challenge>> {
    sqlx::query_as(
        "UPDATE challenges SET status = 'REJECTED', approver = $2, decision_reason = $3,
                               updated_at = now()
         WHERE challenge_id = $1 AND status = 'PENDING'
         RETURNING *",
    )
    .bind(id)
    .bind(approver)
    .bind(reason)
    .fetch_optional(pool)
    .await
}

/// Revoke phase 1, in one short transaction: APPROVED → REVOKING with a lease and the reason.
pub async fn start_revoke(
    pool: &PgPool,
    id: Uuid,
    reason: &str,
    lease: Duration,
) -> sqlx::Result<Transition> {
    let mut tx = pool.begin().await?;
    let current: Option<Challenge> =
        sqlx::query_as("SELECT * FROM challenges WHERE challenge_id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let transition = match current {
        None => Transition::Missing,
        Some(current) if current.status() != Status::Approved => Transition::Unchanged(current),
        Some(_) => Transition::Applied(
            sqlx::query_as(
                "UPDATE challenges SET
                     status = 'REVOKING',
                     decision_reason = $2,
                     lease_expires_at = now() + $3::interval,
                     updated_at = now()
                 WHERE challenge_id = $1
                 RETURNING *",
            )
            .bind(id)
            .bind(reason)
            .bind(lease)
            .fetch_one(&mut *tx)
            .await?,
        ),
    };
    tx.commit().await?;
    Ok(transition)
}

/// Revoke phase 3: REVOKING → REVOKED once the order is cancelled. Idempotent: `None` when the
/// challenge is no longer REVOKING (another instance finished it). With `fail_commit` the
/// transaction is rolled back instead (test failure point).
pub async fn finish_revoke(
    pool: &PgPool,
    id: Uuid,
    fail_commit: bool,
) -> Result<Option<Challenge>, FinishError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as(
        "UPDATE challenges SET status = 'REVOKED', lease_expires_at = NULL, updated_at = now()
         WHERE challenge_id = $1 AND status = 'REVOKING'
         RETURNING *",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if fail_commit {
        tx.rollback().await?;
        return Err(FinishError::Injected);
    }
    tx.commit().await?;
    Ok(row)
}

/// Puts a dead letter back on the retry schedule with a fresh attempt budget, due now; `None`
/// when the challenge is not a dead letter (or missing).
pub async fn requeue(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Challenge>> {
    sqlx::query_as(
        "UPDATE challenges SET dead_lettered = false, budget_start = attempts,
                               next_attempt_at = now(), updated_at = now()
         WHERE challenge_id = $1 AND dead_lettered
         RETURNING *",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}
