//! The challenge, its states, and the saga's vocabulary over them: what a locking transition
//! found ([`Transition`]) and what an attempt ended with ([`AttemptOutcome`], [`NextStep`]).
//! The wire forms are in `service::convert`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lab_common::reason::Reason;
use uuid::Uuid;

/// Lifecycle state of a challenge (stored as its UPPER_SNAKE name without prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Submitted, waiting for an administrator.
    Pending,
    /// An approval is in flight under a lease.
    Approving,
    /// Approved with exactly one order.
    Approved,
    /// The order could not be created; a reason says why.
    ApproveFailed,
    /// Rejected by an administrator.
    Rejected,
    /// A revoke (order cancellation) is in flight under a lease.
    Revoking,
    /// Revoked; the order was cancelled.
    Revoked,
}

impl Status {
    /// Every state, for exhaustive tests.
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Approving,
        Self::Approved,
        Self::ApproveFailed,
        Self::Rejected,
        Self::Revoking,
        Self::Revoked,
    ];

    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approving => "APPROVING",
            Self::Approved => "APPROVED",
            Self::ApproveFailed => "APPROVE_FAILED",
            Self::Rejected => "REJECTED",
            Self::Revoking => "REVOKING",
            Self::Revoked => "REVOKED",
        }
    }

    /// Parses the database spelling.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }
}

/// Why an approval attempt failed (stored as its name without prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// Too little stock; definitive.
    OutOfStock,
    /// Unknown product; definitive.
    ProductNotFound,
    /// order-svc unreachable or overloaded; transient.
    OrderServiceUnavailable,
    /// The breaker towards order-svc is open; transient.
    CircuitOpen,
    /// No answer within the deadline; the order may exist; transient.
    DeadlineExceeded,
    /// Any other refusal; definitive.
    RejectedByOrderService,
    /// The order under the challenge's key exists but was cancelled outside the saga;
    /// definitive, and a manual retry starts over under a new key.
    OrderCancelled,
}

impl FailureReason {
    /// Every reason (metrics export a series for each from start-up).
    pub const ALL: [Self; 7] = [
        Self::OutOfStock,
        Self::ProductNotFound,
        Self::OrderServiceUnavailable,
        Self::CircuitOpen,
        Self::DeadlineExceeded,
        Self::RejectedByOrderService,
        Self::OrderCancelled,
    ];

    /// The shared reason of the same name; a failure is stored (and classified) by it.
    pub fn reason(self) -> Reason {
        match self {
            Self::OutOfStock => Reason::OutOfStock,
            Self::ProductNotFound => Reason::ProductNotFound,
            Self::OrderServiceUnavailable => Reason::OrderServiceUnavailable,
            Self::CircuitOpen => Reason::CircuitOpen,
            Self::DeadlineExceeded => Reason::DeadlineExceeded,
            Self::RejectedByOrderService => Reason::RejectedByOrderService,
            Self::OrderCancelled => Reason::OrderCancelled,
        }
    }

    /// The database spelling: the [`reason`](Self::reason)'s.
    pub fn as_str(self) -> &'static str {
        self.reason().as_str()
    }

    /// Parses the database spelling.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == value)
    }

    /// True for the shop's answers about the sale itself (no stock, no such product, the
    /// order was cancelled), as opposed to a failure to get an answer or a refused call.
    pub fn is_business_answer(self) -> bool {
        matches!(
            self,
            Self::OutOfStock | Self::ProductNotFound | Self::OrderCancelled
        )
    }

    /// True for failures worth an automatic retry: the order service may answer differently
    /// next time (and, for an unknown outcome, the retry replays an order already created).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::OrderServiceUnavailable | Self::CircuitOpen | Self::DeadlineExceeded
        )
    }
}

/// One challenge row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Challenge {
    /// Primary key, UUID v7.
    pub challenge_id: Uuid,
    /// The submitting user; the order's customer.
    pub user_id: Uuid,
    /// The reward product.
    pub product_id: Uuid,
    /// Units to order.
    pub quantity: i32,
    /// What the challenge is.
    pub title: String,
    /// Lifecycle state, database spelling (see [`Status`]).
    #[sqlx(rename = "status")]
    pub status_text: String,
    /// Why the last attempt failed, database spelling (see [`FailureReason`]).
    #[sqlx(rename = "failure_reason")]
    pub failure_reason_text: Option<String>,
    /// Detail of the failure.
    pub failure_message: String,
    /// The order, once approved.
    pub order_id: Option<Uuid>,
    /// The key of every attempt, made on the first.
    pub idempotency_key: Option<String>,
    /// Attempts so far; the fencing token of the post-call write.
    pub attempts: i32,
    /// `attempts` when the current automatic-retry budget started.
    pub budget_start: i32,
    /// Who approved, rejected or last tried to approve.
    pub approver: String,
    /// Reason given to reject or revoke.
    pub decision_reason: String,
    /// Automatic retries used up.
    pub dead_lettered: bool,
    /// When the next automatic retry is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Until when an in-flight approval or revoke holds the challenge.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Challenge {
    /// The state. The CHECK constraint admits only known spellings; should another one appear
    /// anyway (a newer schema), it reads as APPROVING, a state no code path treats as final.
    pub fn status(&self) -> Status {
        Status::parse(&self.status_text).unwrap_or(Status::Approving)
    }

    /// The failure reason, when APPROVE_FAILED.
    pub fn failure_reason(&self) -> Option<FailureReason> {
        self.failure_reason_text
            .as_deref()
            .and_then(FailureReason::parse)
    }
}

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

/// A validated SubmitChallenge request.
#[derive(Debug, Clone)]
pub struct NewChallenge {
    /// The submitting user.
    pub user_id: Uuid,
    /// The reward product.
    pub product_id: Uuid,
    /// Units, within the configured maximum.
    pub quantity: i32,
    /// Trimmed title.
    pub title: String,
}

/// An operation an operator or approver asks of a challenge; a refusal
/// ([`ApprovalError::WrongState`](crate::error::ApprovalError::WrongState)) names its
/// `ErrorInfo.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// ApproveChallenge.
    Approve,
    /// RejectChallenge.
    Reject,
    /// RetryApproval.
    Retry,
    /// RevokeApproval.
    Revoke,
    /// RequeueDeadLetter.
    Requeue,
}

impl Operation {
    /// The `ErrorInfo.reason` of a refusal.
    pub fn reason(self) -> Reason {
        match self {
            Self::Approve => Reason::ChallengeNotApprovable,
            Self::Reject => Reason::ChallengeNotRejectable,
            Self::Retry => Reason::ChallengeNotRetryable,
            Self::Revoke => Reason::ChallengeNotRevocable,
            Self::Requeue => Reason::ChallengeNotDeadLettered,
        }
    }

    /// Whether a challenge in `status` answers this operation as a duplicate would be answered:
    /// with the row as it stands (it already is where the operation leads, or on its way).
    pub fn replays(self, status: Status) -> bool {
        use Status::*;
        match self {
            Self::Approve => matches!(status, Approving | Approved | ApproveFailed),
            Self::Retry => matches!(status, Approving | Approved),
            Self::Reject => status == Rejected,
            Self::Revoke => matches!(status, Revoking | Revoked),
            Self::Requeue => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unknown_outcomes_and_outages_are_transient() {
        for reason in FailureReason::ALL {
            assert_eq!(FailureReason::parse(reason.as_str()), Some(reason));
        }
        assert!(FailureReason::CircuitOpen.is_transient());
        assert!(FailureReason::DeadlineExceeded.is_transient());
        assert!(FailureReason::OrderServiceUnavailable.is_transient());
        assert!(!FailureReason::OutOfStock.is_transient());
        assert!(!FailureReason::ProductNotFound.is_transient());
        assert!(!FailureReason::RejectedByOrderService.is_transient());
        assert!(!FailureReason::OrderCancelled.is_transient());
    }

    #[test]
    fn business_answers_are_neither_transient_nor_refused_calls() {
        let business: Vec<_> = FailureReason::ALL
            .into_iter()
            .filter(|reason| reason.is_business_answer())
            .collect();
        assert_eq!(
            business,
            [
                FailureReason::OutOfStock,
                FailureReason::ProductNotFound,
                FailureReason::OrderCancelled
            ]
        );
        assert!(business.iter().all(|reason| !reason.is_transient()));
    }
}
