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

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::OrderError;

/// Gives every order-svc metric its HELP text and registers it with a zero value, so dashboards
/// and alerts see the series before the first event. Call once the recorder is installed.
pub fn describe() {
    let counters = [
        (
            "order_orders_created_total",
            "Orders created (replays excluded).",
        ),
        (
            "order_orders_cancelled_total",
            "CancelOrder calls that returned stock.",
        ),
        (
            "order_idempotent_replays_total",
            "CreateOrder calls answered with the order their key already holds.",
        ),
        (
            "order_idempotency_key_reuse_total",
            "CreateOrder refusals with IDEMPOTENCY_KEY_REUSED.",
        ),
        (
            "order_out_of_stock_total",
            "CreateOrder refusals with OUT_OF_STOCK, from the database or a sold-out flag.",
        ),
        (
            "order_customer_limit_total",
            "CreateOrder refusals with CUSTOMER_LIMIT_REACHED.",
        ),
        (
            "order_sold_out_fast_path_total",
            "OUT_OF_STOCK answered from this instance's sold-out flag, without the database.",
        ),
        (
            "order_batches_total",
            "CreateOrder batches sent to the database (one transaction each).",
        ),
        (
            "order_stock_listener_disconnects_total",
            "Losses of the stock-change listener's connection (sold-out flags then expire fast).",
        ),
        (
            "order_stock_notifications_total",
            "Stock-change notifications (Restock, CancelOrder) received by this instance.",
        ),
        (
            "order_idempotency_keys_reaped_total",
            "Expired idempotency-key claims deleted by the reaper.",
        ),
    ];
    for (name, help) in counters {
        metrics::describe_counter!(name, help);
        metrics::counter!(name).increment(0);
    }
    metrics::describe_histogram!(
        "order_batch_size",
        "CreateOrder requests per batch (group commit on the hot row).",
    );
    metrics::describe_gauge!(
        "order_stock_listener_connected",
        "1 while the stock-change listener is connected and listening, else 0.",
    );
    metrics::gauge!("order_stock_listener_connected").set(0.0);
    metrics::describe_gauge!(
        "order_product_stock",
        "Stock of the most recently active products.",
    );
}

/// Records a batch of `size` CreateOrders sent to the database.
pub fn batch_sent(size: usize) {
    metrics::counter!("order_batches_total").increment(1);
    metrics::histogram!("order_batch_size").record(size as f64);
}

/// Records an OUT_OF_STOCK answered from a sold-out flag.
pub fn sold_out_fast_path() {
    metrics::counter!("order_sold_out_fast_path_total").increment(1);
}

/// Records the stock-change listener connecting (`true`) or losing its connection.
pub fn stock_listener_connected(connected: bool) {
    metrics::gauge!("order_stock_listener_connected").set(if connected { 1.0 } else { 0.0 });
    if !connected {
        metrics::counter!("order_stock_listener_disconnects_total").increment(1);
    }
}

/// Records a stock-change notification received.
pub fn stock_notification() {
    metrics::counter!("order_stock_notifications_total").increment(1);
}

/// Records a created (`replayed == false`) or replayed order.
pub fn order_placed(replayed: bool) {
    if replayed {
        metrics::counter!("order_idempotent_replays_total").increment(1);
    } else {
        metrics::counter!("order_orders_created_total").increment(1);
    }
}

/// Records a CreateOrder refusal worth watching.
pub fn order_refused(error: &OrderError) {
    match error {
        OrderError::OutOfStock { .. } => {
            metrics::counter!("order_out_of_stock_total").increment(1);
        }
        OrderError::KeyReused => {
            metrics::counter!("order_idempotency_key_reuse_total").increment(1);
        }
        OrderError::CustomerLimitReached { .. } => {
            metrics::counter!("order_customer_limit_total").increment(1);
        }
        _ => {}
    }
}

/// Records a cancellation that returned stock.
pub fn order_cancelled() {
    metrics::counter!("order_orders_cancelled_total").increment(1);
}

/// Records expired keys deleted by the reaper.
pub fn keys_reaped(count: u64) {
    metrics::counter!("order_idempotency_keys_reaped_total").increment(count);
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
        let idle = pool.num_idle() as f64;
        metrics::gauge!("db_pool_connections", "pool" => "order", "state" => "idle").set(idle);
        metrics::gauge!("db_pool_connections", "pool" => "order", "state" => "in_use")
            .set(f64::from(pool.size()) - idle);
        let stocks: Result<Vec<(Uuid, i64)>, _> = sqlx::query_as(
            "SELECT product_id, stock FROM products ORDER BY updated_at DESC LIMIT $1",
        )
        .bind(hot_products)
        .fetch_all(&pool)
        .await;
        match stocks {
            Ok(stocks) => {
                for (product_id, stock) in stocks {
                    metrics::gauge!("order_product_stock", "product_id" => product_id.to_string())
                        .set(stock as f64);
                }
            }
            Err(error) => tracing::warn!(%error, "sampling stock failed"),
        }
    }
}
