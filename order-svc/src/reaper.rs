//! Periodic deletion of expired idempotency keys.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

const BATCH: i64 = 1_000;

/// Deletes expired keys every `interval` until `stop` turns true. Runs in every instance: the
/// `SKIP LOCKED` delete lets several reapers share the work without blocking each other.
pub async fn run(pool: PgPool, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
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
