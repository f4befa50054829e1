use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tonic::{Code, Status};

use super::handle::Permit;
use super::state::Outcome;
use crate::BoxError;
use crate::errors::{code_of, is_server_failure, local_kind, status_of};
use crate::metadata::code_in;

pin_project! {
    /// Response future of [`super::CircuitBreaker`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Admitted { #[pin] inner: F, permit: Option<Permit> },
        Rejected { status: Option<Status> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn admitted(inner: F, permit: Permit) -> Self {
        Self {
            state: State::Admitted {
                inner,
                permit: Some(permit),
            },
        }
    }

    pub(super) fn rejected(status: Status) -> Self {
        Self {
            state: State::Rejected {
                status: Some(status),
            },
        }
    }
}

fn classify_code(code: Code) -> Outcome {
    match code {
        Code::Cancelled => Outcome::Ignored,
        code if is_server_failure(code) => Outcome::Failure,
        _ => Outcome::Success,
    }
}

pub(crate) fn outcome<B>(result: &Result<Response<B>, BoxError>) -> Outcome {
    match result {
        // A Trailers-Only error the `unary` layer did not lift (breaker used on its own).
        Ok(response) => classify_code(code_in(response.headers())),
        Err(err) if status_of(err).is_some_and(|s| local_kind(s).is_some()) => Outcome::Ignored,
        Err(err) => classify_code(code_of(err)),
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { inner, permit } => {
                let result = ready!(inner.poll(cx)).map_err(Into::into);
                if let Some(permit) = permit.take() {
                    permit.complete(outcome(&result));
                }
                Poll::Ready(result)
            }
            StateProj::Rejected { status } => Poll::Ready(Err(Box::new(
                status.take().expect("polled after completion"),
            ))),
        }
    }
}
