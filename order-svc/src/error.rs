//! The one error type of order-svc and its one mapping to `tonic::Status`.
//!
//! Every reason string here is part of the public contract (`ErrorInfo.reason`, domain `lab`).
//! Database errors are logged with their cause and reach clients only as a code and a reason.

use std::sync::Arc;

use lab_common::reason::Reason;
use lab_common::status::with_reason;
use lab_common::validate::Violations;
use tonic::{Code, Status};
use uuid::Uuid;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The request is malformed; the violations say where.
    #[error("invalid request")]
    Invalid(Violations),
    /// No product with this id.
    #[error("product {0} not found")]
    ProductNotFound(Uuid),
    /// No order with this id.
    #[error("order {0} not found")]
    OrderNotFound(Uuid),
    /// No order holds this idempotency key for the calling principal.
    #[error("no order holds this idempotency key")]
    KeyNotFound,
    /// Not enough stock; nothing was written.
    #[error("product {product_id} has {available} in stock, {requested} requested")]
    OutOfStock {
        /// The product.
        product_id: Uuid,
        /// Units asked for.
        requested: i32,
        /// Units in stock when the order was refused.
        available: i64,
    },
    /// The customer's CREATED orders for the product would hold more than its
    /// `max_per_customer`; nothing was written.
    #[error("customer holds {held} of at most {limit}, {requested} requested")]
    CustomerLimitReached {
        /// The product.
        product_id: Uuid,
        /// Units asked for.
        requested: i32,
        /// The product's `max_per_customer`.
        limit: i32,
        /// Units the customer's CREATED orders held when the order was refused.
        held: i64,
    },
    /// The key was used before with a different request.
    #[error("idempotency key reused with a different request")]
    KeyReused,
    /// Another request with the same key settled in a way this one cannot replay yet (its claim
    /// vanished, or an order holding the key committed without one); retry.
    #[error("concurrent request with the same idempotency key")]
    KeyContended,
    /// Restocking would overflow the stock counters.
    #[error("stock counter would overflow")]
    StockOverflow,
    /// The database failed. Shared: one failed batch answers every request in it.
    #[error("database error: {0}")]
    Database(Arc<sqlx::Error>),
    /// The batch carrying this request ended without an answer for it (a bug, never a client
    /// mistake); whether it was written is unknown, so a retry with the same key is safe.
    #[error("the batch ended without an answer for this request")]
    Unanswered,
}

impl OrderError {
    /// The reason of a refusal the service decided, which the audit trail records as the call's
    /// outcome; `None` for a failure (of the database, or a batch that left a request
    /// unanswered), whose transaction was rolled back and whose outcome nobody knows.
    pub fn refusal(&self) -> Option<Reason> {
        match self {
            Self::Invalid(_) => Some(Reason::InvalidArgument),
            Self::ProductNotFound(_) => Some(Reason::ProductNotFound),
            Self::OrderNotFound(_) | Self::KeyNotFound => Some(Reason::OrderNotFound),
            Self::OutOfStock { .. } => Some(Reason::OutOfStock),
            Self::CustomerLimitReached { .. } => Some(Reason::CustomerLimitReached),
            Self::KeyReused => Some(Reason::IdempotencyKeyReused),
            Self::KeyContended => Some(Reason::IdempotencyKeyInUse),
            Self::StockOverflow => Some(Reason::StockOverflow),
            Self::Database(_) | Self::Unanswered => None,
        }
    }
}

impl From<sqlx::Error> for OrderError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(Arc::new(error))
    }
}

impl From<Violations> for OrderError {
    fn from(violations: Violations) -> Self {
        Self::Invalid(violations)
    }
}

impl From<OrderError> for Status {
    fn from(error: OrderError) -> Self {
        match error {
            OrderError::Invalid(violations) => {
                violations.into_result().err().unwrap_or_else(|| {
                    with_reason(
                        Code::InvalidArgument,
                        Reason::InvalidArgument,
                        "invalid request",
                        [],
                    )
                })
            }
            OrderError::ProductNotFound(id) => with_reason(
                Code::NotFound,
                Reason::ProductNotFound,
                format!("product {id} not found"),
                [("product_id", id.to_string())],
            ),
            OrderError::OrderNotFound(id) => with_reason(
                Code::NotFound,
                Reason::OrderNotFound,
                format!("order {id} not found"),
                [("order_id", id.to_string())],
            ),
            OrderError::KeyNotFound => with_reason(
                Code::NotFound,
                Reason::OrderNotFound,
                "no order holds this idempotency key",
                [],
            ),
            OrderError::OutOfStock {
                product_id,
                requested,
                available,
            } => with_reason(
                Code::FailedPrecondition,
                Reason::OutOfStock,
                format!("product {product_id} has {available} in stock, {requested} requested"),
                [
                    ("product_id", product_id.to_string()),
                    ("requested", requested.to_string()),
                    ("available", available.to_string()),
                ],
            ),
            OrderError::CustomerLimitReached {
                product_id,
                requested,
                limit,
                held,
            } => with_reason(
                Code::FailedPrecondition,
                Reason::CustomerLimitReached,
                format!(
                    "this customer holds {held} of at most {limit} units of product \
                     {product_id}; {requested} requested"
                ),
                [
                    ("product_id", product_id.to_string()),
                    ("requested", requested.to_string()),
                    ("limit", limit.to_string()),
                    ("held", held.to_string()),
                ],
            ),
            OrderError::KeyReused => with_reason(
                Code::FailedPrecondition,
                Reason::IdempotencyKeyReused,
                "this idempotency key was used with a different request",
                [],
            ),
            OrderError::KeyContended => with_reason(
                Code::Aborted,
                Reason::IdempotencyKeyInUse,
                "a concurrent request with this idempotency key is settling; retry",
                [],
            ),
            OrderError::StockOverflow => with_reason(
                Code::OutOfRange,
                Reason::StockOverflow,
                "restocking would overflow the stock counters",
                [],
            ),
            OrderError::Database(error) => lab_common::status::database(&error),
            OrderError::Unanswered => {
                tracing::error!("a CreateOrder batch ended without answering a request");
                lab_common::status::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_records_the_reason_its_status_carries() {
        let (product_id, order_id) = (Uuid::now_v7(), Uuid::now_v7());
        let mut violations = Violations::default();
        violations.add("quantity", "must be positive");
        let refusals = [
            OrderError::Invalid(violations),
            OrderError::ProductNotFound(product_id),
            OrderError::OrderNotFound(order_id),
            OrderError::KeyNotFound,
            OrderError::OutOfStock {
                product_id,
                requested: 2,
                available: 1,
            },
            OrderError::CustomerLimitReached {
                product_id,
                requested: 2,
                limit: 2,
                held: 1,
            },
            OrderError::KeyReused,
            OrderError::KeyContended,
            OrderError::StockOverflow,
        ];
        for refusal in refusals {
            let reason = refusal.refusal();
            assert!(reason.is_some(), "{refusal:?} is a refusal");
            assert_eq!(Reason::of(&Status::from(refusal)), reason);
        }
        assert_eq!(OrderError::Unanswered.refusal(), None);
        assert_eq!(OrderError::from(sqlx::Error::PoolTimedOut).refusal(), None);
    }
}
