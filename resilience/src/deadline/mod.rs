//! One overall budget per logical call.
//!
//! The budget is the smaller of the configured deadline and the caller's own `grpc-timeout`
//! (set with [`tonic::Request::set_timeout`]), so a caller that must keep time for its own
//! follow-up work (e.g. a database write after the call) just sets a shorter timeout. The layer
//! stores the instant as a [`CallDeadline`] request extension, which the retry policy reads to
//! never back off past it and the per-attempt timeout reads to cap each attempt and to send the
//! remaining budget as `grpc-timeout`. When the budget is spent the call fails with
//! DEADLINE_EXCEEDED, reason `DEADLINE_EXCEEDED`, whatever the inner layers were doing.

mod future;
mod layer;

use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tokio::time::Instant;
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::DeadlineLayer;
use crate::BoxError;
use crate::metadata::{GRPC_TIMEOUT, decode_timeout, encode_timeout};

/// The deadline of the logical call a request belongs to (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadline {
    at: Instant,
    budget: Duration,
}

impl CallDeadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self {
            at: Instant::now() + budget,
            budget,
        }
    }

    /// The instant the call must be finished by.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The whole budget the call started with.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// What is left of the budget now.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

/// Enforces one budget over everything below it (retries and backoff included).
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    budget: Duration,
    expired: metrics::Counter,
}

impl<S> Deadline<S> {
    /// Wraps `inner` with a budget of at most `budget` per call.
    pub fn new(inner: S, budget: Duration) -> Self {
        DeadlineLayer::new(budget).wrap(inner)
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<B>> for Deadline<S>
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
        let mut budget = self.budget;
        if let Some(asked) = req.headers().get(GRPC_TIMEOUT).and_then(decode_timeout) {
            budget = budget.min(asked);
        }
        let mut at = now + budget;
        // An outer deadline (a stack nested in another) can only shorten ours.
        if let Some(outer) = req.extensions().get::<CallDeadline>()
            && outer.at < at
        {
            at = outer.at;
            budget = at.saturating_duration_since(now);
        }
        req.extensions_mut().insert(CallDeadline { at, budget });
        req.headers_mut()
            .insert(GRPC_TIMEOUT, encode_timeout(budget));
        ResponseFuture::new(self.inner.call(req), at, budget, self.expired.clone())
    }
}

#[cfg(test)]
mod tests;
