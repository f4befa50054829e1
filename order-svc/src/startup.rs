//! Start-up: database (given or throwaway), migrations, listener, and the server's life.

use std::future::Future;
use std::net::SocketAddr;

use lab_common::auth::{AuthLayer, AuthSetupError, Verifier};
use lab_common::grpc::{BoundListener, bind_tls, reflection};
use lab_common::grpc_metrics::GrpcMetricsLayer;
use lab_common::metrics_http::{self, Readiness};
use lab_common::postgres::PostgresError;
use lab_common::service::{self, ServiceDatabase, ServingState};
use lab_common::shutdown::Shutdown;
use lab_proto::order::v1::FILE_DESCRIPTOR_SET;
use lab_proto::order::v1::ops_service_server::{
    OpsServiceServer, SERVICE_NAME as OPS_SERVICE_NAME,
};
use lab_proto::order::v1::order_service_server::{
    OrderServiceServer, SERVICE_NAME as ORDER_SERVICE_NAME,
};
use resilience::{FaultHandle, FaultLayer};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::config::Config;
use crate::domain::Limits;
use crate::group_commit::GroupCommit;
use crate::reaper;
use crate::service::OrderApi;
use crate::service::ops::OpsApi;
use crate::sold_out::SoldOutFlags;
use crate::stock_listener;
use lab_common::batch::{Batching, Refill};

/// The shop's schema, applied at start-up (also usable with `sqlx migrate run`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/order");

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Preparing, connecting to or migrating the database failed.
    #[error("database set-up failed: {0}")]
    Postgres(#[from] PostgresError),
    /// A TLS setting is wrong (a missing or unreadable file, a key without its certificate).
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] lab_common::tls::TlsError),
    /// Binding the listener failed.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// Building the reflection service failed.
    #[error("reflection set-up failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Authentication could not be set up (protected mode, or the key file).
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A ready-to-serve order-svc: database migrated, listener bound.
#[derive(Debug)]
pub struct Application {
    config: Config,
    database: ServiceDatabase,
    listener: BoundListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    faults: FaultHandle,
    orders: GroupCommit,
    sold_out: SoldOutFlags,
    verifier: Option<Verifier>,
}

impl Application {
    /// Reads the TLS files, prepares the database (starting a throwaway PostgreSQL when no URL is
    /// configured), applies migrations and binds the listener.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        config.validate()?;
        // Before the database: a wrong file is found at once, not after a throwaway PostgreSQL.
        let tls = config.tls.load()?;
        // Before anything is started: a refused configuration leaves nothing behind.
        let verifier = config.auth.verifier(config.listen).await?;
        let database = ServiceDatabase::open(
            config.database_url.as_deref(),
            "order",
            config.db_pool_size,
            &MIGRATOR,
        )
        .await?;
        let listener = bind_tls(config.listen, tls.as_ref()).await?;
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
        let sold_out =
            SoldOutFlags::new(config.sold_out_fast_path, config.sold_out_disconnected_ttl);
        let orders = GroupCommit::new(
            database.pool.clone(),
            config.idempotency_retention,
            Batching {
                max_batch: usize::from(config.order_batch_max),
                refill: Refill {
                    max_wait: config.order_batch_refill_wait,
                },
            },
            sold_out.clone(),
        );
        Ok(Self {
            verifier,
            orders,
            sold_out,
            faults,
            metrics_listener,
            config,
            database,
            listener,
        })
    }

    /// The fault-injection handle: tests and drills change the faults while the server runs.
    pub fn faults(&self) -> FaultHandle {
        self.faults.clone()
    }

    /// This instance's sold-out flags: tests and diagnostics read them while the server runs.
    pub fn sold_out_flags(&self) -> SoldOutFlags {
        self.sold_out.clone()
    }

    /// This instance's CreateOrder batching: tests and diagnostics watch its queues.
    pub fn group_commit(&self) -> GroupCommit {
        self.orders.clone()
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
        &self.database.url
    }

    /// The connection pool, for checks that read the database directly.
    pub fn pool(&self) -> &PgPool {
        &self.database.pool
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes in-flight calls and
    /// closes the pool.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let Self {
            config,
            database,
            listener,
            metrics_listener,
            faults,
            orders,
            sold_out,
            verifier,
        } = self;
        let pool = database.pool.clone();
        let api = OrderApi::new(
            pool.clone(),
            Limits {
                max_quantity: config.max_quantity,
            },
            orders,
            sold_out.clone(),
        );
        let ops = OpsApi::new(pool.clone());
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let (reflection_v1, reflection_v1alpha) = reflection(&[
            FILE_DESCRIPTOR_SET,
            lab_proto::google_rpc::FILE_DESCRIPTOR_SET,
        ])?;

        // Before any background task records: the families exist, described, from here on.
        if metrics_listener.is_some() {
            crate::metrics::register(&pool, config.stock_metrics_products).await;
        }
        // Stopped once the drain is over, not at the signal: calls in flight until then still
        // get the sold-out listener and the metrics endpoint.
        let stop_background = Shutdown::new();
        let reaper = tokio::spawn(reaper::run(
            pool.clone(),
            config.reaper_interval,
            stop_background.clone(),
        ));
        let sampler = tokio::spawn(crate::metrics::sample(
            pool.clone(),
            config.metrics_sample_interval,
            config.stock_metrics_products,
            stop_background.clone(),
        ));
        let listener_task = config.sold_out_fast_path.then(|| {
            tokio::spawn(stock_listener::run(
                database.url.clone(),
                sold_out.clone(),
                stop_background.clone(),
            ))
        });
        let readiness = Readiness::default();
        if let Some(metrics_listener) = metrics_listener {
            metrics_http::spawn(metrics_listener, readiness.clone(), stop_background.clone())?;
        }
        let serving = ServingState::new(health_reporter, readiness, &[ORDER_SERVICE_NAME]);
        serving.serving().await;

        tracing::info!(tls = %listener.security, "listening on {}", listener.local_addr);
        let served = service::server(config.request_timeout, config.max_concurrent_requests)
            .layer(GrpcMetricsLayer::new(&[
                ORDER_SERVICE_NAME,
                OPS_SERVICE_NAME,
            ]))
            // Inside the metrics, so refusals are counted by code like any other answer.
            .layer(AuthLayer::new(verifier, crate::service::access::policy))
            // Innermost, so injected faults show in the metrics and traces like real ones.
            .layer(FaultLayer::new(faults))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                OrderServiceServer::new(api).max_decoding_message_size(config.max_message_bytes),
            )
            .add_service(
                OpsServiceServer::new(ops).max_decoding_message_size(config.max_message_bytes),
            )
            .serve_with_incoming_shutdown(listener.incoming, serving.clone().drain_on(shutdown));
        // tonic waits for every connection to close; a client that keeps one open must not
        // keep a drained instance alive past its drain timeout.
        let served = serving.bounded(served, config.drain_timeout).await;

        stop_background.trigger();
        let _ = reaper.await;
        if let Some(listener_task) = listener_task {
            let _ = listener_task.await;
        }
        let _ = sampler.await;
        database.close().await;
        tracing::info!("stopped");
        served.map_err(Into::into)
    }
}
