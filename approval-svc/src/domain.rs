//! The challenge and its states, as stored and as sent on the wire.

use chrono::{DateTime, Utc};
use lab_common::reason::Reason;
use lab_common::time::{to_proto, to_proto_opt};
use lab_proto::approval::v1 as pb;
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

    /// The wire enum.
    pub fn to_proto(self) -> pb::ChallengeStatus {
        match self {
            Self::Pending => pb::ChallengeStatus::Pending,
            Self::Approving => pb::ChallengeStatus::Approving,
            Self::Approved => pb::ChallengeStatus::Approved,
            Self::ApproveFailed => pb::ChallengeStatus::ApproveFailed,
            Self::Rejected => pb::ChallengeStatus::Rejected,
            Self::Revoking => pb::ChallengeStatus::Revoking,
            Self::Revoked => pb::ChallengeStatus::Revoked,
        }
    }

    /// From the wire enum; `None` for UNSPECIFIED.
    pub fn from_proto(status: pb::ChallengeStatus) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|known| known.to_proto() == status)
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

    /// True for failures worth an automatic retry: the order service may answer differently
    /// next time (and, for an unknown outcome, the retry replays an order already created).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::OrderServiceUnavailable | Self::CircuitOpen | Self::DeadlineExceeded
        )
    }

    /// The wire enum.
    pub fn to_proto(self) -> pb::ApprovalFailureReason {
        match self {
            Self::OutOfStock => pb::ApprovalFailureReason::OutOfStock,
            Self::ProductNotFound => pb::ApprovalFailureReason::ProductNotFound,
            Self::OrderServiceUnavailable => pb::ApprovalFailureReason::OrderServiceUnavailable,
            Self::CircuitOpen => pb::ApprovalFailureReason::CircuitOpen,
            Self::DeadlineExceeded => pb::ApprovalFailureReason::DeadlineExceeded,
            Self::RejectedByOrderService => pb::ApprovalFailureReason::RejectedByOrderService,
            Self::OrderCancelled => pb::ApprovalFailureReason::OrderCancelled,
        }
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

    /// The wire message.
    pub fn to_proto(&self) -> pb::Challenge {
        pb::Challenge {
            challenge_id: self.challenge_id.to_string(),
            user_id: self.user_id.to_string(),
            product_id: self.product_id.to_string(),
            quantity: self.quantity,
            title: self.title.clone(),
            status: self.status().to_proto().into(),
            failure_reason: self
                .failure_reason()
                .map_or(
                    pb::ApprovalFailureReason::Unspecified,
                    FailureReason::to_proto,
                )
                .into(),
            failure_message: self.failure_message.clone(),
            order_id: self.order_id.map(|id| id.to_string()).unwrap_or_default(),
            idempotency_key: self.idempotency_key.clone().unwrap_or_default(),
            attempts: self.attempts,
            approver: self.approver.clone(),
            dead_lettered: self.dead_lettered,
            next_attempt_at: to_proto_opt(self.next_attempt_at),
            created_at: Some(to_proto(self.created_at)),
            updated_at: Some(to_proto(self.updated_at)),
            decision_reason: self.decision_reason.clone(),
            lease_expires_at: to_proto_opt(self.lease_expires_at),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_both_spellings() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(Status::from_proto(status.to_proto()), Some(status));
        }
        assert_eq!(Status::from_proto(pb::ChallengeStatus::Unspecified), None);
    }

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
}
