//! Orders: the idempotent, contention-safe CreateOrder and the exactly-once CancelOrder.

use std::time::Duration;

use sqlx::{FromRow, PgPool, Row};
use uuid::Uuid;

use crate::domain::{IdempotencyScope, NewOrder, Order, OrderFilter};
use crate::error::OrderError;
use lab_common::paging::PageRequest;

const ORDER_COLUMNS: &str = "order_id, product_id, quantity, customer_id, status, client_id, \
     idempotency_key, cancel_reason, created_at, updated_at, cancelled_at";

/// What CreateOrder did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// A new order was created and stock taken.
    Created(Order),
    /// The key was claimed before by the same request: its order, unchanged.
    Replayed(Order),
}

/// Creates an order, or replays the one its key already produced.
///
/// The order holding (client, key) decides, however long ago it was created: after the key's
/// claim was reaped, the same request replays that order and a different one is refused
/// ([`OrderError::KeyReused`]), so the retention bounds only how long the claim row is kept.
///
/// One call of the `place_order` function (see its migration), in one implicit transaction:
/// (1) claim the key with `INSERT … ON CONFLICT DO NOTHING`; a concurrent holder of the same key
/// makes this wait until it commits or rolls back, so at most one order is ever created per key;
/// (2) take the stock with `UPDATE … WHERE stock >= quantity`, which cannot oversell, and insert
/// the order. A refusal raises inside the function, rolling back the claim too, so
/// OUT_OF_STOCK and PRODUCT_NOT_FOUND do not consume the key. One round trip keeps the hot
/// product's row lock from waiting on the network.
pub async fn create_order(
    pool: &PgPool,
    scope: &IdempotencyScope,
    order: &NewOrder,
    retention: Duration,
) -> Result<CreateOutcome, OrderError> {
    let placed = sqlx::query("SELECT * FROM place_order($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(&scope.client_id)
        .bind(&scope.key)
        .bind(order.fingerprint())
        .bind(Uuid::now_v7())
        .bind(order.product_id)
        .bind(order.quantity)
        .bind(order.customer_id)
        .bind(retention.as_secs_f64())
        .fetch_one(pool)
        .await;
    let row = match placed {
        Ok(row) => row,
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(PRODUCT_NOT_FOUND) => {
            return Err(OrderError::ProductNotFound(order.product_id));
        }
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(OUT_OF_STOCK) => {
            let available = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|error| error.detail())
                .and_then(|detail| detail.parse().ok())
                .unwrap_or(0);
            return Err(OrderError::OutOfStock {
                product_id: order.product_id,
                requested: order.quantity,
                available,
            });
        }
        // Backstop of the constraint: an order with this pair committed without holding the
        // claim. Retrying replays it, so this is contention, not a failure.
        Err(sqlx::Error::Database(db)) if db.constraint() == Some(ONE_ORDER_PER_KEY) => {
            tracing::warn!(error = %db, "an order holding this key appeared without its claim");
            return Err(OrderError::KeyContended);
        }
        Err(error) => return Err(error.into()),
    };
    let outcome: String = row.try_get("outcome")?;
    match outcome.as_str() {
        "created" => Ok(CreateOutcome::Created(Order::from_row(&row)?)),
        "replayed" => Ok(CreateOutcome::Replayed(Order::from_row(&row)?)),
        "reused" => Err(OrderError::KeyReused),
        // The claim vanished between the insert and the read (the reaper expired it).
        _ => Err(OrderError::KeyContended),
    }
}

/// SQLSTATEs raised by `place_order`.
const PRODUCT_NOT_FOUND: &str = "LB404";
const OUT_OF_STOCK: &str = "LB409";
/// The unique constraint on orders (client_id, idempotency_key).
const ONE_ORDER_PER_KEY: &str = "orders_one_per_key";

/// Reads one order.
pub async fn get_order(pool: &PgPool, order_id: Uuid) -> Result<Order, OrderError> {
    sqlx::query_as::<_, Order>(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"
    )))
    .bind(order_id)
    .fetch_optional(pool)
    .await?
    .ok_or(OrderError::OrderNotFound(order_id))
}

/// The order created under the caller's key. There is at most one, ever: the key's claim
/// expires, but the order keeps holding the key (constraint `orders_one_per_key`).
pub async fn lookup_order(pool: &PgPool, scope: &IdempotencyScope) -> Result<Order, OrderError> {
    sqlx::query_as::<_, Order>(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE client_id = $1 AND idempotency_key = $2"
    )))
    .bind(&scope.client_id)
    .bind(&scope.key)
    .fetch_optional(pool)
    .await?
    .ok_or(OrderError::KeyNotFound)
}

/// One page of orders in id (creation) order.
pub async fn list_orders(
    pool: &PgPool,
    filter: OrderFilter,
    page: PageRequest,
) -> Result<(Vec<Order>, String), OrderError> {
    let rows = sqlx::query_as::<_, Order>(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE ($1::uuid IS NULL OR product_id = $1)
           AND ($2::uuid IS NULL OR customer_id = $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::uuid IS NULL OR order_id > $4)
           AND ($6::text IS NULL OR client_id = $6)
           AND ($7::timestamptz IS NULL OR created_at >= $7)
         ORDER BY order_id LIMIT $5"
    )))
    .bind(filter.product_id)
    .bind(filter.customer_id)
    .bind(filter.status.map(|status| status.as_str()))
    .bind(page.after)
    .bind(page.fetch_limit())
    .bind(filter.client_id.as_deref())
    .bind(filter.created_after)
    .fetch_all(pool)
    .await?;
    Ok(page.finish(rows, |order| order.order_id))
}

/// Cancels an order and returns its stock, exactly once; the flag says whether this call did it.
///
/// One statement: the order's `UPDATE … WHERE status = 'CREATED'` locks the row, so a concurrent
/// cancel waits, re-checks the condition, finds the order cancelled and restores nothing.
pub async fn cancel_order(
    pool: &PgPool,
    order_id: Uuid,
    reason: &str,
) -> Result<(Order, bool), OrderError> {
    let restored = sqlx::query(
        "WITH cancelled AS (
             UPDATE orders
             SET status = 'CANCELLED', cancel_reason = $2, cancelled_at = now(), updated_at = now()
             WHERE order_id = $1 AND status = 'CREATED'
             RETURNING product_id, quantity
         )
         UPDATE products p
         SET stock = p.stock + c.quantity, updated_at = now()
         FROM cancelled c
         WHERE p.product_id = c.product_id",
    )
    .bind(order_id)
    .bind(reason)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    Ok((get_order(pool, order_id).await?, restored))
}
