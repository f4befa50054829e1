//! Many instances, one health per endpoint: a balanced set of endpoints where each has its own
//! failure detector, the balancer picks among the admitted ones, and the service-wide circuit
//! breaker opens only when none is left.
//!
//! The model is Envoy's outlier detection and Linkerd's failure accrual:
//!
//! - every endpoint (one address) has a [`detector`](EndpointState) that ejects it after
//!   `consecutive_failures` server failures in a row, a failure share over a window, or at once
//!   when it refused a connection or a stream before the request was sent; the ejection lasts
//!   `eject_base * 2^k` (capped, jittered), then one probe attempt readmits or re-ejects it
//!   ([`crate::config::OutlierConfig`]);
//! - the balancer is tower's power-of-two-choices [`Balance`] over the endpoints' PeakEWMA
//!   latency, fed by a `discover` stream of `Change::Insert`/`Change::Remove`; an ejected
//!   endpoint (or one whose probe is out) is not ready, so it is never picked;
//! - an endpoint that failed within `avoid_after_failure` loses any p2c draw against one that
//!   did not, so a retry goes to another endpoint when one is admitted (the idempotency key
//!   makes the re-send safe);
//! - the service-wide breaker above the balancer opens when no endpoint is admitted, until the
//!   first ejection ends, and closes when one is admitted again: it now means "the service is
//!   down", and calls then fail fast with `CIRCUIT_OPEN` as before;
//! - endpoints come from a list of URLs, or from names re-resolved every interval
//!   ([`Discovery`]), joining and leaving the balancer live.
//!
//! Each endpoint's stack is the per-attempt timeout and the unary layer over its own lazily
//! connected tonic channel, so a timed-out or failed attempt is judged against the endpoint
//! it went to.

mod detector;
mod discovery;
mod service;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::CompleteOnResponse;
use tower::load::peak_ewma::PeakEwma;

pub use self::detector::EndpointState;
pub use self::discovery::{Discovery, DiscoveryError, Resolve, Resolved};
pub use self::service::EndpointService;
use self::service::{EndpointShared, PoolEvents};
use crate::BoxError;
use crate::breaker::BreakerShared;
use crate::config::{OutlierConfig, ResilienceConfig};
use crate::timeout::{AttemptTimeout, AttemptTimeoutLayer};
use crate::unary::Unary;

/// The balanced service under the breaker: p2c over the endpoints, behind a buffer so every
/// clone of the client shares one balancer. Its future is boxed for the same reason as
/// [`BalanceFuture`] (tower's buffer future is generic over an `E: Into<BoxError>` bound).
#[derive(Clone)]
pub struct Balanced(Buffer<Request<Body>, BalanceFuture>);

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced").finish_non_exhaustive()
    }
}

impl tower::Service<Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BalanceFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> BalanceFuture {
        Box::pin(self.0.call(request))
    }
}

/// The future of one balanced attempt, boxed: tower's p2c future names a `fn(E) -> BoxError`
/// pointer type, for which rustc cannot prove `Send` inside `async` blocks that borrow
/// (rust-lang/rust#102211, "implementation of `FnOnce` is not general enough").
pub type BalanceFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send + 'static>>;

/// tower's p2c balancer over the endpoints, with its future boxed.
pub struct Balancer(Balance<Changes, Request<Body>>);

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer").finish_non_exhaustive()
    }
}

impl tower::Service<Request<Body>> for Balancer {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BalanceFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> BalanceFuture {
        Box::pin(self.0.call(request))
    }
}

/// One endpoint's attempt stack.
type Attempt = AttemptTimeout<Unary<Channel>>;

type Inserted = Change<String, EndpointService<Attempt>>;

/// A PeakEWMA estimate starts here, before the first response has been timed.
const DEFAULT_RTT: Duration = Duration::from_millis(5);
/// How fast PeakEWMA forgets a latency peak.
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Requests waiting for the balancer's task; more wait for a slot (the deadline bounds them).
const BUFFER: usize = 1024;

/// One endpoint as OpsService shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointView {
    /// Its URL, e.g. `http://10.0.0.7:50051`.
    pub address: String,
    /// Admitted, ejected or probing.
    pub state: EndpointState,
    /// Server failures in a row, as its detector counts them.
    pub consecutive_failures: u32,
    /// Ejections since it joined.
    pub ejections: u64,
    /// How much longer it stays ejected.
    pub ejected_for: Option<Duration>,
    /// Attempts in flight on it now.
    pub in_flight: usize,
}

/// The endpoints of a balanced set, shared by the balancer, the discovery task and the handle.
pub(crate) struct Pool {
    client: String,
    config: OutlierConfig,
    attempt_timeout: AttemptTimeoutLayer,
    max_response_bytes: usize,
    endpoints: Mutex<BTreeMap<String, Arc<EndpointShared>>>,
    changes: mpsc::UnboundedSender<Inserted>,
    breaker: Arc<BreakerShared>,
    open_base: Duration,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<EndpointShared>>> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an endpoint to the balancer (no-op if present).
    pub(crate) fn insert(self: &Arc<Self>, endpoint: Endpoint) {
        let key = key_of(&endpoint);
        let shared = {
            let mut endpoints = self.lock();
            if endpoints.contains_key(&key) {
                return;
            }
            let shared = EndpointShared::new(key.clone(), self);
            endpoints.insert(key.clone(), shared.clone());
            shared
        };
        let stack = self
            .attempt_timeout
            .clone()
            .wrap(Unary::new(endpoint.connect_lazy(), self.max_response_bytes));
        let measured = PeakEwma::new(
            stack,
            DEFAULT_RTT,
            EWMA_DECAY.as_nanos() as f64,
            CompleteOnResponse::default(),
        );
        tracing::info!(client = %self.client, endpoint = %key, "endpoint joined");
        let _closed = self
            .changes
            .send(Change::Insert(key, EndpointService::new(measured, shared)));
        self.endpoint_changed();
    }

    /// Removes an endpoint from the balancer; calls in flight on it finish.
    pub(crate) fn remove(&self, key: &str) {
        if self.lock().remove(key).is_none() {
            return;
        }
        tracing::info!(client = %self.client, endpoint = %key, "endpoint left");
        let _closed = self.changes.send(Change::Remove(key.to_owned()));
        self.endpoint_changed();
    }

    pub(crate) fn client(&self) -> &str {
        &self.client
    }

    pub(crate) fn outlier(&self) -> &OutlierConfig {
        &self.config
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.changes.is_closed()
    }

    /// Opens the service-wide breaker when no endpoint is admitted (until the first ejection
    /// ends, when a probe can go), and closes it when one is admitted again.
    pub(crate) fn endpoint_changed(&self) {
        let now = Instant::now();
        let (present, admitted, first_end) = {
            let endpoints = self.lock();
            let mut admitted = 0;
            let mut first_end: Option<Instant> = None;
            for endpoint in endpoints.values() {
                endpoint.with_detector(|d| {
                    if d.state() == EndpointState::Admitted {
                        admitted += 1;
                    }
                    if let Some(until) = d.ejected_until() {
                        first_end = Some(first_end.map_or(until, |f| f.min(until)));
                    }
                });
            }
            (endpoints.len(), admitted, first_end)
        };
        if admitted > 0 {
            self.breaker.recover();
        } else if present == 0 {
            self.breaker.trip(self.open_base);
        } else if let Some(until) = first_end {
            self.breaker.trip(until.saturating_duration_since(now));
        }
    }
}

impl PoolEvents for Pool {
    fn endpoint_changed(&self) {
        Pool::endpoint_changed(self);
    }

    fn others_admitted(&self, key: &str) -> bool {
        self.lock().iter().any(|(other, endpoint)| {
            other != key && endpoint.with_detector(|d| d.state() == EndpointState::Admitted)
        })
    }
}

impl Pool {
    fn views(&self) -> Vec<EndpointView> {
        let now = Instant::now();
        self.lock()
            .values()
            .map(|e| {
                e.with_detector(|d| EndpointView {
                    address: e.key.clone(),
                    state: d.state(),
                    consecutive_failures: d.consecutive_failures(),
                    ejections: d.ejections(),
                    ejected_for: d.ejected_until().map(|u| u.saturating_duration_since(now)),
                    in_flight: e.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                })
            })
            .collect()
    }
}

/// Observes the endpoints of a balanced [`crate::ResilientChannel`]; cheap to clone.
#[derive(Clone)]
pub struct EndpointsHandle {
    // A trait object with its bounds stated: the pool's own type (which holds endpoint
    // services) makes rustc fail to prove `Send` for futures holding a client
    // (rust-lang/rust#102211).
    pool: Arc<dyn PoolView>,
}

/// What the handle reads from the pool.
trait PoolView: Send + Sync {
    fn views(&self) -> Vec<EndpointView>;
    fn client(&self) -> &str;
    fn keys(&self) -> Vec<String>;
}

impl PoolView for Pool {
    fn views(&self) -> Vec<EndpointView> {
        Pool::views(self)
    }
    fn client(&self) -> &str {
        Pool::client(self)
    }
    fn keys(&self) -> Vec<String> {
        Pool::keys(self)
    }
}

impl EndpointsHandle {
    pub(crate) fn new(pool: Arc<Pool>) -> Self {
        Self {
            pool: pool as Arc<dyn PoolView>,
        }
    }

    /// Every endpoint now, ordered by address.
    pub fn endpoints(&self) -> Vec<EndpointView> {
        self.pool.views()
    }

    /// The endpoint with this address (`http://ip:port`).
    pub fn endpoint(&self, address: &str) -> Option<EndpointView> {
        self.endpoints().into_iter().find(|e| e.address == address)
    }
}

impl std::fmt::Debug for EndpointsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointsHandle")
            .field("client", &self.pool.client())
            .field("endpoints", &self.pool.keys())
            .finish()
    }
}

/// An endpoint's key and address as shown: `scheme://authority`, without a path.
fn key_of(endpoint: &Endpoint) -> String {
    let uri = endpoint.uri();
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => uri.to_string(),
    }
}

/// The `discover` stream the balancer reads: endpoints joining and leaving.
pub struct Changes(mpsc::UnboundedReceiver<Inserted>);

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").finish_non_exhaustive()
    }
}

impl tokio_stream::Stream for Changes {
    type Item = Result<Inserted, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|change| change.map(Ok))
    }
}

/// Builds an empty pool and the balanced service over it. Needs a tokio runtime.
pub(crate) fn balanced(
    config: &ResilienceConfig,
    breaker: Arc<BreakerShared>,
) -> (Balanced, Arc<Pool>) {
    crate::telemetry::describe_endpoint_metrics();
    let (changes, received) = mpsc::unbounded_channel();
    let pool = Arc::new(Pool {
        client: config.client.clone(),
        config: config.outlier.clone(),
        attempt_timeout: AttemptTimeoutLayer::new(config.attempt_timeout).client(&config.client),
        max_response_bytes: config.max_response_bytes,
        endpoints: Mutex::new(BTreeMap::new()),
        changes,
        breaker,
        open_base: config.breaker.open_base,
    });
    let balance = Balancer(Balance::new(Changes(received)));
    (Balanced(Buffer::new(balance, BUFFER)), pool)
}
