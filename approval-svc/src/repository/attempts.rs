//! The two writes of an approval attempt, for one challenge or for a batch of them in one
//! statement: phase 1 (the intent: APPROVING, key, attempt, lease) and phase 3 (the outcome,
//! fenced by `attempts`). A batch answers each request as if, for each challenge, the request
//! that applies ran first and the others right after it; see `docs/decisions.md` ("Issue 11:
//! approval-svc group commit"). Each write also records its requests' audit events, in one
//! insert per batch (see [`crate::audit`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
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
    /// The state the attempt starts from.
    pub from: Status,
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
    let mut transitions = start_attempts(&mut tx, &[request], &[]).await?;
    tx.commit().await?;
    Ok(transitions.pop().unwrap_or(Transition::Missing))
}

/// [`start_attempt`] for many requests on `conn`, one transition per request in order, in one
/// statement ([`START_ATTEMPTS`]): it locks the rows in `challenge_id` order (two batches never
/// deadlock), writes every transition and returns the rows as they stand. A challenge named
/// twice takes at most one attempt: the first request whose `from` matches applies, and the
/// others see the row it left (APPROVING), as they would right after it (no request starts
/// from APPROVING, so that order answers every request of the batch consistently). Each
/// request that does not start records its audit event here (a duplicate's `REPLAYED`, a
/// refusal's reason), one insert for the batch, skipped when every request started.
///
/// A request for a challenge whose product is in `sold_out`, and whose attempt takes a key
/// never sent, is refused in the same statement: APPROVE_FAILED `OUT_OF_STOCK`, written with its
/// audit event, and answered as applied (the caller does not call order-svc for it).
///
/// Outside a transaction (the group commit's way: no `BEGIN` and `COMMIT` round trips) the
/// statement commits by itself and the events follow in their own: the requests they record
/// changed nothing, so nothing need commit with them. Should that insert fail, every request
/// of the batch gets the error, and the attempts that did start are the completer's after
/// their lease, as after a crash between the two statements.
pub async fn start_attempts(
    conn: &mut PgConnection,
    requests: &[StartRequest],
    sold_out: &[Uuid],
) -> sqlx::Result<Vec<Transition>> {
    // Bound only while some product is remembered: most batches refuse nothing.
    let refusal_events: audit::AuditColumns = if sold_out.is_empty() {
        audit::AuditColumns::default()
    } else {
        requests
            .iter()
            .map(|r| r.asked.event(r.id, FailureReason::OutOfStock.as_str()))
            .collect()
    };
    let statement = sqlx::query_as(START_ATTEMPTS.as_str())
        .bind(requests.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(requests.iter().map(|r| r.from.as_str()).collect::<Vec<_>>())
        .bind(
            requests
                .iter()
                .map(|r| r.new_key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            requests
                .iter()
                .map(|r| r.approver.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(requests.iter().map(|r| micros(r.lease)).collect::<Vec<_>>())
        .bind(sold_out)
        .bind(SOLD_OUT_MESSAGE);
    let rows: Vec<SlottedRow> = refusal_events.bind(statement).fetch_all(&mut *conn).await?;
    // Each row is decoded once and cloned only for a request that did not apply, which sees
    // the row as the batch left it (written by another request of the batch, or not at all).
    let (written, unwritten) = by_slot(rows);
    let standing: HashMap<Uuid, &Challenge> = unwritten
        .iter()
        .chain(written.values())
        .map(|row| (row.challenge_id, row))
        .collect();
    let mut transitions: Vec<Transition> = requests
        .iter()
        .enumerate()
        .map(|(slot, request)| match standing.get(&request.id) {
            // Replaced by `Applied` with the row itself below.
            _ if written.contains_key(&slot) => Transition::Missing,
            Some(row) => Transition::Unchanged((*row).clone()),
            None => Transition::Missing,
        })
        .collect();
    for (slot, row) in written {
        transitions[slot] = Transition::Applied(row);
    }
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

/// The `locked` CTE both batch statements start with: the challenges named in `$1`, locked in
/// `challenge_id` order (so two batches never deadlock each other or the single-row writers),
/// one primary-key lookup per id. `challenge_id = ANY($1)` would leave the access path to the
/// planner, which scans the whole table once a batch holds about a hundred ids.
macro_rules! locked_in_id_order {
    () => {
        "locked AS MATERIALIZED (
            SELECT c.* FROM (SELECT DISTINCT id FROM unnest($1::uuid[]) AS ids(id) ORDER BY id) ids
            CROSS JOIN LATERAL (
                SELECT * FROM challenges WHERE challenge_id = ids.id FOR UPDATE
            ) c
        )"
    };
}

/// The message of an attempt refused because its product is remembered sold out.
pub const SOLD_OUT_MESSAGE: &str = "order-svc answered moments ago that this product has \
     nothing left, so no order was requested; RetryApproval asks again";

/// The intents of a batch in one statement, so that a batch costs one round trip and each row
/// is read and decoded once. `locked` takes the batch's rows (`locked_in_id_order!`); `chosen`
/// is, per challenge, the first request by arrival (`slot`) whose `from` is the row's state;
/// `written` moves those to APPROVING. Every locked row comes back once: as written, with the slot that applied, or as
/// it stood. After ORDER_CANCELLED the attempt takes the request's new key and a fresh retry
/// budget (see [`start_attempt`]).
///
/// A challenge whose product is in `$6` (remembered sold out, [`crate::sold_out`]) is written
/// straight to APPROVE_FAILED `OUT_OF_STOCK` with the message `$7` instead, but only when its
/// attempt takes a key never sent before (it had none, or the old one's order was cancelled):
/// under a key already sent, order-svc may hold an order whose reply was lost, and only a call
/// can replay it. Such a refusal sent nothing, so it takes a key and a fencing token but no
/// retry budget (as a call the local breaker refused), and `refusals_audited` records its event
/// (bound from `$8`, one per request) with it.
static START_ATTEMPTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH {}, {START_CHOSEN}, refusals_audited AS ({}) {START_ANSWERS}",
        locked_in_id_order!(),
        audited_refusals(8),
    )
});

/// [`START_ATTEMPTS`]'s choice and write.
const START_CHOSEN: &str = "
    chosen AS (
        SELECT DISTINCT ON (i.id) i.*,
               l.failure_reason IS NOT DISTINCT FROM 'ORDER_CANCELLED' AS fresh_key,
               l.product_id = ANY($6::uuid[])
                   AND (l.idempotency_key IS NULL
                        OR l.failure_reason IS NOT DISTINCT FROM 'ORDER_CANCELLED') AS sold_out
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[])
             WITH ORDINALITY AS i(id, from_status, new_key, approver, lease_us, slot)
        JOIN locked l ON l.challenge_id = i.id AND l.status = i.from_status
        ORDER BY i.id, i.slot
    ),
    written AS (
        UPDATE challenges c SET
            status = CASE WHEN i.sold_out THEN 'APPROVE_FAILED' ELSE 'APPROVING' END,
            idempotency_key = CASE WHEN i.fresh_key THEN i.new_key
                                   ELSE COALESCE(c.idempotency_key, i.new_key) END,
            budget_start = CASE WHEN i.fresh_key THEN c.attempts ELSE c.budget_start END
                           + CASE WHEN i.sold_out THEN 1 ELSE 0 END,
            attempts = c.attempts + 1,
            approver = COALESCE(i.approver, c.approver),
            lease_expires_at = CASE WHEN i.sold_out THEN NULL
                                    ELSE now() + i.lease_us * interval '1 microsecond' END,
            failure_reason = CASE WHEN i.sold_out THEN 'OUT_OF_STOCK' END,
            failure_message = CASE WHEN i.sold_out THEN $7 ELSE '' END,
            dead_lettered = false,
            next_attempt_at = NULL,
            updated_at = now()
        FROM chosen i
        WHERE c.challenge_id = i.id
        RETURNING i.slot AS applied_slot, c.*
    )";

/// [`START_ATTEMPTS`]'s answer: every locked row once.
const START_ANSWERS: &str = "
    SELECT * FROM written
    UNION ALL
    SELECT NULL, l.* FROM locked l
    WHERE NOT EXISTS (SELECT 1 FROM written w WHERE w.challenge_id = l.challenge_id)";

/// The insert of the events bound at `$first`… (one per request, by slot) of the requests
/// that `written` refused as sold out.
fn audited_refusals(first: usize) -> String {
    let [ids, actors, actions, targets, outcomes, requests] =
        std::array::from_fn::<usize, 6, _>(|column| first + column);
    format!(
        "INSERT INTO audit_events (event_id, actor, action, target_id, outcome, request_id)
         SELECT e.event_id, e.actor, e.action, e.target_id, e.outcome, e.request_id
         FROM unnest(${ids}::uuid[], ${actors}::text[], ${actions}::text[], ${targets}::text[],
                     ${outcomes}::text[], ${requests}::text[])
              WITH ORDINALITY AS e(event_id, actor, action, target_id, outcome, request_id, slot)
         JOIN written w ON w.applied_slot = e.slot AND w.status = 'APPROVE_FAILED'"
    )
}

/// The outcomes of a batch and their audit events in one statement, so that a batch is one
/// round trip that commits by itself (no `BEGIN` and `COMMIT` round trips around it):
/// `audited` inserts every request's event (bound after the outcomes' nine arrays, from `$10`),
/// `locked` is as for [`START_ATTEMPTS`]; `chosen` is, per challenge, the first request by
/// arrival whose fencing `attempts` is the row's while it is APPROVING; the update writes
/// those and returns each with its slot.
static FINISH_ATTEMPTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH audited AS ({}), {FINISH_OUTCOMES}",
        audit::insert_at(10)
    )
});

/// [`FINISH_ATTEMPTS`] after its `audited` clause.
const FINISH_OUTCOMES: &str = concat!(
    locked_in_id_order!(),
    ",
    chosen AS (
        SELECT DISTINCT ON (i.id) i.*
        FROM unnest($1::uuid[], $2::int[], $3::bool[], $4::uuid[], $5::text[], $6::text[],
                    $7::bigint[], $8::bool[], $9::bool[])
             WITH ORDINALITY AS i(id, attempt, approved, order_id, reason, message,
                                  retry_us, dead_letter, charged, slot)
        JOIN locked l
          ON l.challenge_id = i.id AND l.status = 'APPROVING' AND l.attempts = i.attempt
        ORDER BY i.id, i.slot
    )
    UPDATE challenges c SET
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
    FROM chosen i
    WHERE c.challenge_id = i.id
    RETURNING i.slot AS applied_slot, c.*"
);

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

/// [`finish_attempt`] for many requests on `conn` (in the caller's transaction, or outside one,
/// where the statement commits by itself), one answer per request in order, in one statement
/// ([`FINISH_ATTEMPTS`]): it locks the challenges in `challenge_id` order, then writes every
/// outcome whose fence holds (still APPROVING under that attempt). Of two requests for one
/// challenge at most one is written: once it is, the challenge is no longer APPROVING, so the
/// other is fenced out as it would be after it. Every request records its attempt's audit
/// event, fenced out or not, in the same statement.
pub async fn finish_attempts(
    conn: &mut PgConnection,
    requests: &[FinishRequest],
) -> sqlx::Result<Vec<Option<Challenge>>> {
    let events: audit::AuditColumns = requests
        .iter()
        .map(|r| r.asked.event(r.id, attempt_outcome(&r.outcome)))
        .collect();
    let outcomes = sqlx::query_as(FINISH_ATTEMPTS.as_str())
        .bind(requests.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(requests.iter().map(|r| r.attempt).collect::<Vec<_>>())
        .bind(
            requests
                .iter()
                .map(|r| failed(r).is_none())
                .collect::<Vec<_>>(),
        )
        .bind(
            requests
                .iter()
                .map(|r| match r.outcome {
                    AttemptOutcome::Approved { order_id } => Some(order_id),
                    AttemptOutcome::Failed { .. } => None,
                })
                .collect::<Vec<_>>(),
        )
        .bind(
            requests
                .iter()
                .map(|r| failed(r).map(|(reason, ..)| reason.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            requests
                .iter()
                .map(|r| failed(r).map_or("", |(_, message, ..)| message))
                .collect::<Vec<_>>(),
        )
        .bind(
            requests
                .iter()
                .map(|r| match failed(r) {
                    Some((_, _, NextStep::RetryAfter(delay), _)) => Some(micros(delay)),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )
        .bind(
            requests
                .iter()
                .map(|r| failed(r).is_some_and(|(_, _, next, _)| next == NextStep::DeadLetter))
                .collect::<Vec<_>>(),
        )
        .bind(
            requests
                .iter()
                .map(|r| failed(r).is_none_or(|(.., charged)| charged))
                .collect::<Vec<_>>(),
        );
    let rows: Vec<SlottedRow> = events.bind(outcomes).fetch_all(&mut *conn).await?;
    let (mut written, _) = by_slot(rows);
    Ok((0..requests.len())
        .map(|slot| written.remove(&slot))
        .collect())
}

/// A row a batch wrote or found: the challenge as it stands, and the 1-based slot of the
/// request that wrote it, if one did.
#[derive(sqlx::FromRow)]
struct SlottedRow {
    applied_slot: Option<i64>,
    #[sqlx(flatten)]
    challenge: Challenge,
}

/// The rows of a batch: those a request wrote, by that request's 0-based index, and the
/// others.
fn by_slot(rows: Vec<SlottedRow>) -> (HashMap<usize, Challenge>, Vec<Challenge>) {
    let mut written = HashMap::with_capacity(rows.len());
    let mut unwritten = Vec::new();
    for row in rows {
        match row
            .applied_slot
            .and_then(|slot| usize::try_from(slot - 1).ok())
        {
            Some(slot) => {
                written.insert(slot, row.challenge);
            }
            None => unwritten.push(row.challenge),
        }
    }
    (written, unwritten)
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

/// A duration in whole microseconds (PostgreSQL's interval resolution), saturating.
fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
