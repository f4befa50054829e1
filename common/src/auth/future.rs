//! Response future of [`super::Auth`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;
use tonic::body::Body;

pin_project! {
    /// The inner service's answer, or the refusal made before it was called.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Admitted { #[pin] inner: F },
        Refused { response: Option<Response<Body>> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn admitted(inner: F) -> Self {
        Self {
            state: State::Admitted { inner },
        }
    }

    pub(super) fn refused(response: Response<Body>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { inner } => {
                let response = ready!(inner.poll(cx))?;
                Poll::Ready(Ok(response.map(Body::new)))
            }
            // Polled once: the refusal is made whole in `call`.
            StateProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                    tonic::Status::internal("polled after completion").into_http()
                })))
            }
        }
    }
}
