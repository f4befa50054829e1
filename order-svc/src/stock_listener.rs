//! The LISTEN side of the sold-out flags: a dedicated connection listening on
//! [`STOCK_CHANNEL`], dropping a product's flag when a Restock or CancelOrder of it commits.
//!
//! The connection is the flags' lifeline, so its state is explicit: connected only once LISTEN
//! is active (flags then live [`crate::sold_out::LISTENING_TTL`]), and on any loss the flags
//! are cleared and later ones expire quickly until a new connection listens again (reconnects
//! back off exponentially). A silently dead connection is found by a ping when nothing arrived
//! for [`PING_AFTER`]. The `order_stock_listener_connected` gauge and the logs say which state
//! it is in.

use std::io::ErrorKind;
use std::time::Duration;

use std::str::FromStr;

use lab_common::shutdown::Shutdown;
use resilience::backoff::Backoff;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use uuid::Uuid;

use crate::repository::STOCK_CHANNEL;
use crate::sold_out::SoldOutFlags;

/// The listener connection's `application_name`.
pub const APPLICATION_NAME: &str = "order-svc stock listener";
/// Quiet time after which the connection is pinged.
pub const PING_AFTER: Duration = Duration::from_secs(1);
/// How long a ping may take before the connection counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Waits between reconnection attempts: 50 ms doubling up to 5 s, without jitter (one
/// listener per instance: nothing to spread out).
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));

/// Listens until `stop` is triggered, keeping `flags` told whether it is connected.
pub async fn run(database_url: String, flags: SoldOutFlags, stop: Shutdown) {
    // Failed attempts since the last connection that listened.
    let mut failures = 0u32;
    loop {
        let connected = tokio::select! {
            connected = connect(&database_url) => connected,
            () = stop.triggered() => return,
        };
        match connected {
            Ok(listener) => {
                flags.set_listening(true);
                crate::metrics::stock_listener_connected(true);
                tracing::info!(channel = STOCK_CHANNEL, "listening for stock changes");
                failures = 0;
                tokio::select! {
                    error = listen(listener, &flags) => {
                        flags.set_listening(false);
                        crate::metrics::stock_listener_connected(false);
                        tracing::warn!(
                            %error,
                            "stock notifications lost; sold-out flags expire quickly until the \
                             listener is back"
                        );
                    }
                    () = stop.triggered() => return,
                }
            }
            Err(error) => {
                let retry_in = RECONNECT.ceiling(failures.saturating_add(1));
                tracing::warn!(%error, ?retry_in, "cannot listen for stock changes");
            }
        }
        failures = failures.saturating_add(1);
        let backoff = RECONNECT.ceiling(failures);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            () = stop.triggered() => return,
        }
    }
}

async fn connect(database_url: &str) -> Result<PgListener, sqlx::Error> {
    // Its own one-connection pool, named so pg_stat_activity shows which connection it is.
    let options = PgConnectOptions::from_str(database_url)?.application_name(APPLICATION_NAME);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options);
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    // A lost connection is reported, not silently replaced: the flags must know.
    listener.eager_reconnect(false);
    listener.listen(STOCK_CHANNEL).await?;
    Ok(listener)
}

/// Applies notifications until the connection is lost; returns why.
async fn listen(mut listener: PgListener, flags: &SoldOutFlags) -> sqlx::Error {
    loop {
        // try_recv is cancel-safe (it keeps partial messages), so a timeout may interrupt it.
        match tokio::time::timeout(PING_AFTER, listener.try_recv()).await {
            Ok(Ok(Some(notification))) => match Uuid::parse_str(notification.payload()) {
                Ok(product_id) => {
                    flags.invalidate(product_id);
                    crate::metrics::stock_notification();
                }
                Err(_) => tracing::debug!(payload = notification.payload(), "not a product id"),
            },
            Ok(Ok(None)) => return lost(ErrorKind::ConnectionAborted, "the connection was closed"),
            Ok(Err(error)) => return error,
            Err(_quiet) => {
                let ping = sqlx::query("SELECT 1").execute(&mut listener);
                match tokio::time::timeout(PING_TIMEOUT, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return error,
                    Err(_) => return lost(ErrorKind::TimedOut, "the ping timed out"),
                }
            }
        }
    }
}

fn lost(kind: ErrorKind, why: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(kind, why))
}
