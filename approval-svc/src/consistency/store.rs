//! The checker's SQL: what changed, the repairs it may make, its watermark and its incidents.
//! Every repair is one conditional statement, so it is a no-op when a saga or completer moved
//! the challenge on in the meantime; a repair that changed its row records its audit event in
//! the same transaction.

use chrono::{DateTime, Utc};
use lab_common::audit::{self, AuditEvent};
use sqlx::PgPool;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use uuid::Uuid;

use super::report::Violation;
use crate::audit::Asked;
use crate::domain::{Challenge, FailureReason};

const WATERMARK: &str = "default";

/// The database's clock: every timestamp the checker compares comes from it.
pub async fn now(pool: &PgPool) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await
}

/// Where the last incremental check got to.
pub async fn watermark(pool: &PgPool) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT checked_to FROM consistency_watermarks WHERE name = $1")
        .bind(WATERMARK)
        .fetch_optional(pool)
        .await
}

/// Records how far a check got.
pub async fn set_watermark(pool: &PgPool, checked_to: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO consistency_watermarks (name, checked_to) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET checked_to = GREATEST(consistency_watermarks.checked_to, $2)",
    )
    .bind(WATERMARK)
    .bind(checked_to)
    .execute(pool)
    .await
    .map(drop)
}

/// One page (id order) of challenges past PENDING that changed at or after `since` (all of
/// them when `None`).
pub async fn changed_challenges(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
    after: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<Challenge>> {
    sqlx::query_as(
        "SELECT * FROM challenges
         WHERE status NOT IN ('PENDING', 'REJECTED')
           AND ($1::timestamptz IS NULL OR updated_at >= $1)
           AND challenge_id > $2
         ORDER BY challenge_id LIMIT $3",
    )
    .bind(since)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One page (id order) of challenges in flight (APPROVING, REVOKING) whose lease ran out
/// before `expired_before`, however long ago they last changed. They are few (the partial index
/// on `lease_expires_at` covers only in-flight rows), and stuck ones are never updated again,
/// so no watermark may hide them.
pub async fn stuck_challenges(
    pool: &PgPool,
    expired_before: DateTime<Utc>,
    after: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<Challenge>> {
    sqlx::query_as(
        "SELECT * FROM challenges
         WHERE status IN ('APPROVING', 'REVOKING') AND lease_expires_at < $1
           AND challenge_id > $2
         ORDER BY challenge_id LIMIT $3",
    )
    .bind(expired_before)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Challenges by id (those named by open incidents, re-checked every time).
pub async fn challenges_by_ids(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<Challenge>> {
    sqlx::query_as("SELECT * FROM challenges WHERE challenge_id = ANY($1) ORDER BY challenge_id")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// The challenge that owns an idempotency key.
pub async fn challenge_by_key(pool: &PgPool, key: &str) -> sqlx::Result<Option<Challenge>> {
    sqlx::query_as("SELECT * FROM challenges WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// Runs one repair (a conditional UPDATE of one row) and, when it changed the row, records
/// `event` in the same transaction; true when it did.
async fn heal(
    pool: &PgPool,
    repair: Query<'_, sqlx::Postgres, PgArguments>,
    event: AuditEvent,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let healed = repair.execute(&mut *tx).await?.rows_affected() == 1;
    if healed {
        audit::record(&mut *tx, [event]).await?;
    }
    tx.commit().await?;
    Ok(healed)
}

/// APPROVE_FAILED, or APPROVING past its lease, whose order exists after all → APPROVED,
/// recorded for `asked` with outcome `OK`.
pub async fn roll_forward(
    pool: &PgPool,
    challenge_id: Uuid,
    key: &str,
    order_id: Uuid,
    asked: &Asked,
) -> sqlx::Result<bool> {
    let repair = sqlx::query(
        "UPDATE challenges
         SET status = 'APPROVED', order_id = $3, failure_reason = NULL, failure_message = '',
             dead_lettered = false, next_attempt_at = NULL, lease_expires_at = NULL,
             updated_at = now()
         WHERE challenge_id = $1 AND idempotency_key = $2
           AND (status = 'APPROVE_FAILED' OR (status = 'APPROVING' AND lease_expires_at < now()))",
    )
    .bind(challenge_id)
    .bind(key)
    .bind(order_id);
    heal(pool, repair, asked.event(challenge_id, audit::OK)).await
}

/// APPROVING past its lease whose order under `key` was cancelled outside the saga →
/// APPROVE_FAILED with ORDER_CANCELLED, definitive (no retry scheduled), as the saga records a
/// replayed order that is not CREATED; recorded for `asked` with that reason.
pub async fn fail_order_cancelled(
    pool: &PgPool,
    challenge_id: Uuid,
    key: &str,
    asked: &Asked,
) -> sqlx::Result<bool> {
    let reason = FailureReason::OrderCancelled.as_str();
    let repair = sqlx::query(
        "UPDATE challenges
         SET status = 'APPROVE_FAILED', failure_reason = $3, failure_message = $4,
             dead_lettered = false, next_attempt_at = NULL, lease_expires_at = NULL,
             updated_at = now()
         WHERE challenge_id = $1 AND idempotency_key = $2
           AND status = 'APPROVING' AND lease_expires_at < now()",
    )
    .bind(challenge_id)
    .bind(key)
    .bind(reason)
    .bind("the order under this challenge's key was cancelled outside the saga");
    heal(pool, repair, asked.event(challenge_id, reason)).await
}

/// A transient failure that is neither scheduled nor dead-lettered would never be retried:
/// put it back on the schedule, due now; recorded for `asked` with outcome `OK`.
pub async fn reschedule_lost(
    pool: &PgPool,
    challenge_id: Uuid,
    asked: &Asked,
) -> sqlx::Result<bool> {
    let repair = sqlx::query(
        "UPDATE challenges SET next_attempt_at = now(), updated_at = now()
         WHERE challenge_id = $1 AND status = 'APPROVE_FAILED' AND NOT dead_lettered
           AND next_attempt_at IS NULL
           AND failure_reason = ANY($2)",
    )
    .bind(challenge_id)
    // The transient reasons, spelled by the one vocabulary rather than re-typed in SQL.
    .bind(
        FailureReason::ALL
            .into_iter()
            .filter(|reason| reason.is_transient())
            .map(FailureReason::as_str)
            .collect::<Vec<_>>(),
    );
    heal(pool, repair, asked.event(challenge_id, audit::OK)).await
}

/// An incident still open.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenIncident {
    /// Its identity.
    pub dedup_key: String,
    /// The challenge it is about.
    pub challenge_id: Option<Uuid>,
    /// The order it is about.
    pub order_id: Option<Uuid>,
    /// The product it is about.
    pub product_id: Option<Uuid>,
}

impl OpenIncident {
    /// What it is about: the id its dedup key names (see [`Violation::dedup_key`]).
    pub fn subject(&self) -> Option<Uuid> {
        self.challenge_id.or(self.order_id).or(self.product_id)
    }
}

/// Every open incident.
pub async fn open_incidents(pool: &PgPool) -> sqlx::Result<Vec<OpenIncident>> {
    sqlx::query_as(
        "SELECT dedup_key, challenge_id, order_id, product_id FROM consistency_incidents
         WHERE resolved_at IS NULL",
    )
    .fetch_all(pool)
    .await
}

/// Whether an incident was already open when a check saw it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First sighting (or first since it was resolved): alert it.
    New,
    /// Alerted before and still open: do not page again.
    AlreadyOpen,
}

/// Records that `violation` was seen; a healed one is closed at once.
pub async fn record_incident(pool: &PgPool, violation: &Violation) -> sqlx::Result<Seen> {
    let mut tx = pool.begin().await?;
    let open: Option<bool> = sqlx::query_scalar(
        "SELECT resolved_at IS NULL FROM consistency_incidents WHERE dedup_key = $1 FOR UPDATE",
    )
    .bind(violation.dedup_key())
    .fetch_optional(&mut *tx)
    .await?;
    let seen = if open == Some(true) {
        Seen::AlreadyOpen
    } else {
        Seen::New
    };
    sqlx::query(
        "INSERT INTO consistency_incidents
             (dedup_key, invariant, challenge_id, order_id, product_id, detail, resolved_at)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN now() END)
         ON CONFLICT (dedup_key) DO UPDATE
         SET detail = EXCLUDED.detail, last_seen_at = now(),
             opened_at = CASE WHEN $8 THEN consistency_incidents.opened_at ELSE now() END,
             resolved_at = EXCLUDED.resolved_at",
    )
    .bind(violation.dedup_key())
    .bind(violation.invariant.code())
    .bind(violation.challenge_id)
    .bind(violation.order_id)
    .bind(violation.product_id)
    .bind(&violation.detail)
    .bind(violation.healed)
    .bind(seen == Seen::AlreadyOpen)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(seen)
}

/// Closes an open incident seen holding; true when it was open.
pub async fn resolve_incident(pool: &PgPool, dedup_key: &str) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE consistency_incidents SET resolved_at = now()
         WHERE dedup_key = $1 AND resolved_at IS NULL",
    )
    .bind(dedup_key)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}
