//! The whole client stack over one channel, built from one [`ResilienceConfig`].

use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::{Layer, Service};

use crate::BoxError;
use crate::breaker::{BreakerHandle, CircuitBreaker, CircuitBreakerLayer};
use crate::config::ResilienceConfig;
use crate::deadline::{Deadline, DeadlineLayer};
use crate::instrument::{Instrument, InstrumentLayer};
use crate::retry::{Retry, RetryLayer, RetryStats};
use crate::shed::{LoadShed, LoadShedLayer};
use crate::timeout::{AttemptTimeout, AttemptTimeoutLayer};
use crate::unary::{Unary, UnaryLayer};

/// The layers of a [`ResilientChannel`], outermost first.
pub type Stack<S> = Instrument<Deadline<Retry<CircuitBreaker<LoadShed<AttemptTimeout<Unary<S>>>>>>>;

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
pub struct ResilientChannel<S = Channel> {
    stack: Stack<S>,
    breaker: BreakerHandle,
    retry: RetryStats,
}

impl<S: Clone> Clone for ResilientChannel<S> {
    fn clone(&self) -> Self {
        Self {
            stack: self.stack.clone(),
            breaker: self.breaker.clone(),
            retry: self.retry.clone(),
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
    /// Starts building a stack with `config`.
    pub fn builder(config: ResilienceConfig) -> ResilientChannelBuilder {
        ResilientChannelBuilder { config }
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
}

/// Builds a [`ResilientChannel`].
#[derive(Debug, Clone)]
pub struct ResilientChannelBuilder {
    config: ResilienceConfig,
}

impl ResilientChannelBuilder {
    /// Wraps `inner` (normally a tonic [`Channel`]) in the stack; returns the stack and the
    /// handle of its breaker.
    pub fn build<S>(self, inner: S) -> (ResilientChannel<S>, BreakerHandle) {
        let c = &self.config;
        let client = c.client.as_str();
        let breaker = CircuitBreakerLayer::with_client(&c.breaker, client);
        let retry = RetryLayer::with_client(&c.retry, client);
        let handle = breaker.handle();
        let stats = retry.stats();
        // Innermost first. Why this order:
        // - unary right above the channel: the timeout then also covers a stalled body, and
        //   every layer above sees a server's error as Err(Status);
        // - the attempt timeout inside the shed limit, so a hung attempt frees its slot;
        // - shed inside the breaker, so shed attempts (local) are not counted against the
        //   server, and the breaker's rejections cost no slot;
        // - the breaker inside retry, so each attempt is judged, and an open circuit ends the
        //   retry loop at once;
        // - retry inside the deadline, so backoff and all attempts share one budget;
        // - instrument outermost, to record what the caller lived through.
        let stack = UnaryLayer::new(c.max_response_bytes).layer(inner);
        let stack = AttemptTimeoutLayer::new(c.attempt_timeout)
            .client(client)
            .layer(stack);
        let stack = LoadShedLayer::new(c.concurrency_limit)
            .client(client)
            .layer(stack);
        let stack = breaker.layer(stack);
        let stack = retry.layer(stack);
        let stack = DeadlineLayer::new(c.deadline).client(client).layer(stack);
        let stack = InstrumentLayer::with_client(client).layer(stack);
        (
            ResilientChannel {
                stack,
                breaker: handle.clone(),
                retry: stats,
            },
            handle,
        )
    }

    /// Builds the stack over a channel balanced across `endpoints` ([`Channel::balance_list`]);
    /// connections are made lazily. Needs a tokio runtime.
    pub fn balance(
        self,
        endpoints: impl IntoIterator<Item = Endpoint>,
    ) -> (ResilientChannel<Channel>, BreakerHandle) {
        self.build(Channel::balance_list(endpoints.into_iter()))
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
