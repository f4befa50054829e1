//! The two writes of an approval attempt, for one challenge or for a batch of them in one
//! transaction: phase 1 (the intent: APPROVING, key, attempt, lease) and phase 3 (the outcome,
//! fenced by `attempts`). A batch answers each request as if, for each challenge, the request
//! that applies ran first and the others right after it; see `docs/decisions.md` ("Issue 11:
//! approval-svc group commit"). Each write also records its requests' audit events, in one
//! insert per batch (see [`crate::audit`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use lab_common::audit;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::audit::{Asked, attempt_outcome, transition_outcome};
use crate::domain::Operation;
use crate::domain::{AttemptOutcome, Challenge, FailureReason, NextStep, Status, Transition};

/// Phase 1 of one approval attempt (see [`start_attempt`]).
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// The challenge.
    pub id: Uuid,
    /// The states the attempt may start from.
    pub from: &'static [Status],
    /// What the caller asked: decides the outcome recorded when the attempt does not start.
    pub operation: Operation,
    /// Who asked, for the audit event of a request that does not start (one that starts
    /// records at its outcome write).
    pub asked: Asked,
    /// The approver to record, if any.
    pub approver: Option<String>,
    /// The idempotency key to assign when the challenge has none (or after ORDER_CANCELLED).
    pub new_key: String,
    /// The attempt's lease.
    pub lease: Duration,
}

/// Phase 3 of one approval attempt (see [`finish_attempt`]).
#[derive(Debug, Clone)]
pub struct FinishRequest {
    /// The challenge.
    pub id: Uuid,
    /// The attempt that wrote the intent: the fencing token.
    pub attempt: i32,
    /// What to write.
    pub outcome: AttemptOutcome,
    /// Who drove the attempt, for its audit event (written whether or not the fence holds).
    pub asked: Asked,
}

/// Why a final write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The batch the write was in failed (or was not answered).
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A test failure point rolled the transaction back.
    #[error("commit failed on purpose (failure point)")]
    Injected,
}

/// Why a write that shared its batch's transaction did not happen; every request of a failed
/// batch gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The batch's transaction failed.
    #[error("database error: {0}")]
    Database(Arc<sqlx::Error>),
    /// The batch ended without answering (its task stopped).
    #[error(transparent)]
    Unanswered(#[from] lab_common::batch::Unanswered),
}

/// Phase 1 of an approval attempt, in one short transaction: locks the row and, when it is in
/// one of `from`, moves it to APPROVING with a fresh lease, counts the attempt, records the
/// approver (when given) and assigns the idempotency key unless it has one (then it is kept).
///
/// The one exception: after ORDER_CANCELLED the order under the old key is terminal (cancelled
/// orders never come back), so the key can only replay that cancelled order; the attempt takes
/// `new_key` instead, and no ghost can arise from the old one. The new key's story also gets a
/// fresh retry budget, as the old key's attempts say nothing about it.
pub async fn start_attempt(pool: &PgPool, request: StartRequest) -> sqlx::Result<Transition> {
    let mut tx = pool.begin().await?;
    let mut transitions = start_attempts(&mut tx, &[request]).await?;
    tx.commit().await?;
    Ok(transitions.pop().unwrap_or(Transition::Missing))
}

/// [`start_attempt`] for many requests inside the caller's transaction, one transition per
/// request in order. Rows are locked in `challenge_id` order (two batches never deadlock), then
/// one statement writes every transition. A challenge named twice takes at most one attempt: the
/// first request whose `from` matches applies, and the others see the row it left (APPROVING),
/// as they would right after it (no request starts from APPROVING, so that order answers every
/// request of the batch consistently). Each request that does not start records its audit
/// event here (a duplicate's `REPLAYED`, a refusal's reason), one insert for the batch.
pub async fn start_attempts(
    conn: &mut PgConnection,
    requests: &[StartRequest],
) -> sqlx::Result<Vec<Transition>> {
    let locked = lock(conn, requests.iter().map(|r| r.id)).await?;
    let applies = choose(
        requests,
        |r| r.id,
        |request, current| request.from.contains(&current.status()),
        &locked,
    );
    let chosen: Vec<&StartRequest> = picked(requests, &applies);
    let written: HashMap<Uuid, Challenge> = if chosen.is_empty() {
        HashMap::new()
    } else {
        let fresh_key = |r: &&StartRequest| {
            locked[&r.id].failure_reason() == Some(FailureReason::OrderCancelled)
        };
        let rows: Vec<Challenge> = sqlx::query_as(
            "UPDATE challenges c SET
                 status = 'APPROVING',
                 idempotency_key = CASE WHEN i.fresh_key THEN i.new_key
                                        ELSE COALESCE(c.idempotency_key, i.new_key) END,
                 budget_start = CASE WHEN i.fresh_key THEN c.attempts ELSE c.budget_start END,
                 attempts = c.attempts + 1,
                 approver = COALESCE(i.approver, c.approver),
                 lease_expires_at = now() + i.lease_us * interval '1 microsecond',
                 failure_reason = NULL,
                 failure_message = '',
                 dead_lettered = false,
                 next_attempt_at = NULL,
                 updated_at = now()
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bool[])
                  AS i(id, new_key, approver, lease_us, fresh_key)
             WHERE c.challenge_id = i.id
             RETURNING c.*",
        )
        .bind(chosen.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(chosen.iter().map(|r| r.new_key.clone()).collect::<Vec<_>>())
        .bind(
            chosen
                .iter()
                .map(|r| r.approver.clone())
                .collect::<Vec<_>>(),
        )
        .bind(chosen.iter().map(|r| micros(r.lease)).collect::<Vec<_>>())
        .bind(chosen.iter().map(fresh_key).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        by_id(rows)
    };
    let transitions: Vec<Transition> = requests
        .iter()
        .zip(applies)
        .map(
            |(request, applies)| match (written.get(&request.id), locked.get(&request.id)) {
                (Some(row), _) if applies => Transition::Applied(row.clone()),
                (Some(row), _) | (None, Some(row)) => Transition::Unchanged(row.clone()),
                (None, None) => Transition::Missing,
            },
        )
        .collect();
    let unstarted = requests
        .iter()
        .zip(&transitions)
        .filter(|(_, transition)| !matches!(transition, Transition::Applied(_)))
        .map(|(request, transition)| {
            let outcome = transition_outcome(request.operation, transition);
            request.asked.event(request.id, outcome)
        });
    audit::record(&mut *conn, unstarted).await?;
    Ok(transitions)
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
    request: FinishRequest,
    fail_commit: bool,
) -> Result<Option<Challenge>, FinishError> {
    let mut tx = pool.begin().await?;
    let written = finish_attempts(&mut tx, &[request]).await?;
    if fail_commit {
        tx.rollback().await?;
        return Err(FinishError::Injected);
    }
    tx.commit().await?;
    Ok(written.into_iter().next().flatten())
}

/// [`finish_attempt`] for many requests inside the caller's transaction, one answer per request
/// in order. Rows are locked in `challenge_id` order, then one statement writes every outcome
/// whose fence holds. Of two requests for one challenge at most one is written: once it is, the
/// challenge is no longer APPROVING, so the other is fenced out as it would be after it. Every
/// request records its attempt's audit event, fenced out or not, one insert for the batch.
pub async fn finish_attempts(
    conn: &mut PgConnection,
    requests: &[FinishRequest],
) -> sqlx::Result<Vec<Option<Challenge>>> {
    let locked = lock(conn, requests.iter().map(|r| r.id)).await?;
    let applies = choose(
        requests,
        |r| r.id,
        |request, current| {
            current.status() == Status::Approving && current.attempts == request.attempt
        },
        &locked,
    );
    audit::record(
        &mut *conn,
        requests
            .iter()
            .map(|r| r.asked.event(r.id, attempt_outcome(&r.outcome))),
    )
    .await?;
    let chosen: Vec<&FinishRequest> = picked(requests, &applies);
    if chosen.is_empty() {
        return Ok(vec![None; requests.len()]);
    }
    let rows: Vec<Challenge> = sqlx::query_as(
        "UPDATE challenges c SET
             status = CASE WHEN i.approved THEN 'APPROVED' ELSE 'APPROVE_FAILED' END,
             order_id = CASE WHEN i.approved THEN i.order_id ELSE c.order_id END,
             failure_reason = CASE WHEN i.approved THEN c.failure_reason ELSE i.reason END,
             failure_message = CASE WHEN i.approved THEN c.failure_message ELSE i.message END,
             next_attempt_at = CASE WHEN i.approved THEN c.next_attempt_at
                                    ELSE now() + i.retry_us * interval '1 microsecond' END,
             dead_lettered = CASE WHEN i.approved THEN c.dead_lettered ELSE i.dead_letter END,
             budget_start = c.budget_start + CASE WHEN i.approved OR i.charged THEN 0 ELSE 1 END,
             lease_expires_at = NULL,
             updated_at = now()
         FROM unnest($1::uuid[], $2::int[], $3::bool[], $4::uuid[], $5::text[], $6::text[],
                     $7::bigint[], $8::bool[], $9::bool[])
              AS i(id, attempt, approved, order_id, reason, message, retry_us, dead_letter,
                   charged)
         WHERE c.challenge_id = i.id AND c.status = 'APPROVING' AND c.attempts = i.attempt
         RETURNING c.*",
    )
    .bind(chosen.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(chosen.iter().map(|r| r.attempt).collect::<Vec<_>>())
    .bind(
        chosen
            .iter()
            .map(|r| failed(r).is_none())
            .collect::<Vec<_>>(),
    )
    .bind(
        chosen
            .iter()
            .map(|r| match r.outcome {
                AttemptOutcome::Approved { order_id } => Some(order_id),
                AttemptOutcome::Failed { .. } => None,
            })
            .collect::<Vec<_>>(),
    )
    .bind(
        chosen
            .iter()
            .map(|r| failed(r).map(|(reason, ..)| reason.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        chosen
            .iter()
            .map(|r| failed(r).map_or("", |(_, message, ..)| message))
            .collect::<Vec<_>>(),
    )
    .bind(
        chosen
            .iter()
            .map(|r| match failed(r) {
                Some((_, _, NextStep::RetryAfter(delay), _)) => Some(micros(delay)),
                _ => None,
            })
            .collect::<Vec<_>>(),
    )
    .bind(
        chosen
            .iter()
            .map(|r| failed(r).is_some_and(|(_, _, next, _)| next == NextStep::DeadLetter))
            .collect::<Vec<_>>(),
    )
    .bind(
        chosen
            .iter()
            .map(|r| failed(r).is_none_or(|(.., charged)| charged))
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let written = by_id(rows);
    Ok(requests
        .iter()
        .zip(applies)
        .map(|(request, applies)| applies.then(|| written.get(&request.id).cloned()).flatten())
        .collect())
}

/// Which requests apply, deciding them in arrival order against the locked rows: the first
/// request for a challenge that `applies_to` its locked row applies, and no later one for that
/// challenge does (each transition here leaves a state no request starts from).
fn choose<R>(
    requests: &[R],
    id: impl Fn(&R) -> Uuid,
    applies_to: impl Fn(&R, &Challenge) -> bool,
    locked: &HashMap<Uuid, Challenge>,
) -> Vec<bool> {
    let mut taken = HashSet::new();
    requests
        .iter()
        .map(|request| {
            locked
                .get(&id(request))
                .is_some_and(|current| applies_to(request, current))
                && taken.insert(id(request))
        })
        .collect()
}

fn picked<'r, R>(requests: &'r [R], applies: &[bool]) -> Vec<&'r R> {
    requests
        .iter()
        .zip(applies)
        .filter_map(|(request, applies)| applies.then_some(request))
        .collect()
}

/// The failure a request writes: reason, message, next step, charged; `None` for an approval.
fn failed(request: &FinishRequest) -> Option<(FailureReason, &str, NextStep, bool)> {
    match &request.outcome {
        AttemptOutcome::Approved { .. } => None,
        AttemptOutcome::Failed {
            reason,
            message,
            next,
            charged,
        } => Some((*reason, message.as_str(), *next, *charged)),
    }
}

/// Locks the challenges in `challenge_id` order (so concurrent batches take their locks in one
/// order and never deadlock) and returns them as they stand.
async fn lock(
    conn: &mut PgConnection,
    ids: impl Iterator<Item = Uuid>,
) -> sqlx::Result<HashMap<Uuid, Challenge>> {
    let ids: Vec<Uuid> = ids.collect();
    let rows = sqlx::query_as(
        "SELECT * FROM challenges WHERE challenge_id = ANY($1)
         ORDER BY challenge_id FOR UPDATE",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(by_id(rows))
}

fn by_id(rows: Vec<Challenge>) -> HashMap<Uuid, Challenge> {
    rows.into_iter()
        .map(|row| (row.challenge_id, row))
        .collect()
}

/// A duration in whole microseconds (PostgreSQL's interval resolution), saturating.
fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
