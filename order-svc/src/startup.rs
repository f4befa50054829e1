//! Start-up: database (given or throwaway), migrations, listener, and the server's life.

use std::future::Future;
use std::net::SocketAddr;

use lab_common::grpc::{BoundListener, bind, observability, reflection};
use lab_common::grpc_metrics::GrpcMetricsLayer;
use lab_common::metrics_http::{self, Readiness};
use lab_common::postgres::{PostgresError, ThrowawayPostgres, connect, create_database};
use lab_proto::order::v1::FILE_DESCRIPTOR_SET;
use lab_proto::order::v1::order_service_server::{
    OrderServiceServer, SERVICE_NAME as ORDER_SERVICE_NAME,
};
use resilience::{FaultHandle, FaultLayer};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::sync::watch;
use tonic::transport::Server;

use crate::config::Config;
use crate::domain::Limits;
use crate::reaper;
use crate::service::OrderApi;

/// The shop's schema, applied at start-up (also usable with `sqlx migrate run`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/order");

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Preparing the database failed.
    #[error("database set-up failed: {0}")]
    Postgres(#[from] PostgresError),
    /// Connecting to the database failed.
    #[error("database connection failed: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Binding the listener failed.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// Building the reflection service failed.
    #[error("reflection set-up failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A ready-to-serve order-svc: database migrated, listener bound.
pub struct Application {
    config: Config,
    pool: PgPool,
    listener: BoundListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    faults: FaultHandle,
    database_url: String,
    // Kept alive for the life of the service; dropping it stops the private server.
    throwaway: Option<ThrowawayPostgres>,
}

impl Application {
    /// Prepares the database (starting a throwaway PostgreSQL when no URL is configured),
    /// applies migrations and binds the listener.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let (database_url, throwaway) = match &config.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let server = tokio::task::spawn_blocking(ThrowawayPostgres::start)
                    .await
                    .map_err(std::io::Error::other)??;
                let url = create_database(&server.admin_url(), "order").await?;
                tracing::info!(database_url = %url, "using a throwaway PostgreSQL");
                (url, Some(server))
            }
        };
        let pool = connect(&database_url, config.db_pool_size).await?;
        MIGRATOR.run(&pool).await?;
        let listener = bind(config.listen).await?;
        let faults = match &config.faults {
            Some(plan) => {
                tracing::warn!(%plan, "fault injection enabled");
                FaultHandle::new(plan.clone())
            }
            None => FaultHandle::disabled(),
        };
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(metrics_http::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            faults,
            metrics_listener,
            config,
            pool,
            listener,
            database_url,
            throwaway,
        })
    }

    /// The fault-injection handle: tests and drills change the faults while the server runs.
    pub fn faults(&self) -> FaultHandle {
        self.faults.clone()
    }

    /// The address of `/metrics` and `/healthz`, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The address the gRPC server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr
    }

    /// The database URL in use (the throwaway one when none was configured).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The connection pool, for checks that read the database directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes in-flight calls and
    /// closes the pool.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let Self {
            config,
            pool,
            listener,
            metrics_listener,
            faults,
            throwaway,
            ..
        } = self;
        let api = OrderApi::new(
            pool.clone(),
            Limits {
                max_quantity: config.max_quantity,
            },
            config.idempotency_retention,
        );
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<OrderServiceServer<OrderApi>>()
            .await;
        let (reflection_v1, reflection_v1alpha) = reflection(&[
            FILE_DESCRIPTOR_SET,
            lab_proto::google_rpc::FILE_DESCRIPTOR_SET,
        ])?;

        let (stop_background, stopped) = watch::channel(false);
        let reaper = tokio::spawn(reaper::run(
            pool.clone(),
            config.reaper_interval,
            stopped.clone(),
        ));
        let sampler = tokio::spawn(crate::metrics::sample(
            pool.clone(),
            config.metrics_sample_interval,
            config.stock_metrics_products,
            stopped.clone(),
        ));
        let readiness = Readiness::default();
        if let Some(metrics_listener) = metrics_listener {
            metrics_http::spawn(metrics_listener, readiness.clone(), stopped)?;
        }
        readiness.set(true);

        let draining = async move {
            shutdown.await;
            readiness.set(false);
            // Load balancers polling health stop sending new calls while in-flight ones finish.
            health_reporter
                .set_not_serving::<OrderServiceServer<OrderApi>>()
                .await;
            tracing::info!("draining in-flight calls");
        };

        tracing::info!("listening on {}", listener.local_addr);
        let served = Server::builder()
            .timeout(config.request_timeout)
            .concurrency_limit_per_connection(config.max_concurrent_requests)
            .load_shed(true)
            .layer(observability())
            .layer(GrpcMetricsLayer::new(&[ORDER_SERVICE_NAME]))
            // Innermost, so injected faults show in the metrics and traces like real ones.
            .layer(FaultLayer::new(faults))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                OrderServiceServer::new(api).max_decoding_message_size(config.max_message_bytes),
            )
            .serve_with_incoming_shutdown(listener.incoming, draining)
            .await;

        let _ = stop_background.send(true);
        let _ = reaper.await;
        let _ = sampler.await;
        pool.close().await;
        if let Some(server) = throwaway {
            // pg_ctl stop blocks; keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || drop(server)).await;
        }
        tracing::info!("stopped");
        served.map_err(Into::into)
    }
}
