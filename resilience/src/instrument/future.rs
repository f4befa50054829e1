use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tracing::Span;

use super::CallMetrics;
use crate::BoxError;
use crate::errors::code_of;
use crate::metadata::code_in;

pin_project! {
    /// Response future of [`super::Instrument`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        started: Instant,
        metrics: Arc<CallMetrics>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, span: Span, metrics: Arc<CallMetrics>) -> Self {
        Self {
            inner,
            span,
            started: Instant::now(),
            metrics,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        let code = match &result {
            Ok(response) => code_in(response.headers()),
            Err(err) => code_of(err),
        };
        this.metrics.calls.get(code).increment(1);
        this.metrics
            .duration
            .record(this.started.elapsed().as_secs_f64());
        if code != tonic::Code::Ok {
            tracing::debug!(?code, "call failed");
        }
        Poll::Ready(result)
    }
}
