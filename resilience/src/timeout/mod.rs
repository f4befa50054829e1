//! A timeout on each attempt, inside the call's deadline.
//!
//! An attempt gets `min(attempt timeout, what is left of the CallDeadline)`. A timed-out attempt
//! fails with DEADLINE_EXCEEDED, reason `ATTEMPT_TIMEOUT`, which the retry policy retries while
//! budget remains; when the cap was the overall deadline the reason is `DEADLINE_EXCEEDED`.
//!
//! The layer also rewrites `grpc-timeout` at send time with what is left of the *overall*
//! deadline, as gRFC A6 prescribes, rather than with the per-attempt timeout: tonic servers
//! answer an expired `grpc-timeout` with CANCELLED, which would race our own attempt timer and
//! turn a retryable timeout into a non-retryable code. The per-attempt cut is the client's call.

mod future;
mod layer;

use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tokio::time::Instant;
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::AttemptTimeoutLayer;
use crate::BoxError;
use crate::deadline::CallDeadline;
use crate::metadata::{GRPC_TIMEOUT, encode_timeout};

/// Bounds every attempt sent through it.
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    timeout: Duration,
    attempts: metrics::Counter,
    timeouts: metrics::Counter,
}

impl<S> AttemptTimeout<S> {
    /// Wraps `inner`, giving each attempt at most `timeout`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        AttemptTimeoutLayer::new(timeout).wrap(inner)
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<B>> for AttemptTimeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let now = Instant::now();
        let mut until = now + self.timeout;
        let mut capped_by = None;
        if let Some(deadline) = req.extensions().get::<CallDeadline>().copied() {
            let left = deadline.at().saturating_duration_since(now);
            req.headers_mut().insert(GRPC_TIMEOUT, encode_timeout(left));
            if deadline.at() < until {
                until = deadline.at();
                capped_by = Some(deadline.budget());
            }
        }
        self.attempts.increment(1);
        ResponseFuture::new(
            self.inner.call(req),
            until,
            self.timeout,
            capped_by,
            self.timeouts.clone(),
        )
    }
}

#[cfg(test)]
mod tests;
