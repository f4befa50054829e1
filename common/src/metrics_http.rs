//! The metrics endpoint: Prometheus text format on `/metrics` and a readiness probe on
//! `/healthz`, served over plain HTTP on their own port, apart from gRPC.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::shutdown::Shutdown;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

/// Longest a `/metrics` or `/healthz` answer may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Latency buckets (seconds) for every `*_seconds` histogram: 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for every `*_batch_size` histogram (requests per group-committed batch): 1 to 1024.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The process-wide Prometheus recorder, installed on first use. One process has one metrics
/// registry (the `metrics` facade is global); services name their metrics apart.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Suffix("_batch_size".into()),
                    BATCH_SIZE_BUCKETS,
                )
            })
            .expect("the bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder was installed first; ours then renders nothing,
        // which beats refusing to start.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        handle
    })
}

/// Binds the metrics endpoint's listener (port 0 picks a free one), so a service can report
/// the address before it starts serving.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Whether the service is ready for traffic, as `/healthz` reports it.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the service ready (200) or not (503).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// The current state.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves `/metrics` and `/healthz` on `listener` (see [`bind`]) until `stop` is triggered.
pub fn spawn(
    listener: tokio::net::TcpListener,
    readiness: Readiness,
    stop: Shutdown,
) -> std::io::Result<SocketAddr> {
    let handle = prometheus().clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(
                |State((handle, _)): State<(PrometheusHandle, Readiness)>| async move {
                    handle.render()
                },
            ),
        )
        .route(
            "/healthz",
            get(
                |State((_, readiness)): State<(PrometheusHandle, Readiness)>| async move {
                    if readiness.is_ready() {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                },
            ),
        )
        .with_state((handle, readiness))
        .layer(
            ServiceBuilder::new()
                .layer(
                    // Scrapes and probes are routine; a 503 from /healthz while draining is
                    // expected, not an error.
                    TraceLayer::new_for_http()
                        .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
                )
                // A stuck render must not pile up scrapes: Prometheus retries on its own.
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    SCRAPE_TIMEOUT,
                )),
        );
    let local_addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.triggered())
            .await
        {
            tracing::warn!(%error, "metrics endpoint failed");
        }
    });
    tracing::info!(addr = %local_addr, "metrics on http://{local_addr}/metrics");
    Ok(local_addr)
}
