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

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::OrderError;

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
