//! The life of a service process, shared by order-svc and approval-svc: its database (the
//! configured one, or a private throwaway server), the tonic server with the project's limits
//! and layers, the drain on shutdown, and the exit code.

use std::future::Future;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

use crate::grpc::{ObservabilityLayer, observability};
use crate::metrics_http::Readiness;
use crate::postgres::{PostgresError, ThrowawayPostgres, connect, create_database};
use crate::shutdown::Shutdown;

/// A service's migrated database and, when no URL was configured, the private server it lives
/// on (kept for the life of the service; [`ServiceDatabase::close`] stops it).
#[derive(Debug)]
pub struct ServiceDatabase {
    /// The connection pool.
    pub pool: PgPool,
    /// The database URL in use (the throwaway one when none was configured).
    pub url: String,
    throwaway: Option<ThrowawayPostgres>,
}

impl ServiceDatabase {
    /// Connects to `configured_url` or, when there is none, starts a throwaway PostgreSQL and
    /// creates database `name` on it; then applies `migrator`.
    pub async fn open(
        configured_url: Option<&str>,
        name: &str,
        pool_size: u32,
        migrator: &Migrator,
    ) -> Result<Self, PostgresError> {
        let (url, throwaway) = match configured_url {
            Some(url) => (url.to_owned(), None),
            None => {
                let server = tokio::task::spawn_blocking(ThrowawayPostgres::start)
                    .await
                    .map_err(std::io::Error::other)??;
                let url = create_database(&server.admin_url(), name).await?;
                tracing::info!(database_url = %url, "using a throwaway PostgreSQL");
                (url, Some(server))
            }
        };
        let pool = connect(&url, pool_size).await?;
        migrator.run(&pool).await?;
        Ok(Self {
            pool,
            url,
            throwaway,
        })
    }

    /// Closes the pool, then stops the throwaway server if there is one.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(server) = self.throwaway {
            // pg_ctl stop blocks; keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || drop(server)).await;
        }
    }
}

/// The tonic server builder every service starts from: a bound on any call's duration, a
/// per-connection concurrency limit that fails fast (RESOURCE_EXHAUSTED) instead of queueing,
/// and request ids with a span per call outermost.
pub fn server(
    request_timeout: Duration,
    max_concurrent_requests: usize,
) -> Server<Stack<ObservabilityLayer, Identity>> {
    Server::builder()
        .timeout(request_timeout)
        .concurrency_limit_per_connection(max_concurrent_requests)
        .load_shed(true)
        .layer(observability())
}

/// What a service tells load balancers: gRPC health for its public services and `/healthz`;
/// and when its drain began, so the drain can be bounded ([`ServingState::bounded`]).
#[derive(Debug, Clone)]
pub struct ServingState {
    health: HealthReporter,
    readiness: Readiness,
    services: &'static [&'static str],
    draining: Shutdown,
}

impl ServingState {
    /// Reports through `health` (for the fully qualified `services`) and `readiness`.
    pub fn new(
        health: HealthReporter,
        readiness: Readiness,
        services: &'static [&'static str],
    ) -> Self {
        Self {
            health,
            readiness,
            services,
            draining: Shutdown::new(),
        }
    }

    /// Marks every service SERVING and `/healthz` ready.
    pub async fn serving(&self) {
        self.set(ServingStatus::Serving).await;
        self.readiness.set(true);
    }

    /// Resolves when `shutdown` does, after marking everything not serving, so that load
    /// balancers polling health stop sending new calls while in-flight ones finish. Pass the
    /// result to `serve_with_incoming_shutdown`.
    ///
    /// tonic's server then closes the listener (new connections are refused), sends every
    /// connection an HTTP/2 GOAWAY (a client's calls above the last stream it names were not
    /// processed and may go elsewhere), and waits for the calls in flight.
    pub async fn drain_on(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.readiness.set(false);
        self.set(ServingStatus::NotServing).await;
        self.draining.trigger();
        tracing::info!("draining in-flight calls");
    }

    /// Runs `serve` (the server future given [`drain_on`](Self::drain_on)) until it ends, but
    /// no longer than `drain_timeout` after the drain began: tonic waits for every connection
    /// to close, and one stuck call (or a client that keeps its connection open) must not keep
    /// a stopping process alive. Calls still running then are abandoned with the process.
    pub async fn bounded<E>(
        &self,
        serve: impl Future<Output = Result<(), E>>,
        drain_timeout: Duration,
    ) -> Result<(), E> {
        let mut serve = std::pin::pin!(serve);
        tokio::select! {
            served = &mut serve => return served,
            () = self.draining.triggered() => {}
        }
        match tokio::time::timeout(drain_timeout, serve).await {
            Ok(served) => served,
            Err(_) => {
                tracing::warn!(
                    ?drain_timeout,
                    "drain timeout: abandoning the calls still in flight"
                );
                Ok(())
            }
        }
    }

    async fn set(&self, status: ServingStatus) {
        for service in self.services {
            self.health.set_service_status(*service, status).await;
        }
    }
}

/// The process exit code for a service's outcome, logging the error that ended it.
pub fn exit_code(
    service: &str,
    outcome: Result<(), impl std::fmt::Display>,
) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, service, "stopped on an error");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn state() -> (ServingState, Readiness) {
        let (reporter, _health) = tonic_health::server::health_reporter();
        let readiness = Readiness::default();
        (
            ServingState::new(reporter, readiness.clone(), &["lab.test.v1.Test"]),
            readiness,
        )
    }

    #[tokio::test]
    async fn a_stuck_drain_ends_at_the_drain_timeout_and_reports_not_ready() {
        let (serving, readiness) = state();
        serving.serving().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let drain = tokio::spawn(serving.clone().drain_on(async {
            let _ = stopped.await;
        }));
        // A server whose last call never finishes.
        let stuck = async {
            drain.await.unwrap();
            std::future::pending::<Result<(), ()>>().await
        };
        let drain_timeout = Duration::from_millis(200);
        let bounded = tokio::spawn({
            let serving = serving.clone();
            async move { serving.bounded(stuck, drain_timeout).await }
        });
        tokio::time::sleep(drain_timeout * 2).await;
        assert!(!bounded.is_finished(), "no drain before the signal");
        let signalled = tokio::time::Instant::now();
        stop.send(()).unwrap();
        assert_eq!(bounded.await.unwrap(), Ok(()));
        assert!(!readiness.is_ready(), "not ready while draining");
        let took = signalled.elapsed();
        assert!(
            took >= drain_timeout && took < drain_timeout * 5,
            "ended {took:?} after the signal"
        );
    }

    #[tokio::test]
    async fn a_server_that_ends_by_itself_is_not_held() {
        let (serving, _) = state();
        assert_eq!(
            serving
                .bounded(async { Err::<(), _>("failed") }, Duration::from_secs(10))
                .await,
            Err("failed")
        );
    }
}
