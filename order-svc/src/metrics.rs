//! order-svc's own metrics (besides the per-RPC `grpc_server_*` ones), through the `metrics`
//! facade; `/metrics` renders them in Prometheus text format.
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `order_orders_created_total` | counter | orders created (replays excluded) |
//! | `order_orders_cancelled_total` | counter | CancelOrder calls that returned stock |
//! | `order_idempotent_replays_total` | counter | CreateOrder answered from a stored result |
//! | `order_idempotency_key_reuse_total` | counter | refusals with IDEMPOTENCY_KEY_REUSED |
//! | `order_out_of_stock_total` | counter | refusals with OUT_OF_STOCK |
//! | `order_idempotency_keys_reaped_total` | counter | expired keys deleted |
//! | `order_product_stock{product_id}` | gauge | stock of the most recently active products (bounded set) |
//! | `db_pool_connections{pool="order",state}` | gauge | pool connections `in_use` / `idle` |
//!
//! [`register`] exports every family, described, before the first scrape: counters at 0,
//! gauges sampled once.

use std::time::Duration;

use lab_proto::order::v1::{FILE_DESCRIPTOR_SET, order_service_server::SERVICE_NAME};
use metrics::{describe_counter, describe_gauge};

use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::OrderError;

const ORDERS_CREATED: &str = "order_orders_created_total";
const ORDERS_CANCELLED: &str = "order_orders_cancelled_total";
const IDEMPOTENT_REPLAYS: &str = "order_idempotent_replays_total";
const KEY_REUSE: &str = "order_idempotency_key_reuse_total";
const OUT_OF_STOCK: &str = "order_out_of_stock_total";
const KEYS_REAPED: &str = "order_idempotency_keys_reaped_total";
const PRODUCT_STOCK: &str = "order_product_stock";
const POOL_CONNECTIONS: &str = "db_pool_connections";

/// Installs the process's recorder (if not yet), describes every family, exports the counters
/// at 0 (the per-RPC ones for every method and code too) and samples the gauges once, so the
/// first scrape already shows every family. Call before serving `/metrics`.
pub async fn register(pool: &PgPool, hot_products: i64) {
    lab_common::metrics_http::prometheus();
    describe_counter!(
        ORDERS_CREATED,
        "Orders created by CreateOrder (replays excluded)."
    );
    describe_counter!(
        ORDERS_CANCELLED,
        "CancelOrder calls that cancelled an order and returned its stock."
    );
    describe_counter!(
        IDEMPOTENT_REPLAYS,
        "CreateOrder calls answered from the stored result of an earlier call with the same key."
    );
    describe_counter!(
        KEY_REUSE,
        "CreateOrder calls refused with IDEMPOTENCY_KEY_REUSED (same key, different request)."
    );
    describe_counter!(OUT_OF_STOCK, "CreateOrder calls refused with OUT_OF_STOCK.");
    describe_counter!(
        KEYS_REAPED,
        "Idempotency keys deleted by the reaper after their retention."
    );
    describe_gauge!(
        PRODUCT_STOCK,
        "Stock of the most recently changed products (a bounded set), by product."
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "Database pool connections, by pool and state (in_use, idle)."
    );
    for counter in [
        ORDERS_CREATED,
        ORDERS_CANCELLED,
        IDEMPOTENT_REPLAYS,
        KEY_REUSE,
        OUT_OF_STOCK,
        KEYS_REAPED,
    ] {
        // Not `absolute(0)`: in tests several servers share the process's counts.
        metrics::counter!(counter).increment(0);
    }
    if let Err(error) =
        lab_common::grpc_metrics::preinitialise(&[FILE_DESCRIPTOR_SET], &[SERVICE_NAME])
    {
        tracing::warn!(%error, "the embedded descriptor set does not decode");
    }
    sample_once(pool, hot_products).await;
}

/// Records a created (`replayed == false`) or replayed order.
pub fn order_placed(replayed: bool) {
    if replayed {
        metrics::counter!(IDEMPOTENT_REPLAYS).increment(1);
    } else {
        metrics::counter!(ORDERS_CREATED).increment(1);
    }
}

/// Records a CreateOrder refusal worth watching.
pub fn order_refused(error: &OrderError) {
    match error {
        OrderError::OutOfStock { .. } => {
            metrics::counter!(OUT_OF_STOCK).increment(1);
        }
        OrderError::KeyReused => {
            metrics::counter!(KEY_REUSE).increment(1);
        }
        _ => {}
    }
}

/// Records a cancellation that returned stock.
pub fn order_cancelled() {
    metrics::counter!(ORDERS_CANCELLED).increment(1);
}

/// Records expired keys deleted by the reaper.
pub fn keys_reaped(count: u64) {
    metrics::counter!(KEYS_REAPED).increment(count);
}

/// Samples the gauges every `interval` until `stop`: pool usage, and the stock of the
/// `hot_products` most recently changed products (a bounded label set).
pub async fn sample(
    pool: PgPool,
    interval: Duration,
    hot_products: i64,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        sample_once(&pool, hot_products).await;
    }
}

async fn sample_once(pool: &PgPool, hot_products: i64) {
    let idle = pool.num_idle() as f64;
    metrics::gauge!(POOL_CONNECTIONS, "pool" => "order", "state" => "idle").set(idle);
    metrics::gauge!(POOL_CONNECTIONS, "pool" => "order", "state" => "in_use")
        .set(f64::from(pool.size()) - idle);
    let stocks: Result<Vec<(Uuid, i64)>, _> =
        sqlx::query_as("SELECT product_id, stock FROM products ORDER BY updated_at DESC LIMIT $1")
            .bind(hot_products)
            .fetch_all(pool)
            .await;
    match stocks {
        Ok(stocks) => {
            for (product_id, stock) in stocks {
                metrics::gauge!(PRODUCT_STOCK, "product_id" => product_id.to_string())
                    .set(stock as f64);
            }
        }
        Err(error) => tracing::warn!(%error, "sampling stock failed"),
    }
}
