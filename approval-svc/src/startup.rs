//! Start-up: database (given or throwaway), migrations, the order-svc client, listener, and the
//! server's life with its completer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use lab_common::auth::{AuthLayer, AuthSetupError, Verifier, WatchError};
use lab_common::grpc::{BoundListener, bind_tls, reflection};
use lab_common::grpc_metrics::GrpcMetricsLayer;
use lab_common::metrics_http::{self, Readiness};
use lab_common::postgres::PostgresError;
use lab_common::service::{self, ServiceDatabase, ServingState};
use lab_common::shutdown::Shutdown;
use lab_proto::approval::v1::FILE_DESCRIPTOR_SET;
use lab_proto::approval::v1::approval_service_server::{
    ApprovalServiceServer, SERVICE_NAME as APPROVAL_SERVICE_NAME,
};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use resilience::BreakerHandle;
use resilience::backoff::{Backoff, JitterRng};

use crate::breaker_gate::BreakerGate;
use crate::completer::{self, CompleterSettings};
use crate::config::{Config, ConfigError};
use crate::consistency::{Checker, CheckerSettings};
use crate::failpoints::FailurePoints;
use crate::orders::{ClientError, OrderGateway};
use crate::saga::{Saga, SagaSettings};
use crate::service::ApprovalApi;
use crate::service::ops::OpsApi;
use lab_common::alerts::Alerter;
use lab_proto::approval::v1::ops_service_server::{
    OpsServiceServer, SERVICE_NAME as OPS_SERVICE_NAME,
};

/// The challenges schema, applied at start-up (also usable with `sqlx migrate run`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/approval");

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The settings contradict each other.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Preparing, connecting to or migrating the database failed.
    #[error("database set-up failed: {0}")]
    Postgres(#[from] PostgresError),
    /// The order-svc client could not be built.
    #[error("order-svc client: {0}")]
    Client(#[from] ClientError),
    /// A TLS setting is wrong (a missing or unreadable file, a key without its certificate).
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] lab_common::tls::TlsError),
    /// Authentication could not be set up (protected mode, or the key file).
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// `--order-svc-token-file` could not be read.
    #[error("cannot load --order-svc-token-file: {0}")]
    OrderToken(#[from] WatchError),
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

/// A ready-to-serve approval-svc: database migrated, client built, listener bound.
#[derive(Debug)]
pub struct Application {
    config: Config,
    database: ServiceDatabase,
    listener: BoundListener,
    saga: Arc<Saga>,
    breaker: BreakerHandle,
    metrics_listener: Option<tokio::net::TcpListener>,
    verifier: Option<Verifier>,
}

impl Application {
    /// Checks the configuration, prepares the database (starting a throwaway PostgreSQL when no
    /// URL is configured), applies migrations, builds the order-svc client (lazily connected:
    /// order-svc may be down) and binds the listener.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        config.validate()?;
        // Before the database: a wrong file is found at once, not after a throwaway PostgreSQL.
        let tls = config.tls.load()?;
        let order_svc_tls = config.order_svc_tls()?;
        // Before anything is started: a refused configuration leaves nothing behind.
        let verifier = config.auth.verifier(config.listen).await?;
        let database = ServiceDatabase::open(
            config.database_url.as_deref(),
            "approval",
            config.db_pool_size,
            &MIGRATOR,
        )
        .await?;

        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                // The resilience layers register their metrics when built: install the
                // recorder first.
                metrics_http::prometheus();
                Some(metrics_http::bind(addr).await?)
            }
            None => None,
        };
        let (orders, breaker) = OrderGateway::discover(
            &config.order_svc_url,
            config.order_svc_resolve_interval,
            config.order_connect_timeout,
            order_svc_tls,
            config.resilience(),
        )
        .await?;
        let orders = match &config.order_svc_token_file {
            Some(path) => orders.with_token(path).await?,
            None => orders,
        };
        let saga = Arc::new(Saga::new(
            database.pool.clone(),
            orders,
            SagaSettings {
                lease: config.lease,
                order_call_timeout: config.order_call_timeout,
                post_call_margin: config.post_call_margin,
                max_attempts: config.max_attempts,
                backoff: Backoff {
                    base: config.retry_backoff_base,
                    cap: config.retry_backoff_cap,
                },
                jitter: JitterRng::thread(),
                write_refill_wait: config.write_batch_refill_wait,
                sold_out_ttl: config.sold_out_ttl,
            },
            config.failure_points.clone(),
        ));
        let listener = bind_tls(config.listen, tls.as_ref()).await?;
        Ok(Self {
            config,
            database,
            listener,
            saga,
            breaker,
            metrics_listener,
            verifier,
        })
    }

    /// The address the gRPC server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr
    }

    /// The address of `/metrics` and `/healthz`, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The database URL in use (the throwaway one when none was configured).
    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    /// The connection pool, for checks that read the database directly.
    pub fn pool(&self) -> &PgPool {
        &self.database.pool
    }

    /// The test failure points of this instance (shared with the configuration's handle).
    pub fn failure_points(&self) -> FailurePoints {
        self.config.failure_points.clone()
    }

    /// The circuit breaker of the order-svc client (state, stats, force open, reset).
    pub fn breaker(&self) -> BreakerHandle {
        self.breaker.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes in-flight calls, stops
    /// the completer after its current round and closes the pool.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let Self {
            config,
            database,
            listener,
            saga,
            breaker,
            metrics_listener,
            verifier,
        } = self;
        let pool = database.pool.clone();
        let api = ApprovalApi::new(Arc::clone(&saga), config.max_quantity);
        let checker = Arc::new(Checker::new(
            pool.clone(),
            saga.orders().clone(),
            Arc::clone(&saga),
            Alerter::new(
                config.alert_webhook_url.clone(),
                config.pagerduty_routing_key.clone(),
                "approval-svc",
            ),
            CheckerSettings {
                interval: (!config.check_interval.is_zero()).then_some(config.check_interval),
                // The lease is already in `lease_expires_at`; give the completer two rounds.
                settle: config.completer_period * 2,
                overlap: config.check_overlap,
            },
        ));
        let ops = OpsApi::new(
            pool.clone(),
            Arc::clone(&checker),
            breaker.clone(),
            saga.orders().endpoints(),
        );
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let (reflection_v1, reflection_v1alpha) = reflection(&[
            FILE_DESCRIPTOR_SET,
            lab_proto::google_rpc::FILE_DESCRIPTOR_SET,
        ])?;

        // After the drain the background work stops (the completer finishes its round), then
        // `/metrics`.
        let stop_background = Shutdown::new();
        let completer = tokio::spawn(completer::run(
            Arc::clone(&saga),
            CompleterSettings {
                period: config.completer_period,
                batch: config.completer_batch,
                concurrency: config.completer_concurrency,
                gate: {
                    let gate = BreakerGate::new(breaker);
                    Arc::new(move || gate.round_limit())
                },
            },
            stop_background.clone(),
        ));

        let checks = tokio::spawn(Arc::clone(&checker).run_periodically(stop_background.clone()));
        let sampler = tokio::spawn(crate::metrics::sample(
            pool.clone(),
            config.metrics_sample_interval,
            stop_background.clone(),
        ));

        let stop_metrics = Shutdown::new();
        let readiness = Readiness::default();
        if let Some(metrics_listener) = metrics_listener {
            crate::metrics::register(&pool).await;
            crate::consistency::metrics::register(&pool).await;
            metrics_http::spawn(metrics_listener, readiness.clone(), stop_metrics.clone())?;
        }
        let serving = ServingState::new(health_reporter, readiness, &[APPROVAL_SERVICE_NAME]);
        serving.serving().await;

        tracing::info!(tls = %listener.security, "listening on {}", listener.local_addr);
        let served = service::server(config.request_timeout, config.max_concurrent_requests)
            .layer(GrpcMetricsLayer::new(&[
                APPROVAL_SERVICE_NAME,
                OPS_SERVICE_NAME,
            ]))
            // Inside the metrics, so refusals are counted by code like any other answer.
            .layer(AuthLayer::new(verifier, crate::service::access::policy))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                ApprovalServiceServer::new(api).max_decoding_message_size(config.max_message_bytes),
            )
            .add_service(OpsServiceServer::new(ops))
            .serve_with_incoming_shutdown(listener.incoming, serving.clone().drain_on(shutdown));
        let served = serving.bounded(served, config.drain_timeout).await;

        stop_background.trigger();
        let _ = completer.await;
        let _ = checks.await;
        let _ = sampler.await;
        stop_metrics.trigger();
        database.close().await;
        tracing::info!("stopped");
        served.map_err(Into::into)
    }
}
