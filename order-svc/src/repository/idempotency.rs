//! Expiry of idempotency keys' claims. Only the claim row goes: the order keeps its key column,
//! and `place_orders` consults it once the claim is gone, so expiry never lets a key create a
//! second order (LookupOrder and late retries still find the first).

use sqlx::PgPool;

/// Deletes up to `batch` expired keys; returns how many went. Small batches keep each delete
/// short so the reaper never competes with CreateOrder for long.
pub async fn reap_expired_keys(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE ctid IN (
             SELECT ctid FROM idempotency_keys
             WHERE expires_at < now()
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         )",
    )
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}
