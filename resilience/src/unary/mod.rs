//! Makes a unary response's outcome visible to the layers above it.
//!
//! gRPC reports a failure either in the response headers (Trailers-Only, what tonic servers send
//! for an error) or in the trailers after the body. Layers that classify outcomes — retry,
//! breaker, metrics — see only the response head, so this layer, meant to sit right above the
//! channel, reads the unary body (up to a bound) and turns a non-OK `grpc-status` from either
//! place, or a non-200 HTTP status, into `Err(Status)`. A successful response is handed on with
//! its buffered body and trailers intact; the tonic client cannot tell the difference. Because
//! the attempt timeout sits above this layer, it also bounds a server that stalls mid-body.
//!
//! Transport errors from the channel become a [`tonic::Status`] too (tonic's own mapping), with
//! the original error kept as its source so [`crate::errors::surely_unsent`] can still see a
//! connect failure. A response larger than the bound passes through unbuffered.
//!
//! Unary calls only: a streaming response would be held back until the bound is reached.

mod future;
mod layer;

use std::task::{Context, Poll};

use http::Response;
use tonic::body::Body;
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::UnaryLayer;
use crate::BoxError;

/// Buffers unary responses and lifts errors carried in them into `Err(Status)`.
#[derive(Debug, Clone)]
pub struct Unary<S> {
    inner: S,
    max_response_bytes: usize,
}

impl<S> Unary<S> {
    /// Wraps `inner`, buffering responses of up to `max_response_bytes`.
    pub fn new(inner: S, max_response_bytes: usize) -> Self {
        Self {
            inner,
            max_response_bytes,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for Unary<S>
where
    S: Service<Req, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(crate::errors::into_status_error)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture::new(self.inner.call(req), self.max_response_bytes)
    }
}

#[cfg(test)]
mod tests;
