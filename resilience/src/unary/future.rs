use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Response, StatusCode, response::Parts};
use pin_project_lite::pin_project;
use tonic::body::Body;
use tonic::{Code, Status};

use crate::BoxError;
use crate::body::{Buffered, Collect, Collected};
use crate::errors::into_status_error;
use crate::metadata::error_status_in;

pin_project! {
    /// Response future of [`super::Unary`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        max_response_bytes: usize,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Waiting { #[pin] inner: F },
        Collecting { parts: Option<Parts>, collect: Collect },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, max_response_bytes: usize) -> Self {
        Self {
            state: State::Waiting { inner },
            max_response_bytes,
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// gRPC's mapping of an HTTP status to a code, for responses that carry no `grpc-status`
/// (a proxy answering on the server's behalf).
fn code_for_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { inner } => {
                    let response = ready!(inner.poll(cx)).map_err(into_status_error)?;
                    if let Some(status) = error_status_in(response.headers()) {
                        return Poll::Ready(Err(Box::new(status)));
                    }
                    if response.headers().contains_key(Status::GRPC_STATUS) {
                        // Trailers-Only OK: nothing follows.
                        return Poll::Ready(Ok(response));
                    }
                    if response.status() != StatusCode::OK {
                        let code = code_for_http(response.status());
                        let message =
                            format!("HTTP status {} without grpc-status", response.status());
                        return Poll::Ready(Err(Box::new(Status::new(code, message))));
                    }
                    let (parts, body) = response.into_parts();
                    let collect = Collect::new(body, *this.max_response_bytes);
                    this.state.set(State::Collecting {
                        parts: Some(parts),
                        collect,
                    });
                }
                StateProj::Collecting { parts, collect } => {
                    let collected =
                        ready!(Pin::new(collect).poll(cx)).map_err(|s| Box::new(s) as BoxError)?;
                    let parts = parts.take().expect("polled after completion");
                    let body = match collected {
                        Collected::TooLarge(body) => body,
                        Collected::Complete { data, trailers } => {
                            if let Some(status) = trailers.as_ref().and_then(error_status_in) {
                                return Poll::Ready(Err(Box::new(status)));
                            }
                            Body::new(Buffered::new(data, trailers))
                        }
                    };
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
            }
        }
    }
}
