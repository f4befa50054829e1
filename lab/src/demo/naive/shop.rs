//! A naive order placement on order-svc's database: read the stock, check it, write
//! `stock = read - qty`, insert the order. No row lock, no conditional update: two buyers who
//! read the same stock both sell from it (a lost update), so the stock no longer matches the
//! orders (I1).

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::demo::setup::{DEMO_CLIENT_ID, fresh_key};

/// Buys `quantity` of `product` the naive way; true when an order was placed, false when the
/// stock read was too low. `think` is the work done between the read and the write (pricing,
/// fraud checks…), which only widens a window that is there anyway.
pub(crate) async fn buy(
    db: &PgPool,
    product: Uuid,
    quantity: i32,
    think: Duration,
) -> sqlx::Result<bool> {
    let stock: i64 = sqlx::query_scalar("SELECT stock FROM products WHERE product_id = $1")
        .bind(product)
        .fetch_one(db)
        .await?;
    if stock < i64::from(quantity) {
        return Ok(false);
    }
    tokio::time::sleep(think).await;
    sqlx::query("UPDATE products SET stock = $2, updated_at = now() WHERE product_id = $1")
        .bind(product)
        .bind(stock - i64::from(quantity))
        .execute(db)
        .await?;
    sqlx::query(
        "INSERT INTO orders (order_id, product_id, quantity, customer_id, status, client_id, \
         idempotency_key) VALUES ($1, $2, $3, $4, 'CREATED', $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(product)
    .bind(quantity)
    .bind(Uuid::now_v7())
    .bind(DEMO_CLIENT_ID)
    .bind(fresh_key())
    .execute(db)
    .await?;
    Ok(true)
}
