//! Orders: the idempotent, contention-safe CreateOrder and the exactly-once CancelOrder.

use std::time::Duration;

use sqlx::PgPool;
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
/// One transaction: (1) claim the key with `INSERT … ON CONFLICT DO NOTHING`; a concurrent
/// holder of the same key makes this wait until it commits or rolls back, so at most one order
/// is ever created per key; (2) take the stock and insert the order in one statement whose
/// `UPDATE … WHERE stock >= quantity` cannot oversell. A refusal rolls back the claim as well,
/// so OUT_OF_STOCK and PRODUCT_NOT_FOUND do not consume the key.
pub async fn create_order(
    pool: &PgPool,
    scope: &IdempotencyScope,
    order: &NewOrder,
    retention: Duration,
) -> Result<CreateOutcome, OrderError> {
    let fingerprint = order.fingerprint();
    let order_id = Uuid::now_v7();
    let mut tx = pool.begin().await?;

    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys
             (client_id, idempotency_key, request_fingerprint, order_id, expires_at)
         VALUES ($1, $2, $3, $4, now() + $5 * interval '1 second')
         ON CONFLICT (client_id, idempotency_key) DO NOTHING",
    )
    .bind(&scope.client_id)
    .bind(&scope.key)
    .bind(&fingerprint)
    .bind(order_id)
    .bind(retention.as_secs_f64())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;

    if !claimed {
        tx.rollback().await?;
        return replay(pool, scope, &fingerprint).await;
    }

    let created = sqlx::query_as::<_, Order>(sqlx::AssertSqlSafe(format!(
        "WITH taken AS (
             UPDATE products SET stock = stock - $3, updated_at = now()
             WHERE product_id = $2 AND stock >= $3
             RETURNING product_id
         )
         INSERT INTO orders
             (order_id, product_id, quantity, customer_id, status, client_id, idempotency_key)
         SELECT $1, product_id, $3, $4, 'CREATED', $5, $6 FROM taken
         RETURNING {ORDER_COLUMNS}"
    )))
    .bind(order_id)
    .bind(order.product_id)
    .bind(order.quantity)
    .bind(order.customer_id)
    .bind(&scope.client_id)
    .bind(&scope.key)
    .fetch_optional(&mut *tx)
    .await?;

    match created {
        Some(created) => {
            tx.commit().await?;
            Ok(CreateOutcome::Created(created))
        }
        None => {
            tx.rollback().await?;
            Err(refusal(pool, order).await)
        }
    }
}

/// The key is held by a committed claim: the same request replays its order, another request is
/// refused.
async fn replay(
    pool: &PgPool,
    scope: &IdempotencyScope,
    fingerprint: &[u8],
) -> Result<CreateOutcome, OrderError> {
    let stored: Option<(Vec<u8>, Uuid)> = sqlx::query_as(
        "SELECT request_fingerprint, order_id FROM idempotency_keys
         WHERE client_id = $1 AND idempotency_key = $2",
    )
    .bind(&scope.client_id)
    .bind(&scope.key)
    .fetch_optional(pool)
    .await?;
    match stored {
        // The claim vanished between our insert and this read (the reaper expired it): the
        // caller may simply retry.
        None => Err(OrderError::KeyContended),
        Some((stored, _)) if stored != fingerprint => Err(OrderError::KeyReused),
        Some((_, order_id)) => Ok(CreateOutcome::Replayed(get_order(pool, order_id).await?)),
    }
}

/// Why the conditional insert took no stock: the product is missing or too low.
async fn refusal(pool: &PgPool, order: &NewOrder) -> OrderError {
    let stock: Result<Option<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT stock FROM products WHERE product_id = $1")
            .bind(order.product_id)
            .fetch_optional(pool)
            .await;
    match stock {
        Ok(None) => OrderError::ProductNotFound(order.product_id),
        Ok(Some(available)) => OrderError::OutOfStock {
            product_id: order.product_id,
            requested: order.quantity,
            available,
        },
        Err(error) => error.into(),
    }
}

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

/// The newest order created under the caller's key (keys can be reused once expired).
pub async fn lookup_order(pool: &PgPool, scope: &IdempotencyScope) -> Result<Order, OrderError> {
    sqlx::query_as::<_, Order>(sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE client_id = $1 AND idempotency_key = $2
         ORDER BY order_id DESC LIMIT 1"
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
