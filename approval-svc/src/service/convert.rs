//! Rows and reports to protobuf messages, and the wire's challenge status back.

use lab_common::time::{to_proto, to_proto_opt};
use lab_proto::approval::v1 as pb;

use crate::consistency::{Invariant, Report};
use crate::domain::{Challenge, FailureReason, Status};

impl From<Status> for pb::ChallengeStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Pending => Self::Pending,
            Status::Approving => Self::Approving,
            Status::Approved => Self::Approved,
            Status::ApproveFailed => Self::ApproveFailed,
            Status::Rejected => Self::Rejected,
            Status::Revoking => Self::Revoking,
            Status::Revoked => Self::Revoked,
        }
    }
}

/// The state a wire status names; `None` for UNSPECIFIED.
pub(super) fn status_from_proto(status: pb::ChallengeStatus) -> Option<Status> {
    Status::ALL
        .into_iter()
        .find(|known| pb::ChallengeStatus::from(*known) == status)
}

impl From<FailureReason> for pb::ApprovalFailureReason {
    fn from(reason: FailureReason) -> Self {
        match reason {
            FailureReason::OutOfStock => Self::OutOfStock,
            FailureReason::ProductNotFound => Self::ProductNotFound,
            FailureReason::OrderServiceUnavailable => Self::OrderServiceUnavailable,
            FailureReason::CircuitOpen => Self::CircuitOpen,
            FailureReason::DeadlineExceeded => Self::DeadlineExceeded,
            FailureReason::RejectedByOrderService => Self::RejectedByOrderService,
            FailureReason::OrderCancelled => Self::OrderCancelled,
        }
    }
}

impl From<Challenge> for pb::Challenge {
    fn from(challenge: Challenge) -> Self {
        Self {
            challenge_id: challenge.challenge_id.to_string(),
            user_id: challenge.user_id.to_string(),
            product_id: challenge.product_id.to_string(),
            quantity: challenge.quantity,
            status: pb::ChallengeStatus::from(challenge.status()).into(),
            failure_reason: challenge
                .failure_reason()
                .map_or(pb::ApprovalFailureReason::Unspecified, Into::into)
                .into(),
            order_id: challenge
                .order_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            idempotency_key: challenge.idempotency_key.unwrap_or_default(),
            attempts: challenge.attempts,
            dead_lettered: challenge.dead_lettered,
            next_attempt_at: to_proto_opt(challenge.next_attempt_at),
            created_at: Some(to_proto(challenge.created_at)),
            updated_at: Some(to_proto(challenge.updated_at)),
            lease_expires_at: to_proto_opt(challenge.lease_expires_at),
            title: challenge.title,
            failure_message: challenge.failure_message,
            approver: challenge.approver,
            decision_reason: challenge.decision_reason,
        }
    }
}

impl From<Invariant> for pb::Invariant {
    fn from(invariant: Invariant) -> Self {
        match invariant {
            Invariant::NoOversell => Self::NoOversell,
            Invariant::OneOrderPerKey => Self::OneOrderPerKey,
            Invariant::ApprovedHasOrder => Self::ApprovedHasOrder,
            Invariant::NoGhostOrder => Self::NoGhostOrder,
            Invariant::NothingStuck => Self::NothingStuck,
            Invariant::NothingLost => Self::NothingLost,
        }
    }
}

impl From<&Report> for pb::ConsistencyReport {
    fn from(report: &Report) -> Self {
        Self {
            started_at: Some(to_proto(report.started_at)),
            duration_ms: i64::try_from(report.duration.as_millis()).unwrap_or(i64::MAX),
            full: report.full,
            challenges_checked: report.challenges_checked,
            orders_checked: report.orders_checked,
            products_checked: report.products_checked,
            violations: report
                .violations
                .iter()
                .map(|v| pb::Violation {
                    invariant: pb::Invariant::from(v.invariant).into(),
                    challenge_id: v.challenge_id.map(|id| id.to_string()).unwrap_or_default(),
                    order_id: v.order_id.map(|id| id.to_string()).unwrap_or_default(),
                    product_id: v.product_id.map(|id| id.to_string()).unwrap_or_default(),
                    detail: v.detail.clone(),
                    healed: v.healed,
                    action: v.action.clone(),
                })
                .collect(),
            healed: report.healed() as i64,
            unhealed: report.unhealed() as i64,
            alerts_sent: report.alerts_sent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_both_spellings() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(status_from_proto(status.into()), Some(status));
        }
        assert_eq!(status_from_proto(pb::ChallengeStatus::Unspecified), None);
    }
}
