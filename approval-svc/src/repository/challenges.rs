//! Challenges: submission, reads, and the state transitions of the approval saga.

use std::time::Duration;

use lab_common::audit::{self, OK};
use lab_common::paging::PageRequest;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgExecutor, PgPool, Postgres};
use uuid::Uuid;

use super::attempts::FinishError;
use crate::audit::{Asked, transition_outcome};
use crate::domain::Operation;
use crate::domain::{Challenge, NewChallenge, Status, Transition};

/// The smallest UUID: `challenge_id > it` keeps the keyset condition index-friendly on the first
/// page, where `$n IS NULL OR …` would not be.
const NIL: Uuid = Uuid::nil();

/// SubmitChallenge: inserts a PENDING challenge and records `asked`'s event, in one
/// transaction.
pub async fn submit(
    pool: &PgPool,
    id: Uuid,
    new: &NewChallenge,
    asked: &Asked,
) -> sqlx::Result<Challenge> {
    let mut tx = pool.begin().await?;
    let challenge = insert(&mut *tx, id, new).await?;
    audit::record(&mut *tx, [asked.event(id, OK)]).await?;
    tx.commit().await?;
    Ok(challenge)
}

/// Inserts a PENDING challenge (no audit event: [`submit`] is the RPC's write).
pub async fn insert(
    executor: impl PgExecutor<'_>,
    id: Uuid,
    new: &NewChallenge,
) -> sqlx::Result<Challenge> {
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
    .fetch_one(executor)
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

/// RejectChallenge in one short transaction: locks the row, PENDING → REJECTED with the
/// approver and the reason, and records `asked`'s event with the outcome (`OK`, `REPLAYED` when
/// already REJECTED, else the refusal's reason).
pub async fn reject(
    pool: &PgPool,
    id: Uuid,
    approver: &str,
    reason: &str,
    asked: &Asked,
) -> sqlx::Result<Transition> {
    let change = sqlx::query_as(
        "UPDATE challenges SET status = 'REJECTED', approver = $2, decision_reason = $3,
                               updated_at = now()
         WHERE challenge_id = $1
         RETURNING *",
    )
    .bind(id)
    .bind(approver)
    .bind(reason);
    decide(
        pool,
        id,
        Operation::Reject,
        asked,
        |row| row.status() == Status::Pending,
        change,
    )
    .await
}

/// Revoke phase 1 in one short transaction: locks the row, APPROVED → REVOKING with a lease and
/// the reason, and records `asked`'s event with the outcome. The RPC's event is recorded here:
/// once REVOKING, the revoke is certain (its cancel is repeated until it succeeds).
pub async fn start_revoke(
    pool: &PgPool,
    id: Uuid,
    reason: &str,
    lease: Duration,
    asked: &Asked,
) -> sqlx::Result<Transition> {
    let change = sqlx::query_as(
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
    .bind(lease);
    decide(
        pool,
        id,
        Operation::Revoke,
        asked,
        |row| row.status() == Status::Approved,
        change,
    )
    .await
}

/// One short transaction deciding `operation` on challenge `id`: locks the row, runs `change`
/// (an UPDATE of that row `RETURNING *`) when `applies` holds for it, and records `asked`'s
/// audit event with the outcome ([`transition_outcome`]) before committing both.
async fn decide(
    pool: &PgPool,
    id: Uuid,
    operation: Operation,
    asked: &Asked,
    applies: impl FnOnce(&Challenge) -> bool,
    change: QueryAs<'_, Postgres, Challenge, PgArguments>,
) -> sqlx::Result<Transition> {
    let mut tx = pool.begin().await?;
    let current: Option<Challenge> =
        sqlx::query_as("SELECT * FROM challenges WHERE challenge_id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let transition = match current {
        None => Transition::Missing,
        Some(current) if !applies(&current) => Transition::Unchanged(current),
        Some(_) => Transition::Applied(change.fetch_one(&mut *tx).await?),
    };
    audit::record(
        &mut *tx,
        [asked.event(id, transition_outcome(operation, &transition))],
    )
    .await?;
    tx.commit().await?;
    Ok(transition)
}

/// Revoke phase 3: REVOKING → REVOKED once the order is cancelled. Idempotent: `None` when the
/// challenge is no longer REVOKING (another instance finished it). `completed_by` (the service
/// finishing on its own) records its event with the change; a caller's revoke was recorded at
/// phase 1. With `fail_commit` the transaction is rolled back instead (test failure point).
pub async fn finish_revoke(
    pool: &PgPool,
    id: Uuid,
    completed_by: Option<&Asked>,
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
    if let (Some(_), Some(asked)) = (&row, completed_by) {
        audit::record(&mut *tx, [asked.event(id, OK)]).await?;
    }
    if fail_commit {
        tx.rollback().await?;
        return Err(FinishError::Injected);
    }
    tx.commit().await?;
    Ok(row)
}

/// RequeueDeadLetter in one short transaction: locks the row, puts a dead letter back on the
/// retry schedule with a fresh attempt budget, due now, and records `asked`'s event with the
/// outcome.
pub async fn requeue(pool: &PgPool, id: Uuid, asked: &Asked) -> sqlx::Result<Transition> {
    let change = sqlx::query_as(
        "UPDATE challenges SET dead_lettered = false, budget_start = attempts,
                               next_attempt_at = now(), updated_at = now()
         WHERE challenge_id = $1
         RETURNING *",
    )
    .bind(id);
    decide(
        pool,
        id,
        Operation::Requeue,
        asked,
        |row| row.dead_lettered,
        change,
    )
    .await
}
