//! The `ErrorInfo.reason` vocabulary (domain `lab`): one typed name for every reason a status of
//! this project carries, used by the server that makes the status and by the client that reads
//! it, so neither side re-types a string.
//!
//! The spellings are part of the public contract (API.md, acceptance suites) and never change.
//! The resilience layers' own reasons come from [`resilience::errors::reason`], spelled once
//! there. [`Reason::RejectedByOrderService`] and [`Reason::OrderCancelled`] never appear in a
//! status: they are approval-svc's failure reasons recorded on a challenge, spelled here with the
//! others so one vocabulary covers both.
//!
//! ```
//! use lab_common::reason::Reason;
//! use lab_common::status::with_reason;
//!
//! let status = with_reason(tonic::Code::NotFound, Reason::ProductNotFound, "no such product", []);
//! assert_eq!(Reason::of(&status), Some(Reason::ProductNotFound));
//! assert_eq!(Reason::parse("OUT_OF_STOCK"), Some(Reason::OutOfStock));
//! ```

use std::fmt;

use resilience::errors::reason as stack;
use tonic::Status;

/// One `ErrorInfo.reason` of domain `lab`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// INVALID_ARGUMENT: the request is malformed (with `BadRequest` field violations).
    InvalidArgument,
    /// INTERNAL: a bug or an unexpected failure; the cause is logged, never sent.
    Internal,
    /// UNAVAILABLE: the database is down or overloaded; retryable.
    DatabaseUnavailable,
    /// ABORTED: the transaction lost a race; retryable.
    TransactionConflict,
    /// NOT_FOUND: no product with this id.
    ProductNotFound,
    /// NOT_FOUND: no order with this id (or under this idempotency key).
    OrderNotFound,
    /// FAILED_PRECONDITION: not enough stock; nothing written.
    OutOfStock,
    /// FAILED_PRECONDITION: the customer's per-product limit would be exceeded.
    CustomerLimitReached,
    /// FAILED_PRECONDITION: this idempotency key was used with a different request.
    IdempotencyKeyReused,
    /// ABORTED: a concurrent request with the same idempotency key is settling; retryable.
    IdempotencyKeyInUse,
    /// OUT_OF_RANGE: restocking would overflow the stock counters.
    StockOverflow,
    /// NOT_FOUND: no challenge with this id.
    ChallengeNotFound,
    /// FAILED_PRECONDITION: ApproveChallenge refused by the challenge's state.
    ChallengeNotApprovable,
    /// FAILED_PRECONDITION: RejectChallenge refused by the challenge's state.
    ChallengeNotRejectable,
    /// FAILED_PRECONDITION: RetryApproval refused by the challenge's state.
    ChallengeNotRetryable,
    /// FAILED_PRECONDITION: RevokeApproval refused by the challenge's state.
    ChallengeNotRevocable,
    /// FAILED_PRECONDITION: RequeueDeadLetter of a challenge not dead-lettered.
    ChallengeNotDeadLettered,
    /// ABORTED: another consistency check is running; retryable.
    CheckInProgress,
    /// UNAVAILABLE from approval-svc when order-svc did not answer; also an approval failure
    /// reason.
    OrderServiceUnavailable,
    /// UNAVAILABLE from the client's circuit breaker ([`stack::CIRCUIT_OPEN`]).
    CircuitOpen,
    /// RESOURCE_EXHAUSTED from the client's load shedding ([`stack::LOAD_SHED`]).
    LoadShed,
    /// DEADLINE_EXCEEDED: the call's budget is spent ([`stack::DEADLINE_EXCEEDED`]).
    DeadlineExceeded,
    /// DEADLINE_EXCEEDED of one attempt ([`stack::ATTEMPT_TIMEOUT`]).
    AttemptTimeout,
    /// A fault injected on purpose ([`stack::FAULT_INJECTED`]).
    FaultInjected,
    /// Approval failure reason only: order-svc refused the order for another reason.
    RejectedByOrderService,
    /// Approval failure reason only: the order under the challenge's key was cancelled outside
    /// the saga.
    OrderCancelled,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 26] = [
        Self::InvalidArgument,
        Self::Internal,
        Self::DatabaseUnavailable,
        Self::TransactionConflict,
        Self::ProductNotFound,
        Self::OrderNotFound,
        Self::OutOfStock,
        Self::CustomerLimitReached,
        Self::IdempotencyKeyReused,
        Self::IdempotencyKeyInUse,
        Self::StockOverflow,
        Self::ChallengeNotFound,
        Self::ChallengeNotApprovable,
        Self::ChallengeNotRejectable,
        Self::ChallengeNotRetryable,
        Self::ChallengeNotRevocable,
        Self::ChallengeNotDeadLettered,
        Self::CheckInProgress,
        Self::OrderServiceUnavailable,
        Self::CircuitOpen,
        Self::LoadShed,
        Self::DeadlineExceeded,
        Self::AttemptTimeout,
        Self::FaultInjected,
        Self::RejectedByOrderService,
        Self::OrderCancelled,
    ];

    /// The wire spelling (UPPER_SNAKE).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::Internal => "INTERNAL",
            Self::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            Self::TransactionConflict => "TRANSACTION_CONFLICT",
            Self::ProductNotFound => "PRODUCT_NOT_FOUND",
            Self::OrderNotFound => "ORDER_NOT_FOUND",
            Self::OutOfStock => "OUT_OF_STOCK",
            Self::CustomerLimitReached => "CUSTOMER_LIMIT_REACHED",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            Self::StockOverflow => "STOCK_OVERFLOW",
            Self::ChallengeNotFound => "CHALLENGE_NOT_FOUND",
            Self::ChallengeNotApprovable => "CHALLENGE_NOT_APPROVABLE",
            Self::ChallengeNotRejectable => "CHALLENGE_NOT_REJECTABLE",
            Self::ChallengeNotRetryable => "CHALLENGE_NOT_RETRYABLE",
            Self::ChallengeNotRevocable => "CHALLENGE_NOT_REVOCABLE",
            Self::ChallengeNotDeadLettered => "CHALLENGE_NOT_DEAD_LETTERED",
            Self::CheckInProgress => "CHECK_IN_PROGRESS",
            Self::OrderServiceUnavailable => "ORDER_SERVICE_UNAVAILABLE",
            Self::CircuitOpen => stack::CIRCUIT_OPEN,
            Self::LoadShed => stack::LOAD_SHED,
            Self::DeadlineExceeded => stack::DEADLINE_EXCEEDED,
            Self::AttemptTimeout => stack::ATTEMPT_TIMEOUT,
            Self::FaultInjected => stack::FAULT_INJECTED,
            Self::RejectedByOrderService => "REJECTED_BY_ORDER_SERVICE",
            Self::OrderCancelled => "ORDER_CANCELLED",
        }
    }

    /// The reason spelled `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }

    /// The reason of `status`' `ErrorInfo` of domain `lab`, if it is one of these.
    pub fn of(status: &Status) -> Option<Self> {
        resilience::errors::reason_of(status).and_then(|text| Self::parse(&text))
    }
}

impl AsRef<str> for Reason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_reason_round_trips_and_is_spelled_once() {
        let spellings: HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            spellings.len(),
            Reason::ALL.len(),
            "two reasons share a spelling"
        );
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            assert_eq!(reason.to_string(), reason.as_str());
            let text = reason.as_str();
            assert!(
                text.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{text} is not UPPER_SNAKE"
            );
        }
        assert_eq!(Reason::parse("out_of_stock"), None);
        assert_eq!(Reason::parse(""), None);
    }

    /// The reasons the contract names (shared/API.md: the errors row, the idempotency rules,
    /// the per-customer limit, and the `APPROVAL_FAILURE_REASON_*` values without their prefix)
    /// are all in the vocabulary, spelled as there.
    #[test]
    fn the_contracts_reasons_are_all_here() {
        for named in [
            "OUT_OF_STOCK",
            "IDEMPOTENCY_KEY_REUSED",
            "PRODUCT_NOT_FOUND",
            "CIRCUIT_OPEN",
            "CUSTOMER_LIMIT_REACHED",
            "ORDER_SERVICE_UNAVAILABLE",
            "DEADLINE_EXCEEDED",
            "REJECTED_BY_ORDER_SERVICE",
            "ORDER_CANCELLED",
        ] {
            assert!(Reason::parse(named).is_some(), "{named} missing");
        }
    }

    #[test]
    fn reasons_are_read_back_from_a_status_of_domain_lab_only() {
        let made = resilience::errors::with_reason(
            tonic::Code::FailedPrecondition,
            Reason::OutOfStock,
            "sold out",
            [],
        );
        assert_eq!(Reason::of(&made), Some(Reason::OutOfStock));
        assert_eq!(
            Reason::of(&resilience::errors::circuit_open("x")),
            Some(Reason::CircuitOpen)
        );
        assert_eq!(Reason::of(&Status::not_found("bare")), None);
    }
}
