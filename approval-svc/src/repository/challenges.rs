//! Challenges: submission, reads, and the state transitions of the approval saga.

use std::time::Duration;

use lab_common::paging::PageRequest;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Challenge, FailureReason, NewChallenge, Status};

/// The smallest UUID: `challenge_id > it` keeps the keyset condition index-friendly on the first
/// page, where `$n IS NULL OR …` would not be.
const NIL: Uuid = Uuid::nil();

/// What a locking transition found.
#[derive(Debug)]
pub enum Transition {
    /// The transition was applied; the row after it.
    Applied(Challenge),
    /// The row was in another state and was left alone; the row as it stands.
    Unchanged(Challenge),
    /// No such challenge.
    Missing,
}

/// The outcome written by the post-call transaction of an approval attempt.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    /// The order exists: APPROVED.
    Approved {
        /// The order created (or replayed) for the challenge's key.
        order_id: Uuid,
    },
    /// The order could not be created: APPROVE_FAILED.
    Failed {
        /// Why.
        reason: FailureReason,
        /// Detail for people.
        message: String,
        /// What happens next.
        next: NextStep,
        /// Whether the attempt counts against the retry budget: false when the call never left
        /// the process (refused by the local breaker or load shedding).
        charged: bool,
    },
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// An automatic retry after this delay.
    RetryAfter(Duration),
    /// Automatic retries are used up: a dead letter.
    DeadLetter,
    /// A definitive refusal: nothing automatic.
    Stop,
}

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

/// A page of challenges in id order, optionally in one state (rows: `page.fetch_limit()`).
pub async fn list(
    pool: &PgPool,
    status: Option<Status>,
    page: &PageRequest,
) -> sqlx::Result<Vec<Challenge>> {
    let after = page.after.unwrap_or(NIL);
    match status {
        Some(status) => {
            sqlx::query_as(
                "SELECT * FROM challenges
                 WHERE status = $1 AND challenge_id > $2
                 ORDER BY challenge_id LIMIT $3",
            )
            .bind(status.as_str())
            .bind(after)
            .bind(page.fetch_limit())
            .fetch_all(pool)
            .await
        }
        None => {
            sqlx::query_as(
                "SELECT * FROM challenges WHERE challenge_id > $1 ORDER BY challenge_id LIMIT $2",
            )
            .bind(after)
            .bind(page.fetch_limit())
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

/// Phase 1 of an approval attempt, in one short transaction: locks the row and, when it is in
/// one of `from`, moves it to APPROVING with a fresh lease, counts the attempt, records the
/// approver (when given) and assigns the idempotency key unless it has one (then it is kept).
///
/// The one exception: after ORDER_CANCELLED the order under the old key is terminal (cancelled
/// orders never come back), so the key can only replay that cancelled order; the attempt takes
/// `new_key` instead, and no ghost can arise from the old one. The new key's story also gets a
/// fresh retry budget, as the old key's attempts say nothing about it.
pub async fn start_attempt(
    pool: &PgPool,
    id: Uuid,
    from: &[Status],
    approver: Option<&str>,
    new_key: &str,
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
        Some(current) if !from.contains(&current.status()) => Transition::Unchanged(current),
        Some(current) => Transition::Applied(
            sqlx::query_as(
                "UPDATE challenges SET
                     status = 'APPROVING',
                     idempotency_key = CASE WHEN $5 THEN $2
                                            ELSE COALESCE(idempotency_key, $2) END,
                     budget_start = CASE WHEN $5 THEN attempts ELSE budget_start END,
                     attempts = attempts + 1,
                     approver = COALESCE($3, approver),
                     lease_expires_at = now() + $4::interval,
                     failure_reason = NULL,
                     failure_message = '',
                     dead_lettered = false,
                     next_attempt_at = NULL,
                     updated_at = now()
                 WHERE challenge_id = $1
                 RETURNING *",
            )
            .bind(id)
            .bind(new_key)
            .bind(approver)
            .bind(lease)
            .bind(current.failure_reason() == Some(FailureReason::OrderCancelled))
            .fetch_one(&mut *tx)
            .await?,
        ),
    };
    tx.commit().await?;
    Ok(transition)
}

/// Phase 3 of an approval attempt: writes the outcome, but only if the challenge is still
/// APPROVING under this attempt (`attempts` is the fencing token). `None` when a newer attempt
/// (a completer that took over after the lease) owns it now. With `fail_commit` the
/// transaction is rolled back instead of committed (test failure point).
///
/// `attempts` counts every attempt started and only grows, so it fences whatever happens;
/// `attempts - budget_start` is what the retry budget charges. An attempt that is not
/// `charged` moves `budget_start` up by one with it, leaving the charge as it was.
pub async fn finish_attempt(
    pool: &PgPool,
    id: Uuid,
    attempt: i32,
    outcome: &AttemptOutcome,
    fail_commit: bool,
) -> Result<Option<Challenge>, FinishError> {
    let mut tx = pool.begin().await?;
    let row: Option<Challenge> = match outcome {
        AttemptOutcome::Approved { order_id } => {
            sqlx::query_as(
                "UPDATE challenges SET
                     status = 'APPROVED',
                     order_id = $3,
                     lease_expires_at = NULL,
                     updated_at = now()
                 WHERE challenge_id = $1 AND status = 'APPROVING' AND attempts = $2
                 RETURNING *",
            )
            .bind(id)
            .bind(attempt)
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?
        }
        AttemptOutcome::Failed {
            reason,
            message,
            next,
            charged,
        } => {
            let retry_after = match next {
                NextStep::RetryAfter(delay) => Some(*delay),
                NextStep::DeadLetter | NextStep::Stop => None,
            };
            sqlx::query_as(
                "UPDATE challenges SET
                     status = 'APPROVE_FAILED',
                     failure_reason = $3,
                     failure_message = $4,
                     next_attempt_at = now() + $5::interval,
                     dead_lettered = $6,
                     budget_start = budget_start + CASE WHEN $7 THEN 0 ELSE 1 END,
                     lease_expires_at = NULL,
                     updated_at = now()
                 WHERE challenge_id = $1 AND status = 'APPROVING' AND attempts = $2
                 RETURNING *",
            )
            .bind(id)
            .bind(attempt)
            .bind(reason.as_str())
            .bind(message)
            .bind(retry_after)
            .bind(*next == NextStep::DeadLetter)
            .bind(*charged)
            .fetch_optional(&mut *tx)
            .await?
        }
    };
    if fail_commit {
        tx.rollback().await?;
        return Err(FinishError::Injected);
    }
    tx.commit().await?;
    Ok(row)
}

/// Why a final write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A test failure point rolled the transaction back.
    #[error("commit failed on purpose (failure point)")]
    Injected,
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
