//! Products and their stock counters.

use lab_common::audit::Caller;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{NewProduct, Product, ProductLedger};
use crate::error::OrderError;
use crate::repository::audited::{CREATE_PRODUCT, RESTOCK, commit_with_event};
use lab_common::paging::PageRequest;

const PRODUCT_COLUMNS: &str =
    "product_id, name, stock, initial_stock, restocked, created_at, updated_at, max_per_customer";

/// The channel Restock and CancelOrder notify (payload: the product id) when stock comes back,
/// in the transaction that returns it, so every instance drops its sold-out flag.
pub const STOCK_CHANNEL: &str = "lab_stock";

/// Inserts a product with its initial stock and per-customer limit, and `caller`'s event.
pub async fn create_product(
    pool: &PgPool,
    caller: &Caller,
    product: &NewProduct,
) -> Result<Product, OrderError> {
    let product_id = Uuid::now_v7();
    let mut transaction = pool.begin().await?;
    let result = sqlx::query_as::<_, Product>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO products (product_id, name, stock, initial_stock, max_per_customer)
         VALUES ($1, $2, $3, $3, $4)
         RETURNING {PRODUCT_COLUMNS}"
    )))
    .bind(product_id)
    .bind(&product.name)
    .bind(product.initial_stock)
    .bind(product.max_per_customer)
    .fetch_one(&mut *transaction)
    .await
    .map_err(OrderError::from);
    commit_with_event(transaction, caller, CREATE_PRODUCT, product_id, result).await
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

/// Adds `quantity` units to stock and to the `restocked` counter, atomically, notifies
/// [`STOCK_CHANNEL`] in the same transaction (listeners hear of it exactly when it commits), and
/// records `caller`'s event with it.
pub async fn restock(
    pool: &PgPool,
    caller: &Caller,
    product_id: Uuid,
    quantity: i64,
) -> Result<Product, OrderError> {
    let mut transaction = pool.begin().await?;
    let result = add_stock(&mut transaction, product_id, quantity).await;
    commit_with_event(transaction, caller, RESTOCK, product_id, result).await
}

async fn add_stock(
    connection: &mut PgConnection,
    product_id: Uuid,
    quantity: i64,
) -> Result<Product, OrderError> {
    // Counters that would overflow are refused by the WHERE, not by the bigint arithmetic
    // failing: a failed statement would abort the transaction, and the refusal's event with it.
    // The supply (initial + restocked, which `stock_within_supply` computes) bounds both stock
    // and restocked.
    let restocked = sqlx::query_as::<_, Product>(sqlx::AssertSqlSafe(format!(
        "WITH restocked AS (
             UPDATE products
             SET stock = stock + $2, restocked = restocked + $2, updated_at = now()
             WHERE product_id = $1 AND initial_stock + restocked <= {MAX} - $2
             RETURNING {PRODUCT_COLUMNS}
         )
         SELECT restocked.*, pg_notify($3, restocked.product_id::text) AS notified
         FROM restocked",
        MAX = i64::MAX
    )))
    .bind(product_id)
    .bind(quantity)
    .bind(STOCK_CHANNEL)
    .fetch_optional(&mut *connection)
    .await?;
    if let Some(product) = restocked {
        return Ok(product);
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM products WHERE product_id = $1)")
            .bind(product_id)
            .fetch_one(&mut *connection)
            .await?;
    Err(if exists {
        OrderError::StockOverflow
    } else {
        OrderError::ProductNotFound(product_id)
    })
}
