use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tonic::Code;

use crate::BoxError;
use crate::errors::code_of;
use crate::status::deadline_exceeded;

pin_project! {
    /// Response future of [`super::Deadline`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        at: Instant,
        budget: Duration,
        expired: metrics::Counter,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, at: Instant, budget: Duration, expired: metrics::Counter) -> Self {
        Self {
            inner,
            sleep: sleep_until(at),
            at,
            budget,
            expired,
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
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(|err| {
                let err = err.into();
                // A server (tonic answers an expired grpc-timeout with CANCELLED) or an attempt
                // timer may beat our own timer by a hair; past the deadline it is our deadline.
                if Instant::now() >= *this.at
                    && matches!(code_of(&err), Code::Cancelled | Code::DeadlineExceeded)
                {
                    this.expired.increment(1);
                    Box::new(deadline_exceeded(*this.budget)) as BoxError
                } else {
                    err
                }
            }));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                this.expired.increment(1);
                Poll::Ready(Err(Box::new(deadline_exceeded(*this.budget))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
