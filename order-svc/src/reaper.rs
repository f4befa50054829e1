//! Periodic deletion of expired idempotency keys.

use std::time::Duration;

use lab_common::shutdown::Shutdown;
use sqlx::PgPool;

const BATCH: i64 = 1_000;

/// Deletes expired keys every `interval` until `stop` is triggered. Runs in every instance: the
/// `SKIP LOCKED` delete lets several reapers share the work without blocking each other.
pub async fn run(pool: PgPool, interval: Duration, stop: Shutdown) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.triggered() => return,
        }
        loop {
            match crate::repository::reap_expired_keys(&pool, BATCH).await {
                Ok(deleted) if deleted == BATCH as u64 => crate::metrics::keys_reaped(deleted),
                Ok(deleted) => {
                    crate::metrics::keys_reaped(deleted);
                    if deleted > 0 {
                        tracing::info!(deleted, "expired idempotency keys deleted");
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "reaping idempotency keys failed");
                    break;
                }
            }
        }
    }
}
