//! Stopping: the one [`Shutdown`] signal every long-lived task of a process watches (background
//! loops, the `/metrics` server, a server's drain), and the process signals that start it.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// A shutdown signal: cloned into every task that must stop with its owner, triggered once by
/// whoever decides the owner stops. Triggering is idempotent and sticky (a task that starts
/// waiting afterwards sees it at once), and waiting is cancel-safe, so it sits in a
/// `tokio::select!` of any loop.
///
/// A thin wrapper over tokio-util's `CancellationToken` (see `docs/decisions.md`, "Issue 15:
/// structure and test scaffolding"): the one type both triggers and is awaited, and needs no
/// `Receiver` state, so the `watch::Receiver<bool>` / `wait_for(|stopped| *stopped)` pairs and
/// the token beside them are one concept again.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown: every clone's [`triggered`](Self::triggered) resolves. Repeating it
    /// does nothing.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether the shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once the shutdown has started (at once if it already has). The future owns a
    /// clone, so it can be spawned or handed to a server as its shutdown future.
    pub fn triggered(&self) -> impl Future<Output = ()> + Send + 'static {
        self.0.clone().cancelled_owned()
    }
}

/// Resolves when the process receives SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Shutdown;

    #[tokio::test]
    async fn every_clone_sees_the_trigger_even_after_it() {
        let shutdown = Shutdown::new();
        let waiting = tokio::spawn(shutdown.clone().triggered());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "nothing before the trigger");
        assert!(!shutdown.is_triggered());
        shutdown.clone().trigger();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a waiter wakes")
            .unwrap();
        assert!(shutdown.is_triggered());
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), shutdown.triggered())
            .await
            .expect("a late waiter returns at once");
    }
}
