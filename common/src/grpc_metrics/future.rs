use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use pin_project_lite::pin_project;

use super::{HANDLED_TOTAL, HANDLING_SECONDS, code_name};

pin_project! {
    /// Response future of [`GrpcMetrics`](super::GrpcMetrics): records the call when its
    /// response headers are ready.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        service: String,
        method: String,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, service: String, method: String) -> Self {
        Self {
            inner,
            started: Instant::now(),
            service,
            method,
        }
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let code = match &result {
            Ok(response) => response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32),
            Err(_) => tonic::Code::Unknown,
        };
        let labels = [
            ("grpc_service", this.service.clone()),
            ("grpc_method", this.method.clone()),
            ("grpc_code", code_name(code).to_owned()),
        ];
        metrics::counter!(HANDLED_TOTAL, &labels).increment(1);
        metrics::histogram!(HANDLING_SECONDS, &labels).record(this.started.elapsed().as_secs_f64());
        Poll::Ready(result)
    }
}
