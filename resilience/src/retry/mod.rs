//! Budgeted retries of failed unary attempts, as a [`tower::retry::Policy`].
//!
//! Per logical call:
//! - the request body is read into memory (at most `max_request_bytes`, 64 KiB by default) so
//!   it can be re-sent; a larger body is streamed once and never retried;
//! - a failed attempt is retried only for UNAVAILABLE, DEADLINE_EXCEEDED (one attempt's timeout;
//!   the overall deadline stops everything anyway), RESOURCE_EXHAUSTED or ABORTED — never for
//!   INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND or a `CIRCUIT_OPEN` rejection;
//! - at most `max_attempts` attempts; the wait before retry n is full-jitter
//!   `uniform(0, min(cap, base * 2^(n-1)))` ([`crate::backoff`], drawn from the layer's
//!   [`JitterRng`](crate::backoff::JitterRng), seedable with [`RetryLayer::from_rng`]), or exactly the server's `grpc-retry-pushback-ms`
//!   (negative or malformed: stop), and a wait that would end past the [`CallDeadline`] is not
//!   started;
//! - every retry withdraws from a [`TpsBudget`](tower::retry::budget::TpsBudget) that each
//!   logical call deposits into, shared by all clones, so retries stay a bounded share of
//!   traffic (`budget_ratio` of calls plus `budget_min_per_sec`) even when every call fails;
//! - attempt n+1 carries `grpc-previous-rpc-attempts: n`; every other header, the
//!   `idempotency-key` included, is copied unchanged from the caller's request.
//!
//! **Non-idempotent calls.** A call with no `idempotency-key` (and not listed in
//! `idempotent_rpcs`) is retried only when the failed attempt surely never reached the server's
//! application code ([`crate::errors::surely_unsent`]): refused locally (load shed), no
//! connection (`tonic::ConnectError`), or an HTTP/2 `REFUSED_STREAM` from the server. Any gRPC
//! status from the server, a timeout, or a reset after the request was written may mean the
//! work was done, so such a call is not repeated.
//!
//! **Unknown outcomes.** When an attempt before the last may have reached the server (it was not
//! surely unsent), the call's final error is marked so
//! [`crate::errors::earlier_attempt_maybe_delivered`] reads true: whatever the last attempt
//! answered, the earlier one may have done the work. The mark lives in the status' `source()`
//! chain, so a server cannot send it.
//!
//! When a retryable failure is not retried, the status gets the metadata
//! [`lab-retry-stop`](crate::errors::RETRY_STOP_KEY) saying why (e.g. `RETRY_BUDGET_EXHAUSTED`).
//!
//! [`CallDeadline`]: crate::deadline::CallDeadline

mod future;
mod layer;
mod policy;
mod stats;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use tonic::body::Body;
use tower::Service;
use tower::retry::budget::Budget;

pub use self::future::ResponseFuture;
pub use self::layer::RetryLayer;
pub use self::policy::RetryPolicy;
pub use self::stats::RetryStats;
use crate::BoxError;
use crate::body::Collect;

/// Retries failed attempts of buffered unary requests.
pub struct Retry<S> {
    inner: tower::retry::Retry<RetryPolicy, S>,
    shared: Arc<policy::Shared>,
    max_request_bytes: usize,
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            max_request_bytes: self.max_request_bytes,
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("inner", self.inner.get_ref())
            .field("max_attempts", &self.shared.max_attempts)
            .finish()
    }
}

impl<S> Retry<S> {
    /// The counters of this service's retry layer.
    pub fn stats(&self) -> RetryStats {
        self.shared.stats.clone()
    }
}

impl<S> Service<Request<Body>> for Retry<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.shared.stats.add_call();
        // Every logical call earns retry budget; only retries spend it.
        self.shared.budget.deposit();
        let stats = &self.shared.stats;
        let (parts, body) = req.into_parts();
        let mut collect = Collect::new(body, self.max_request_bytes);
        // A unary body made by tonic is ready at once: read it here when possible, so the
        // ready service is called directly instead of being swapped into the future. A body
        // that is not ready yet stores the real waker when the future polls it again.
        match Pin::new(&mut collect).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(collected)) => {
                ResponseFuture::running(self.inner.call(future::rebuild(parts, collected, stats)))
            }
            Poll::Ready(Err(status)) => ResponseFuture::failed(Box::new(status)),
            Poll::Pending => {
                // The ready service goes into the future; a fresh clone stays here and will be
                // polled ready for the next call.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::buffering(parts, collect, ready, stats.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests;
