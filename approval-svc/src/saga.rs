//! The approval saga: intent first, then the call, then the outcome (DESIGN.md's three phases),
//! and its compensation (revoke). Shared by the gRPC handlers and the completer, so a re-driven
//! approval runs exactly the code of a first one.

use std::time::Duration;

use lab_proto::order::v1 as order_pb;
use resilience::backoff::{Backoff, JitterRng};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::audit::Asked;
use crate::deadline::call_budget;
use crate::domain::Operation;
use crate::domain::{AttemptOutcome, Challenge, FailureReason, NextStep, Status, Transition};
use crate::error::ApprovalError;
use crate::failpoints::FailurePoints;
use crate::orders::{
    OrderGateway, classify, earlier_attempts, failure_message, never_sent, nothing_left,
};
use crate::repository::attempts::{self, FinishError, FinishRequest, StartRequest};
use crate::repository::challenges;
use crate::sold_out::SoldOutMemory;
use crate::write_batch::{self, WriteBatches};

/// Timing and retry policy of the saga.
#[derive(Debug, Clone)]
pub struct SagaSettings {
    /// How long an in-flight approval or revoke owns its challenge before a completer may take
    /// it over; longer than any order call plus the post-call write.
    pub lease: Duration,
    /// Longest order call, and the call's budget when the caller sent no deadline.
    pub order_call_timeout: Duration,
    /// Time kept from the caller's deadline for the post-call write.
    pub post_call_margin: Duration,
    /// Attempts per retry budget (the first included) before a transient failure becomes a
    /// dead letter.
    pub max_attempts: u32,
    /// Delay between automatic retries (full jitter: spreads the retries of many challenges
    /// that failed together, e.g. in an order-svc outage, instead of sending them back in
    /// synchronised waves).
    pub backoff: Backoff,
    /// Where the retry delays' jitter is drawn: the thread RNG in production, seeded in tests.
    pub jitter: JitterRng,
    /// How long a batch of the attempts' writes may wait for the callers of the last one.
    pub write_refill_wait: Duration,
    /// How long order-svc's answer that a product has nothing left refuses its approvals
    /// without a call ([`crate::sold_out`]); zero calls every time.
    pub sold_out_ttl: Duration,
}

/// Runs approvals and revokes against the database and order-svc.
#[derive(Debug, Clone)]
pub struct Saga {
    pool: PgPool,
    orders: OrderGateway,
    settings: SagaSettings,
    failure_points: FailurePoints,
    /// The attempts' writes, group-committed.
    writes: WriteBatches,
    /// Products order-svc answered sold out moments ago.
    sold_out: SoldOutMemory,
}

impl Saga {
    /// A saga over `pool` calling order-svc through `orders`; its attempts' writes are
    /// group-committed in batches of up to [`write_batch::DEFAULT_MAX_BATCH`].
    pub fn new(
        pool: PgPool,
        orders: OrderGateway,
        settings: SagaSettings,
        failure_points: FailurePoints,
    ) -> Self {
        let sold_out = SoldOutMemory::new(settings.sold_out_ttl);
        Self {
            writes: WriteBatches::new(
                pool.clone(),
                write_batch::DEFAULT_MAX_BATCH,
                settings.write_refill_wait,
                sold_out.clone(),
            ),
            sold_out,
            pool,
            orders,
            settings,
            failure_points,
        }
    }

    /// The order-svc gateway (and through it, the resilient client).
    pub fn orders(&self) -> &OrderGateway {
        &self.orders
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The policy in force.
    pub fn settings(&self) -> &SagaSettings {
        &self.settings
    }

    /// ApproveChallenge by `asked.caller`, recorded as the approver: PENDING starts an attempt;
    /// APPROVING, APPROVED and APPROVE_FAILED are returned as they stand (a duplicate never
    /// starts a second attempt).
    pub async fn approve(
        &self,
        id: Uuid,
        asked: Asked,
        deadline: Option<Instant>,
    ) -> Result<Challenge, ApprovalError> {
        let request = StartRequest {
            id,
            from: Status::Pending,
            operation: Operation::Approve,
            approver: Some(asked.caller.actor.clone()),
            new_key: Uuid::now_v7().to_string(),
            lease: self.settings.lease,
            asked,
        };
        self.start(request, deadline).await
    }

    /// RetryApproval: APPROVE_FAILED (dead-lettered or not) starts an attempt now with the same
    /// key (a new one after ORDER_CANCELLED, see [`attempts::start_attempt`]); APPROVING and
    /// APPROVED are returned as they stand.
    pub async fn retry(
        &self,
        id: Uuid,
        asked: Asked,
        deadline: Option<Instant>,
    ) -> Result<Challenge, ApprovalError> {
        let request = StartRequest {
            id,
            from: Status::ApproveFailed,
            operation: Operation::Retry,
            approver: None,
            // Used only when the old key's order was cancelled; otherwise the key is kept.
            new_key: Uuid::now_v7().to_string(),
            lease: self.settings.lease,
            asked,
        };
        self.start(request, deadline).await
    }

    /// Phase 1 through the group-committed intents, then phases 2 and 3 when it applied.
    async fn start(
        &self,
        request: StartRequest,
        deadline: Option<Instant>,
    ) -> Result<Challenge, ApprovalError> {
        let (id, operation, asked) = (request.id, request.operation, request.asked.clone());
        match self.writes.start_attempt(request).await? {
            // Refused in the intent's own write: the product is remembered sold out.
            Transition::Applied(challenge) if challenge.status() == Status::ApproveFailed => {
                crate::metrics::refused_sold_out();
                Ok(challenge)
            }
            Transition::Applied(challenge) => self.drive_approval(challenge, deadline, asked).await,
            unapplied => operation.answer(id, unapplied),
        }
    }

    /// Phases 2 and 3 of an attempt `asked` has started (the challenge is APPROVING under
    /// `challenge.attempts`): the order call, then the conditional outcome write with `asked`'s
    /// audit event.
    pub async fn drive_approval(
        &self,
        challenge: Challenge,
        deadline: Option<Instant>,
        asked: Asked,
    ) -> Result<Challenge, ApprovalError> {
        let id = challenge.challenge_id;
        let budget = self.budget(deadline);
        // Boxed, as the rare paths below: an approval's task then carries only what every
        // phase needs (3 KB instead of 18 KB, allocated and moved once per approval); the
        // call's state (6 KB) lives only while the call does.
        let outcome = match Box::pin(self.orders.create_order(&challenge, budget)).await {
            Ok(order) => {
                self.sold_out.forget(challenge.product_id);
                self.answered(&challenge, &order)
            }
            Err(status) => {
                if nothing_left(&status) {
                    self.sold_out.remember(challenge.product_id);
                }
                self.failed(&challenge, &status)
            }
        };
        crate::metrics::attempt_finished(&outcome);
        // Every attempt is in the audit trail and the metrics; at a flash sale's rate a log
        // line per approval costs a tenth of the service's CPU, so the shop's business answers
        // (an order, no stock, no such product, a cancelled order) log at DEBUG and only the
        // failures an operator acts on (unreachable, breaker, deadline, refused) at INFO.
        match &outcome {
            AttemptOutcome::Approved { order_id } => {
                tracing::debug!(%order_id, attempt = challenge.attempts, "order created");
            }
            AttemptOutcome::Failed { reason, next, .. } if !reason.is_business_answer() => {
                tracing::info!(
                    reason = reason.as_str(),
                    ?next,
                    attempt = challenge.attempts,
                    "approval attempt failed"
                );
            }
            AttemptOutcome::Failed { reason, next, .. } => {
                tracing::debug!(
                    reason = reason.as_str(),
                    ?next,
                    attempt = challenge.attempts,
                    "approval attempt failed"
                );
            }
        }
        let request = FinishRequest {
            id,
            attempt: challenge.attempts,
            outcome,
            asked,
        };
        // An injected failure must fail this write alone: it gets a transaction of its own.
        let written = if self.failure_points.take_approval_commit() {
            Box::pin(attempts::finish_attempt(&self.pool, request, true)).await
        } else {
            self.writes
                .finish_attempt(request)
                .await
                .map_err(FinishError::from)
        };
        self.settle(id, written).await
    }

    /// RevokeApproval (recorded for `asked` with its start): APPROVED starts a revoke; REVOKING
    /// and REVOKED are returned as they stand (a REVOKING one is finished by whoever holds it
    /// or, after its lease, a completer).
    pub async fn revoke(
        &self,
        id: Uuid,
        reason: &str,
        asked: &Asked,
        deadline: Option<Instant>,
    ) -> Result<Challenge, ApprovalError> {
        let lease = self.settings.lease;
        match challenges::start_revoke(&self.pool, id, reason, lease, asked).await? {
            Transition::Applied(challenge) => self.drive_revoke(challenge, deadline, None).await,
            unapplied => Operation::Revoke.answer(id, unapplied),
        }
    }

    /// Cancels the order of a REVOKING challenge, then writes REVOKED, with the event of
    /// `completed_by` when the service finishes a revoke on its own. When the cancel fails the
    /// challenge stays REVOKING and the completer repeats it after the lease; CancelOrder is
    /// idempotent, so the stock comes back exactly once however often it is repeated.
    pub async fn drive_revoke(
        &self,
        challenge: Challenge,
        deadline: Option<Instant>,
        completed_by: Option<&Asked>,
    ) -> Result<Challenge, ApprovalError> {
        let id = challenge.challenge_id;
        let Some(order_id) = challenge.order_id else {
            // The order_iff_approved constraint makes this unreachable.
            tracing::error!("REVOKING challenge without an order");
            return Ok(challenge);
        };
        let budget = self.budget(deadline);
        match self
            .orders
            .cancel_order(order_id, &challenge.decision_reason, budget)
            .await
        {
            Ok(_) => {
                self.sold_out.forget(challenge.product_id);
                tracing::info!(%order_id, "order cancelled");
            }
            Err(status) => {
                tracing::warn!(
                    %order_id,
                    code = ?status.code(),
                    message = status.message(),
                    "cancel failed; the completer retries after the lease"
                );
                return Ok(challenge);
            }
        }
        let fail_commit = self.failure_points.take_revoke_commit();
        let written = challenges::finish_revoke(&self.pool, id, completed_by, fail_commit).await;
        self.settle(id, written).await
    }

    /// The order call's budget for a caller's deadline.
    fn budget(&self, deadline: Option<Instant>) -> Duration {
        call_budget(
            deadline,
            self.settings.order_call_timeout,
            self.settings.post_call_margin,
        )
    }

    /// The outcome for an order order-svc returned (created or replayed). Only a CREATED order
    /// approves: a replay of an order cancelled meanwhile (the shop's CancelOrder after a lost
    /// reply) is the definitive ORDER_CANCELLED, never retried with this key, which can only
    /// replay the same cancelled order.
    fn answered(&self, challenge: &Challenge, order: &order_pb::Order) -> AttemptOutcome {
        if order.status != i32::from(order_pb::OrderStatus::Created) {
            let status = order_pb::OrderStatus::try_from(order.status)
                .map_or("an unknown status", |status| status.as_str_name());
            return AttemptOutcome::Failed {
                reason: FailureReason::OrderCancelled,
                message: format!(
                    "order {} under this key is {status}; RetryApproval starts over under a new key",
                    order.order_id
                ),
                next: NextStep::Stop,
                charged: true,
            };
        }
        match Uuid::try_parse(&order.order_id) {
            Ok(order_id) => AttemptOutcome::Approved { order_id },
            Err(_) => self.failed(
                challenge,
                &tonic::Status::internal("order-svc returned a malformed order id"),
            ),
        }
    }

    /// The APPROVE_FAILED outcome for an order-svc failure, with what comes next.
    ///
    /// A call that never left the process (the local breaker or load shedding refused its only
    /// attempt) is not charged to the retry budget: it is rescheduled and cannot dead-letter the
    /// challenge, so an outage's breaker cycles spend attempts only on calls that reached
    /// order-svc. It still took a fencing token (`attempts`), which stays monotonic; the write
    /// moves `budget_start` along instead (see [`attempts::finish_attempt`]).
    fn failed(&self, challenge: &Challenge, status: &tonic::Status) -> AttemptOutcome {
        let key_sent_before = earlier_attempts(challenge).is_some();
        let reason = classify(status, key_sent_before);
        let charged = !never_sent(status);
        let used = u32::try_from(challenge.attempts - challenge.budget_start - i32::from(!charged))
            .unwrap_or(u32::MAX);
        let next = if !reason.is_transient() {
            NextStep::Stop
        } else if charged && used >= self.settings.max_attempts {
            NextStep::DeadLetter
        } else {
            NextStep::RetryAfter(
                self.settings
                    .backoff
                    .delay_with(used.max(1), &mut self.settings.jitter.clone()),
            )
        };
        AttemptOutcome::Failed {
            reason,
            message: failure_message(status, key_sent_before),
            next,
            charged,
        }
    }

    /// The answer after a final write: the row written; the row as it stands when a newer
    /// attempt owns it; and when the write itself failed, the row as it stands too (still in
    /// flight under its lease; a completer rolls it forward), or the error if even that read
    /// fails.
    async fn settle(
        &self,
        id: Uuid,
        written: Result<Option<Challenge>, FinishError>,
    ) -> Result<Challenge, ApprovalError> {
        match written {
            Ok(Some(challenge)) => Ok(challenge),
            Ok(None) => {
                tracing::info!("a newer attempt owns the challenge; returning it as it stands");
                self.current(id).await
            }
            Err(error) => {
                tracing::warn!(%error, "final write failed; the completer finishes after the lease");
                match self.current(id).await {
                    Ok(challenge) => Ok(challenge),
                    Err(_) => Err(match error {
                        FinishError::Database(error) => ApprovalError::Database(error),
                        FinishError::Batch(error) => ApprovalError::Batch(error),
                        FinishError::Injected => ApprovalError::Injected("final write"),
                    }),
                }
            }
        }
    }

    /// The challenge as it stands, re-read when an outcome did not apply; the query is boxed,
    /// so an approval's task does not carry its state for these rare paths.
    async fn current(&self, id: Uuid) -> Result<Challenge, ApprovalError> {
        Box::pin(challenges::get(&self.pool, id))
            .await?
            .ok_or(ApprovalError::NotFound(id))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use lab_common::reason::Reason;
    use lab_common::status::with_reason;
    use tonic::Code;

    use super::*;

    const MAX_ATTEMPTS: u32 = 3;

    fn saga() -> Saga {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/unused")
            .unwrap();
        let channel =
            crate::orders::channel(&["http://127.0.0.1:1".into()], Duration::from_millis(10))
                .unwrap();
        let (orders, _breaker) =
            OrderGateway::new(channel, resilience::ResilienceConfig::default());
        let settings = SagaSettings {
            lease: Duration::from_secs(30),
            order_call_timeout: Duration::from_secs(5),
            post_call_margin: Duration::from_millis(250),
            max_attempts: MAX_ATTEMPTS,
            backoff: Backoff {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(1),
            },
            jitter: JitterRng::seed_from_u64(15),
            write_refill_wait: Duration::ZERO,
            sold_out_ttl: Duration::ZERO,
        };
        Saga::new(pool, orders, settings, FailurePoints::default())
    }

    /// An APPROVING challenge under attempt `attempts`, its budget started at `budget_start`.
    fn approving(attempts: i32, budget_start: i32) -> Challenge {
        Challenge {
            challenge_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            product_id: Uuid::now_v7(),
            quantity: 1,
            title: "ran a marathon".into(),
            status_text: "APPROVING".into(),
            failure_reason_text: None,
            failure_message: String::new(),
            order_id: None,
            idempotency_key: Some(Uuid::now_v7().to_string()),
            attempts,
            budget_start,
            approver: "admin".into(),
            decision_reason: String::new(),
            dead_lettered: false,
            next_attempt_at: None,
            lease_expires_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn next_and_charge(outcome: &AttemptOutcome) -> (NextStep, bool) {
        match outcome {
            AttemptOutcome::Failed { next, charged, .. } => (*next, *charged),
            AttemptOutcome::Approved { .. } => panic!("not a failure: {outcome:?}"),
        }
    }

    #[tokio::test]
    async fn only_calls_that_left_the_process_spend_the_budget() {
        let saga = saga();
        let last = approving(3, 0);
        let reached = tonic::Status::unavailable("order-svc is down");
        let (next, charged) = next_and_charge(&saga.failed(&last, &reached));
        assert!(charged);
        assert_eq!(
            next,
            NextStep::DeadLetter,
            "the third charged attempt of three"
        );

        let refused = resilience::errors::circuit_open("order-svc");
        let (next, charged) = next_and_charge(&saga.failed(&last, &refused));
        assert!(!charged, "the local breaker refused it: nothing was sent");
        // Two charged attempts so far: the wait is the seeded full-jitter draw under 200 ms.
        let mut same_seed = JitterRng::seed_from_u64(15);
        let expected = saga.settings.backoff.delay_with(2, &mut same_seed);
        assert_eq!(next, NextStep::RetryAfter(expected), "{next:?}");
        assert!(expected <= Duration::from_millis(200));

        // Sent by a server, the same reason is an attempt like any other.
        let remote = with_reason(Code::Unavailable, Reason::CircuitOpen, "x", []);
        assert_eq!(
            next_and_charge(&saga.failed(&last, &remote)),
            (NextStep::DeadLetter, true)
        );
    }

    /// An approval's state is a task of its own, allocated and moved once per call: what only
    /// one phase needs (the order call, the rare direct write and re-read) is boxed for that
    /// phase, so the task stays small: 10.9 KB before in a release build (5.4 KB in a debug
    /// one), 2.5 KB in both when this was written.
    #[tokio::test]
    async fn an_approval_carries_only_what_every_phase_needs() {
        let saga = saga();
        let asked = Asked::system(crate::audit::Action::ApproveChallenge, "");
        let approval = saga.approve(Uuid::now_v7(), asked, None);
        let bytes = std::mem::size_of_val(&approval);
        assert!(bytes <= 4 * 1024, "an approval's future is {bytes} bytes");
    }

    #[tokio::test]
    async fn only_a_created_order_approves() {
        let saga = saga();
        let challenge = approving(2, 0);
        let mut order = order_pb::Order {
            order_id: Uuid::now_v7().to_string(),
            status: order_pb::OrderStatus::Created.into(),
            ..Default::default()
        };
        assert!(matches!(
            saga.answered(&challenge, &order),
            AttemptOutcome::Approved { .. }
        ));
        order.status = order_pb::OrderStatus::Cancelled.into();
        match saga.answered(&challenge, &order) {
            AttemptOutcome::Failed { reason, next, .. } => {
                assert_eq!(reason, FailureReason::OrderCancelled);
                assert_eq!(
                    next,
                    NextStep::Stop,
                    "definitive: the key can only replay it"
                );
            }
            approved => panic!("a cancelled order approved: {approved:?}"),
        }
    }
}
