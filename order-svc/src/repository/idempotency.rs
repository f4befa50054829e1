//! Expiry of idempotency keys. Orders keep their key column forever (LookupOrder still finds
//! them); only the claim that blocks reuse of the key expires.

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
