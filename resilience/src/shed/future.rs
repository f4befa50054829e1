use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

use crate::BoxError;

pin_project! {
    /// Response future of [`super::LoadShed`].
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
        Called { #[pin] inner: F, permit: Option<OwnedSemaphorePermit> },
        Shed { status: Option<Status> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(inner: F, permit: OwnedSemaphorePermit) -> Self {
        Self {
            state: State::Called {
                inner,
                permit: Some(permit),
            },
        }
    }

    pub(super) fn shed(status: Status) -> Self {
        Self {
            state: State::Shed {
                status: Some(status),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { inner, permit } => {
                let result = ready!(inner.poll(cx));
                // Free the slot as soon as the attempt is over, not when the future is dropped.
                permit.take();
                Poll::Ready(result.map_err(Into::into))
            }
            StateProj::Shed { status } => Poll::Ready(Err(Box::new(
                status.take().expect("polled after completion"),
            ))),
        }
    }
}
