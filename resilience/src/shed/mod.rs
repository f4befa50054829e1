//! A bulkhead: at most N attempts in flight, and the next one fails at once.
//!
//! Queueing behind a slow server only turns its latency into ours and its outage into our memory
//! growth; failing fast with RESOURCE_EXHAUSTED (reason `LOAD_SHED`) lets the caller decide. The
//! limit is one semaphore shared by every clone of the service (a generated client is cloned per
//! request). `poll_ready` takes the permit and never waits for one: without a permit it reports
//! Ready and `call` sheds, so nothing queues here. A shed attempt never left the process, so the
//! retry policy may retry it even without an idempotency key, and the breaker ignores it.

mod future;
mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::LoadShedLayer;
use crate::BoxError;

/// Limits concurrent attempts, shedding the excess.
#[derive(Debug)]
pub struct LoadShed<S> {
    inner: S,
    semaphore: Arc<Semaphore>,
    limit: usize,
    permit: Option<OwnedSemaphorePermit>,
    shed: metrics::Counter,
}

impl<S: Clone> Clone for LoadShed<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            semaphore: self.semaphore.clone(),
            limit: self.limit,
            // A permit belongs to the clone that reserved it.
            permit: None,
            shed: self.shed.clone(),
        }
    }
}

impl<S> LoadShed<S> {
    /// Wraps `inner`, allowing at most `limit` calls in flight across all clones.
    pub fn new(inner: S, limit: usize) -> Self {
        LoadShedLayer::new(limit).layer_service(inner)
    }

    /// Calls in flight right now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.semaphore.available_permits()
    }
}

impl<S, Req> Service<Req> for LoadShed<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_none() {
            match self.semaphore.clone().try_acquire_owned() {
                Ok(permit) => self.permit = Some(permit),
                // Shed in `call`; waiting here is exactly the queueing this layer forbids.
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.permit.take() {
            Some(permit) => ResponseFuture::called(self.inner.call(req), permit),
            None => {
                self.shed.increment(1);
                tracing::debug!(limit = self.limit, "load shed");
                ResponseFuture::shed(crate::status::load_shed(self.limit))
            }
        }
    }
}

#[cfg(test)]
mod tests;
