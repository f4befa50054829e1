//! The audit trail of order-svc's state-changing calls ([`lab_common::audit`]): one event per
//! call that reaches the database, committed in the transaction of its change.
//!
//! - CreateProduct, Restock and CancelOrder run in a short transaction that
//!   `commit_with_event` ends: `OK`, or the refusal the transaction decided (PRODUCT_NOT_FOUND,
//!   STOCK_OVERFLOW, ORDER_NOT_FOUND, which includes another client's order), is written with
//!   the change and committed with it. Cancelling an order already cancelled answers the order
//!   and records `OK`: the call asked for a cancelled order and got one. The event's insert is
//!   one more round trip while Restock or a restoring cancel holds the product row; both are
//!   rare next to CreateOrder, which pays none.
//! - CreateOrder's events are written by the batch's one statement ([`super::place_orders`]),
//!   one per request: `OK`, `REPLAYED`, or the refusal (OUT_OF_STOCK, CUSTOMER_LIMIT_REACHED,
//!   IDEMPOTENCY_KEY_REUSED, PRODUCT_NOT_FOUND, IDEMPOTENCY_KEY_IN_USE).
//!
//! Not recorded, since they change nothing and never reach a transaction: calls refused before
//! the database (no token, a missing role, bad input) and CreateOrders the sold-out flag
//! refuses from memory; those are counted by the per-RPC metrics (and
//! `order_sold_out_fast_path_total`). A call whose transaction fails (the database down, a batch
//! failing as a whole) is not recorded either: its change and its event are rolled back
//! together, so the trail never claims what did not happen.

use lab_common::audit::{self, Caller};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::OrderError;

/// The `action` of CreateProduct's events.
pub const CREATE_PRODUCT: &str = "CreateProduct";
/// The `action` of Restock's events.
pub const RESTOCK: &str = "Restock";
/// The `action` of CreateOrder's events.
pub const CREATE_ORDER: &str = "CreateOrder";
/// The `action` of CancelOrder's events.
pub const CANCEL_ORDER: &str = "CancelOrder";

/// Ends `transaction` with `caller`'s event of `action` on `target`: `OK` when `result` is,
/// else the refusal's reason, written and committed with whatever the transaction changed. A
/// failure that is no refusal rolls the transaction back and records nothing.
pub(super) async fn commit_with_event<T>(
    mut transaction: Transaction<'_, Postgres>,
    caller: &Caller,
    action: &str,
    target: Uuid,
    result: Result<T, OrderError>,
) -> Result<T, OrderError> {
    let outcome = match &result {
        Ok(_) => audit::OK,
        Err(error) => match error.refusal() {
            Some(reason) => reason.as_str(),
            None => return result,
        },
    };
    audit::record(&mut *transaction, [caller.event(action, target, outcome)]).await?;
    transaction.commit().await?;
    result
}
