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

/// A service's migrated database and, when no URL was configured, the private server it lives
/// on (kept for the life of the service; [`ServiceDatabase::close`] stops it).
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

/// What a service tells load balancers: gRPC health for its public services and `/healthz`.
#[derive(Clone)]
pub struct ServingState {
    health: HealthReporter,
    readiness: Readiness,
    services: &'static [&'static str],
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
    pub async fn drain_on(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.readiness.set(false);
        self.set(ServingStatus::NotServing).await;
        tracing::info!("draining in-flight calls");
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
