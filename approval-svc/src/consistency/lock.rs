//! One check at a time across instances: a PostgreSQL session-level advisory lock, held on a
//! connection of its own for the length of the check.
//!
//! The lock belongs to the database session, so it must never go back to the pool while held:
//! a cancelled check (the caller of `RunConsistencyCheck` gave up, the server's request timeout
//! dropped the future) or a panic would otherwise leave it on a pooled connection for that
//! connection's whole lifetime, and every later check would answer Busy. So the connection is
//! returned to the pool only after an unlock that completed; on any other path it is closed,
//! and the server releases the lock with the session. A transaction-scoped lock would release
//! itself too, but an idle-in-transaction timeout could then end it in the middle of a check.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;

/// The advisory lock key that makes checks exclusive across instances.
const CHECK_LOCK: i64 = 0x6c61_625f_6368_6b31; // "lab_chk1"

/// How often a waiting check tries the lock again.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// The lock's connection: pooled again only when it is known to hold no lock.
struct LockConnection {
    connection: PoolConnection<Postgres>,
    /// False from the moment a lock statement is sent until it is known that the session holds
    /// no lock: a future dropped in that window may have taken the lock unseen.
    clean: bool,
}

impl Drop for LockConnection {
    fn drop(&mut self) {
        if !self.clean {
            // Ending the session is the one release no cancellation can skip.
            self.connection.close_on_drop();
        }
    }
}

/// The held check lock. Release it with [`CheckLock::release`]; dropped instead, its
/// connection is closed, which releases it as well.
pub struct CheckLock {
    connection: LockConnection,
}

impl std::fmt::Debug for CheckLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckLock")
            .field("clean", &self.connection.clean)
            .finish_non_exhaustive()
    }
}

impl CheckLock {
    /// Takes the lock, trying again for up to `wait` while another instance's check holds it;
    /// `None` when it is still taken.
    pub async fn acquire(pool: &PgPool, wait: Duration) -> sqlx::Result<Option<Self>> {
        let mut connection = LockConnection {
            connection: pool.acquire().await?,
            clean: true,
        };
        let waited = Instant::now();
        loop {
            connection.clean = false;
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(CHECK_LOCK)
                .fetch_one(&mut *connection.connection)
                .await?;
            if locked {
                return Ok(Some(Self { connection }));
            }
            connection.clean = true;
            if waited.elapsed() >= wait {
                return Ok(None);
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Releases the lock and gives the connection back to the pool.
    pub async fn release(mut self) {
        let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(CHECK_LOCK)
            .fetch_one(&mut *self.connection.connection)
            .await;
        // Anything but a confirmed unlock leaves the connection to be closed on drop.
        if matches!(unlocked, Ok(true)) {
            self.connection.clean = true;
        }
    }
}
