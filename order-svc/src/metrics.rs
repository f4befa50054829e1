//! order-svc's own metrics (besides the per-RPC `grpc_server_*` ones), through the `metrics`
//! facade; `/metrics` renders them in Prometheus text format.
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `order_orders_created_total` | counter | orders created (replays excluded) |
//! | `order_orders_cancelled_total` | counter | CancelOrder calls that returned stock |
//! | `order_idempotent_replays_total` | counter | CreateOrder answered from a stored result |
//! | `order_idempotency_key_reuse_total` | counter | refusals with IDEMPOTENCY_KEY_REUSED |
//! | `order_out_of_stock_total` | counter | refusals with OUT_OF_STOCK (fast path included) |
//! | `order_customer_limit_total` | counter | refusals with CUSTOMER_LIMIT_REACHED |
//! | `order_sold_out_fast_path_total` | counter | OUT_OF_STOCK answered from a sold-out flag, without the database |
//! | `order_batches_total` | counter | CreateOrder batches sent to the database (group commit) |
//! | `order_batch_size` | histogram | requests per batch |
//! | `order_stock_listener_connected` | gauge | 1 while the stock-change listener is connected and listening, else 0 |
//! | `order_stock_listener_disconnects_total` | counter | losses of the listener's connection |
//! | `order_stock_notifications_total` | counter | stock-change notifications received |
//! | `order_idempotency_keys_reaped_total` | counter | expired keys deleted |
//! | `order_product_stock{product_id}` | gauge | stock of the most recently active products (bounded set) |
//! | `db_pool_connections{pool="order",state}` | gauge | pool connections `in_use` / `idle` |
//!
//! [`register`] exports every family, described, before the first scrape: counters at 0,
//! gauges sampled once.

use std::time::Duration;

use lab_proto::order::v1::{FILE_DESCRIPTOR_SET, order_service_server::SERVICE_NAME};
use metrics::{describe_counter, describe_gauge};

use lab_common::shutdown::Shutdown;
use sqlx::PgPool;
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
const CUSTOMER_LIMIT: &str = "order_customer_limit_total";
const SOLD_OUT_FAST_PATH: &str = "order_sold_out_fast_path_total";
const BATCHES: &str = "order_batches_total";
const BATCH_SIZE: &str = "order_batch_size";
const LISTENER_CONNECTED: &str = "order_stock_listener_connected";
const LISTENER_DISCONNECTS: &str = "order_stock_listener_disconnects_total";
const STOCK_NOTIFICATIONS: &str = "order_stock_notifications_total";

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
    describe_counter!(
        OUT_OF_STOCK,
        "CreateOrder calls refused with OUT_OF_STOCK, from the database or a sold-out flag."
    );
    describe_counter!(
        CUSTOMER_LIMIT,
        "CreateOrder calls refused with CUSTOMER_LIMIT_REACHED."
    );
    describe_counter!(
        SOLD_OUT_FAST_PATH,
        "OUT_OF_STOCK answered from this instance's sold-out flag, without the database."
    );
    describe_counter!(
        BATCHES,
        "CreateOrder batches sent to the database (one transaction each)."
    );
    describe_counter!(
        LISTENER_DISCONNECTS,
        "Losses of the stock-change listener's connection (sold-out flags then expire fast)."
    );
    describe_counter!(
        STOCK_NOTIFICATIONS,
        "Stock-change notifications (Restock, CancelOrder) received by this instance."
    );
    metrics::describe_histogram!(
        BATCH_SIZE,
        "CreateOrder requests per batch (group commit on the hot row)."
    );
    describe_gauge!(
        LISTENER_CONNECTED,
        "1 while the stock-change listener is connected and listening, else 0."
    );
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
        CUSTOMER_LIMIT,
        SOLD_OUT_FAST_PATH,
        BATCHES,
        LISTENER_DISCONNECTS,
        STOCK_NOTIFICATIONS,
    ] {
        // Not `absolute(0)`: in tests several servers share the process's counts.
        metrics::counter!(counter).increment(0);
    }
    if let Err(error) =
        lab_common::grpc_metrics::preinitialise(&[FILE_DESCRIPTOR_SET], &[SERVICE_NAME])
    {
        tracing::warn!(%error, "the embedded descriptor set does not decode");
    }
    // The listener task sets 1 once it listens; until then (and without one) it is not.
    metrics::gauge!(LISTENER_CONNECTED).set(0.0);
    sample_once(pool, hot_products).await;
}

/// Records a batch of `size` CreateOrders sent to the database.
pub fn batch_sent(size: usize) {
    metrics::counter!(BATCHES).increment(1);
    metrics::histogram!(BATCH_SIZE).record(size as f64);
}

/// Records an OUT_OF_STOCK answered from a sold-out flag.
pub fn sold_out_fast_path() {
    metrics::counter!(SOLD_OUT_FAST_PATH).increment(1);
}

/// Records the stock-change listener connecting (`true`) or losing its connection.
pub fn stock_listener_connected(connected: bool) {
    metrics::gauge!(LISTENER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    if !connected {
        metrics::counter!(LISTENER_DISCONNECTS).increment(1);
    }
}

/// Records a stock-change notification received.
pub fn stock_notification() {
    metrics::counter!(STOCK_NOTIFICATIONS).increment(1);
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
        OrderError::CustomerLimitReached { .. } => {
            metrics::counter!(CUSTOMER_LIMIT).increment(1);
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
pub async fn sample(pool: PgPool, interval: Duration, hot_products: i64, stop: Shutdown) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.triggered() => return,
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
