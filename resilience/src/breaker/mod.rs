//! A circuit breaker: stop calling a server that keeps failing, probe it now and then.
//!
//! - **Closed**: every attempt passes; its outcome feeds the failure policy. Only server-side
//!   failures count (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN). Any
//!   other answer, client mistakes included, proves the server is up and counts as a success;
//!   a cancelled, abandoned or locally shed attempt counts as nothing.
//! - It trips on `consecutive_failures` in a row (failsafe's `ConsecutiveFailures`) **or** when
//!   the failure share of the last `window_calls` outcomes reaches `failure_rate` once
//!   `minimum_calls` are known ([`policy::FailureRateWindow`], composed with failsafe's
//!   `or_else`).
//! - **Open** for a period that starts at `open_base` and doubles on every re-open up to
//!   `open_cap`, shortened by a random fraction so clients that tripped together do not return
//!   together. `poll_ready` stays Ready and `call` fails at once with UNAVAILABLE, ErrorInfo
//!   reason `CIRCUIT_OPEN`, without calling the inner service (linkerd's fail-fast: a caller's
//!   readiness must never hang on a dead backend).
//! - **Half-open** after the period, on the next call: at most `half_open_probes` attempts go
//!   through; the first success closes the breaker and forgets the failures, a failure re-opens
//!   it for a longer period; everyone else is rejected as if open.
//!
//! The state lives behind an `Arc` shared by every clone of the service and by the
//! [`BreakerHandle`], which reads the state and counters, streams transitions, and can force the
//! breaker open or reset it.

mod future;
mod handle;
mod layer;
pub mod policy;
mod state;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use tower::Service;

pub use self::future::ResponseFuture;
pub(crate) use self::future::outcome;
pub use self::handle::BreakerHandle;
pub(crate) use self::handle::Shared as BreakerShared;
use self::handle::{Permit, Shared};
pub use self::layer::CircuitBreakerLayer;
pub(crate) use self::state::Outcome;
pub use self::state::{BreakerState, BreakerStats, Transition};
use crate::BoxError;

/// Fails calls fast while its breaker is open.
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
    // Decided in `poll_ready` so an open breaker never waits on the inner service.
    admission: Option<Option<Permit>>,
}

impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            admission: None,
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("client", &self.shared.client())
            .finish()
    }
}

impl<S> CircuitBreaker<S> {
    /// The handle of this service's breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, Req, B> Service<Req> for CircuitBreaker<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let admission = self.admission.get_or_insert_with(|| self.shared.acquire());
        match admission {
            None => Poll::Ready(Ok(())),
            Some(_) => self.inner.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self
            .admission
            .take()
            .expect("poll_ready must be called before call")
        {
            Some(permit) => ResponseFuture::admitted(self.inner.call(req), permit),
            None => ResponseFuture::rejected(crate::status::circuit_open(self.shared.client())),
        }
    }
}

#[cfg(test)]
mod tests;
