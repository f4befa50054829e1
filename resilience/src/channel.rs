//! The whole client stack over one channel, built from one [`ResilienceConfig`].

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use rand::RngCore;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::{Layer, Service};

use crate::BoxError;
use crate::backoff::JitterRng;
use crate::breaker::{BreakerHandle, CircuitBreaker, CircuitBreakerLayer};
use crate::config::{BreakerConfig, ConfigError, ResilienceConfig};
use crate::deadline::{Deadline, DeadlineLayer};
use crate::endpoints::{self, Balanced, Discovery, EndpointsHandle};
use crate::instrument::{Instrument, InstrumentLayer};
use crate::retry::{Retry, RetryLayer, RetryStats};
use crate::shed::{LoadShed, LoadShedLayer};
use crate::timeout::{AttemptTimeout, AttemptTimeoutLayer};
use crate::unary::{Unary, UnaryLayer};

/// The layers of a [`ResilientChannel`] above the attempts, outermost first.
pub type Stack<S> = Instrument<Deadline<Retry<CircuitBreaker<LoadShed<S>>>>>;

/// One attempt over a single service: the per-attempt timeout and the unary layer.
pub type Attempt<S> = AttemptTimeout<Unary<S>>;

/// A tonic channel wrapped in the full resilience stack; give it to a generated client:
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use resilience::{ResilienceConfig, ResilientChannel};
/// use tonic::transport::Endpoint;
///
/// let channel = Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
/// let (stack, breaker) = ResilientChannel::builder(ResilienceConfig::default()).build(channel);
/// // let client = OrderServiceClient::new(stack);
/// assert_eq!(breaker.state(), resilience::BreakerState::Closed);
/// # Ok(()) }
/// ```
///
/// Clones share the breaker, the retry budget and the concurrency limit.
///
/// `S` is what runs one attempt: [`Attempt`] over a single service ([`build`]), or the
/// [`Balanced`] endpoints, each with its own health ([`balance`], [`discover`]).
///
/// [`build`]: ResilientChannelBuilder::build
/// [`balance`]: ResilientChannelBuilder::balance
/// [`discover`]: ResilientChannelBuilder::discover
pub struct ResilientChannel<S = Attempt<Channel>> {
    stack: Stack<S>,
    breaker: BreakerHandle,
    retry: RetryStats,
    endpoints: Option<EndpointsHandle>,
}

impl<S: Clone> Clone for ResilientChannel<S> {
    fn clone(&self) -> Self {
        Self {
            stack: self.stack.clone(),
            breaker: self.breaker.clone(),
            retry: self.retry.clone(),
            endpoints: self.endpoints.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for ResilientChannel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientChannel")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl ResilientChannel {
    /// Starts building a stack with `config`, which must be valid: the checked way for a
    /// configuration from outside (flags, files) is [`try_builder`](Self::try_builder).
    ///
    /// # Panics
    ///
    /// When `config` is out of range ([`ResilienceConfig::validate`]).
    pub fn builder(config: ResilienceConfig) -> ResilientChannelBuilder {
        match Self::try_builder(config) {
            Ok(builder) => builder,
            Err(error) => panic!("invalid resilience configuration: {error}"),
        }
    }

    /// Starts building a stack with `config`, or says which value is out of range.
    pub fn try_builder(config: ResilienceConfig) -> Result<ResilientChannelBuilder, ConfigError> {
        config.validate()?;
        Ok(ResilientChannelBuilder {
            config,
            rng: JitterRng::thread(),
        })
    }
}

impl<S> ResilientChannel<S> {
    /// The handle of this stack's circuit breaker.
    pub fn breaker(&self) -> BreakerHandle {
        self.breaker.clone()
    }

    /// The counters of this stack's retry layer.
    pub fn retry_stats(&self) -> RetryStats {
        self.retry.clone()
    }

    /// The per-endpoint view of a balanced stack; `None` over a single service.
    pub fn endpoints(&self) -> Option<EndpointsHandle> {
        self.endpoints.clone()
    }
}

/// Builds a [`ResilientChannel`].
#[derive(Debug, Clone)]
pub struct ResilientChannelBuilder {
    config: ResilienceConfig,
    rng: JitterRng,
}

impl ResilientChannelBuilder {
    /// Draws the retry backoff and the breaker's open periods from a generator seeded from
    /// `rng` (as tower's `Balance::from_rng`) instead of the thread RNG, e.g. a seeded `StdRng`
    /// for reproducible tests.
    pub fn from_rng<R: RngCore + ?Sized>(mut self, rng: &mut R) -> Self {
        self.rng = JitterRng::from_rng(rng);
        self
    }

    /// Wraps `inner` (normally a tonic [`Channel`]) in the stack; returns the stack and the
    /// handle of its breaker, which counts the failures of every attempt.
    pub fn build<S>(self, inner: S) -> (ResilientChannel<Attempt<S>>, BreakerHandle) {
        let c = &self.config;
        let breaker = CircuitBreakerLayer::with_jitter(&c.breaker, &c.client, self.rng.clone());
        // - unary right above the channel: the timeout then also covers a stalled body, and
        //   every layer above sees a server's error as Err(Status);
        // - the attempt timeout inside the shed limit, so a hung attempt frees its slot.
        let attempt = UnaryLayer::new(c.max_response_bytes).layer(inner);
        let attempt = AttemptTimeoutLayer::new(c.attempt_timeout)
            .client(&c.client)
            .layer(attempt);
        self.stack(breaker, attempt, None)
    }

    /// The stack over a balanced set of `endpoints`, each with its own failure detector, the
    /// p2c balancer picking among the admitted ones, and the breaker opening only when none is
    /// admitted ([`crate::endpoints`]). Connections are made lazily. Needs a tokio runtime.
    pub fn balance(
        self,
        endpoints: impl IntoIterator<Item = Endpoint>,
    ) -> (ResilientChannel<Balanced>, BreakerHandle) {
        let (channel, breaker, pool) = self.balanced();
        for endpoint in endpoints {
            pool.insert(endpoint);
        }
        (channel, breaker)
    }

    /// Like [`balance`](Self::balance), over the endpoints `discovery` finds: resolved once
    /// now, then re-resolved in the background; endpoints join and leave the balancer live.
    pub async fn discover(
        self,
        discovery: Discovery,
    ) -> (ResilientChannel<Balanced>, BreakerHandle) {
        let (channel, breaker, pool) = self.balanced();
        discovery.start(&pool).await;
        (channel, breaker)
    }

    fn balanced(
        self,
    ) -> (
        ResilientChannel<Balanced>,
        BreakerHandle,
        Arc<endpoints::Pool>,
    ) {
        // The breaker's own failure triggers would let one dead endpoint open the circuit
        // for all; here it opens only when the endpoints' detectors have ejected every one.
        let service_wide = BreakerConfig {
            consecutive_failures: 0,
            failure_rate: None,
            ..self.config.breaker.clone()
        };
        let breaker =
            CircuitBreakerLayer::with_jitter(&service_wide, &self.config.client, self.rng.clone());
        let (balanced, pool) = endpoints::balanced(&self.config, breaker.handle().shared);
        let handle = EndpointsHandle::new(pool.clone());
        let (channel, breaker) = self.stack(breaker, balanced, Some(handle));
        (channel, breaker, pool)
    }

    fn stack<S>(
        self,
        breaker: CircuitBreakerLayer,
        attempt: S,
        endpoints: Option<EndpointsHandle>,
    ) -> (ResilientChannel<S>, BreakerHandle) {
        let c = &self.config;
        let client = c.client.as_str();
        let retry = RetryLayer::with_jitter(&c.retry, client, self.rng.clone());
        let handle = breaker.handle();
        let stats = retry.stats();
        // Innermost first (the attempt is built by the caller). Why this order:
        // - shed inside the breaker, so shed attempts (local) are not counted against the
        //   server, and the breaker's rejections cost no slot;
        // - the breaker inside retry, so each attempt is judged, and an open circuit ends the
        //   retry loop at once;
        // - retry inside the deadline, so backoff and all attempts share one budget;
        // - instrument outermost, to record what the caller lived through.
        let stack = LoadShedLayer::new(c.concurrency_limit)
            .client(client)
            .layer(attempt);
        let stack = breaker.layer(stack);
        let stack = retry.layer(stack);
        let stack = DeadlineLayer::new(c.deadline).client(client).layer(stack);
        let stack = InstrumentLayer::with_client(client).layer(stack);
        (
            ResilientChannel {
                stack,
                breaker: handle.clone(),
                retry: stats,
                endpoints,
            },
            handle,
        )
    }
}

impl<S> Service<Request<Body>> for ResilientChannel<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = <Stack<S> as Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.stack.call(req)
    }
}
