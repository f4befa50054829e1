use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tonic::Code;

use crate::BoxError;
use crate::errors::code_of;
use crate::status::attempt_timeout;
use crate::status::deadline_exceeded;

pin_project! {
    /// Response future of [`super::AttemptTimeout`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        until: Instant,
        timeout: Duration,
        // The overall budget, when the deadline (not the attempt timeout) set `until`.
        capped_by: Option<Duration>,
        timeouts: metrics::Counter,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        until: Instant,
        timeout: Duration,
        capped_by: Option<Duration>,
        timeouts: metrics::Counter,
    ) -> Self {
        Self {
            inner,
            sleep: sleep_until(until),
            until,
            timeout,
            capped_by,
            timeouts,
        }
    }
}

fn elapsed(
    capped_by: Option<Duration>,
    timeout: Duration,
    timeouts: &metrics::Counter,
) -> BoxError {
    match capped_by {
        Some(budget) => Box::new(deadline_exceeded(budget)),
        None => {
            timeouts.increment(1);
            Box::new(attempt_timeout(timeout))
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
                // The server's copy of the timer (CANCELLED from tonic) can win the race.
                if Instant::now() >= *this.until && code_of(&err) == Code::Cancelled {
                    elapsed(*this.capped_by, *this.timeout, this.timeouts)
                } else {
                    err
                }
            }));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(elapsed(*this.capped_by, *this.timeout, this.timeouts)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
