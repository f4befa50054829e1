//! Products and their stock counters.

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{NewProduct, Product, ProductLedger};
use crate::error::OrderError;
use lab_common::paging::PageRequest;

const PRODUCT_COLUMNS: &str =
    "product_id, name, stock, initial_stock, restocked, created_at, updated_at, max_per_customer";

/// The channel Restock and CancelOrder notify (payload: the product id) when stock comes back,
/// in the transaction that returns it, so every instance drops its sold-out flag.
pub const STOCK_CHANNEL: &str = "lab_stock";

/// Inserts a product with its initial stock and per-customer limit.
pub async fn create_product(pool: &PgPool, product: &NewProduct) -> Result<Product, OrderError> {
    let product = sqlx::query_as::<_, Product>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO products (product_id, name, stock, initial_stock, max_per_customer)
         VALUES ($1, $2, $3, $3, $4)
         RETURNING {PRODUCT_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(&product.name)
    .bind(product.initial_stock)
    .bind(product.max_per_customer)
    .fetch_one(pool)
    .await?;
    Ok(product)
}

/// Reads one product.
pub async fn get_product(pool: &PgPool, product_id: Uuid) -> Result<Product, OrderError> {
    sqlx::query_as::<_, Product>(sqlx::AssertSqlSafe(format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE product_id = $1"
    )))
    .bind(product_id)
    .fetch_optional(pool)
    .await?
    .ok_or(OrderError::ProductNotFound(product_id))
}

/// Reads a product's ledger in one statement, hence from one snapshot: a cancel (+q) and a
/// create (-q) that commit between two separate reads would otherwise look like an oversell.
pub async fn get_product_ledger(
    pool: &PgPool,
    product_id: Uuid,
) -> Result<ProductLedger, OrderError> {
    sqlx::query_as::<_, ProductLedger>(
        "SELECT p.product_id, p.stock, p.initial_stock, p.restocked,
                COALESCE(o.quantity, 0)::bigint AS created_quantity,
                COALESCE(o.orders, 0)::bigint AS created_orders,
                statement_timestamp() AS as_of
         FROM products p
         LEFT JOIN LATERAL (
             SELECT sum(quantity) AS quantity, count(*) AS orders
             FROM orders
             WHERE orders.product_id = p.product_id AND orders.status = 'CREATED'
         ) o ON true
         WHERE p.product_id = $1",
    )
    .bind(product_id)
    .fetch_optional(pool)
    .await?
    .ok_or(OrderError::ProductNotFound(product_id))
}

/// One page of products in id (creation) order.
pub async fn list_products(
    pool: &PgPool,
    page: PageRequest,
) -> Result<(Vec<Product>, String), OrderError> {
    let rows = sqlx::query_as::<_, Product>(sqlx::AssertSqlSafe(format!(
        "SELECT {PRODUCT_COLUMNS} FROM products
         WHERE ($1::uuid IS NULL OR product_id > $1)
         ORDER BY product_id LIMIT $2"
    )))
    .bind(page.after)
    .bind(page.fetch_limit())
    .fetch_all(pool)
    .await?;
    Ok(page.finish(rows, |product| product.product_id))
}

/// Adds `quantity` units to stock and to the `restocked` counter, atomically, and notifies
/// [`STOCK_CHANNEL`] in the same statement (hence transaction): listeners hear of it exactly
/// when it commits.
pub async fn restock(
    pool: &PgPool,
    product_id: Uuid,
    quantity: i64,
) -> Result<Product, OrderError> {
    let result = sqlx::query_as::<_, Product>(sqlx::AssertSqlSafe(format!(
        "WITH restocked AS (
             UPDATE products
             SET stock = stock + $2, restocked = restocked + $2, updated_at = now()
             WHERE product_id = $1
             RETURNING {PRODUCT_COLUMNS}
         )
         SELECT restocked.*, pg_notify($3, restocked.product_id::text) AS notified
         FROM restocked"
    )))
    .bind(product_id)
    .bind(quantity)
    .bind(STOCK_CHANNEL)
    .fetch_optional(pool)
    .await;
    match result {
        Ok(Some(product)) => Ok(product),
        Ok(None) => Err(OrderError::ProductNotFound(product_id)),
        // 22003 numeric_value_out_of_range: the bigint counters would overflow.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("22003") => {
            Err(OrderError::StockOverflow)
        }
        Err(error) => Err(error.into()),
    }
}
