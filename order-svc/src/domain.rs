//! Validated inputs and the rows the service works with.

use chrono::{DateTime, Utc};
use lab_common::validate::Violations;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Longest product name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest cancellation reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A product row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Product {
    /// Primary key (UUID v7).
    pub product_id: Uuid,
    /// Display name.
    pub name: String,
    /// Units available now.
    pub stock: i64,
    /// Units at creation.
    pub initial_stock: i64,
    /// Units added since creation.
    pub restocked: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Most units one customer's CREATED orders may hold; 0 = unlimited.
    pub max_per_customer: i32,
}

/// What CreateProduct asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    /// Display name.
    pub name: String,
    /// Units at creation.
    pub initial_stock: i64,
    /// Most units one customer's CREATED orders may hold; 0 = unlimited.
    pub max_per_customer: i32,
}

/// A product's stock counters and its CREATED orders, read from one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProductLedger {
    /// The product.
    pub product_id: Uuid,
    /// Units available at the snapshot.
    pub stock: i64,
    /// Units at creation.
    pub initial_stock: i64,
    /// Units added since creation.
    pub restocked: i64,
    /// Summed quantity of the CREATED orders at the snapshot.
    pub created_quantity: i64,
    /// Number of CREATED orders at the snapshot.
    pub created_orders: i64,
    /// The database's clock when the snapshot was taken.
    pub as_of: DateTime<Utc>,
}

/// The lifecycle state of an order, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Holds its stock.
    Created,
    /// Stock returned.
    Cancelled,
}

impl OrderStatus {
    /// The value stored in `orders.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// An order row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Order {
    /// Primary key (UUID v7).
    pub order_id: Uuid,
    /// The product ordered.
    pub product_id: Uuid,
    /// Units ordered.
    pub quantity: i32,
    /// Who the order is for.
    pub customer_id: Uuid,
    /// `CREATED` or `CANCELLED`.
    pub status: String,
    /// The principal that created it.
    pub client_id: String,
    /// The idempotency key it was created with.
    pub idempotency_key: String,
    /// Why it was cancelled; empty while created.
    pub cancel_reason: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Cancellation time.
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// What CreateOrder asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// The product to take stock from.
    pub product_id: Uuid,
    /// Units, within `1..=max_quantity`.
    pub quantity: i32,
    /// Who the order is for.
    pub customer_id: Uuid,
}

impl NewOrder {
    /// SHA-256 over the fields that define the request; two requests under one key are "the
    /// same request" exactly when their fingerprints match.
    pub fn fingerprint(&self) -> Vec<u8> {
        let mut hasher = Sha256::new();
        hasher.update(b"lab.order.v1.CreateOrder\0");
        hasher.update(self.product_id.as_bytes());
        hasher.update(self.quantity.to_be_bytes());
        hasher.update(self.customer_id.as_bytes());
        hasher.finalize().to_vec()
    }
}

/// Who is asking, for idempotency: keys are scoped to the calling principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyScope {
    /// The `client-id` metadata (default `anonymous`).
    pub client_id: String,
    /// The `idempotency-key` metadata.
    pub key: String,
}

/// Filters of ListOrders; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only orders created by this principal.
    pub client_id: Option<String>,
    /// Only orders created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only this product's orders.
    pub product_id: Option<Uuid>,
    /// Only this customer's orders.
    pub customer_id: Option<Uuid>,
    /// Only orders in this state.
    pub status: Option<OrderStatus>,
}

/// Limits the service enforces on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest quantity per order or restock, and largest initial stock.
    pub max_quantity: i32,
}

impl Limits {
    /// Records a violation unless `quantity` is within `1..=max_quantity`.
    pub fn check_quantity(&self, violations: &mut Violations, field: &str, quantity: i64) {
        violations.range(field, quantity, 1, i64::from(self.max_quantity));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_distinguishes_every_field() {
        let order = NewOrder {
            product_id: Uuid::now_v7(),
            quantity: 2,
            customer_id: Uuid::now_v7(),
        };
        let same = order.clone();
        let more = NewOrder {
            quantity: 3,
            ..order.clone()
        };
        let other_customer = NewOrder {
            customer_id: Uuid::now_v7(),
            ..order.clone()
        };
        assert_eq!(order.fingerprint(), same.fingerprint());
        assert_ne!(order.fingerprint(), more.fingerprint());
        assert_ne!(order.fingerprint(), other_customer.fingerprint());
    }
}
