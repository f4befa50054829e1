use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::request::Parts;
use http::{Request, Response};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tonic::body::Body;
use tower::Service;

use super::RetryStats;
use super::policy::{Replay, RetryPolicy};
use crate::BoxError;
use crate::body::{Buffered, Collect, Collected};

type TowerRetry<S> = tower::retry::Retry<RetryPolicy, S>;
type TowerFuture<S> = tower::retry::future::ResponseFuture<RetryPolicy, S, Request<Body>>;

pin_project! {
    /// Response future of [`super::Retry`]: reads the request body, then runs tower's retry loop.
    pub struct ResponseFuture<S>
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    {
        #[pin]
        state: State<S>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S>
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    {
        Buffering {
            parts: Option<Parts>,
            collect: Collect,
            service: Option<TowerRetry<S>>,
            stats: RetryStats,
        },
        Running { #[pin] inner: TowerFuture<S> },
        Failed { error: Option<BoxError> },
    }
}

impl<S> ResponseFuture<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    pub(super) fn buffering(
        parts: Parts,
        collect: Collect,
        service: TowerRetry<S>,
        stats: RetryStats,
    ) -> Self {
        Self {
            state: State::Buffering {
                parts: Some(parts),
                collect,
                service: Some(service),
                stats,
            },
        }
    }

    pub(super) fn running(inner: TowerFuture<S>) -> Self {
        Self {
            state: State::Running { inner },
        }
    }

    pub(super) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

/// The request to send once its body is read: replayable when it fit in the buffer.
pub(super) fn rebuild(mut parts: Parts, collected: Collected, stats: &RetryStats) -> Request<Body> {
    let body = match collected {
        Collected::Complete {
            data,
            trailers: None,
        } => {
            parts.extensions.insert(Replay(data.clone()));
            Body::new(Full::new(data))
        }
        // gRPC requests carry no trailers; one that does is sent as is, once.
        Collected::Complete { data, trailers } => Body::new(Buffered::new(data, trailers)),
        Collected::TooLarge(body) => {
            stats.add_not_buffered();
            body
        }
    };
    Request::from_parts(parts, body)
}

impl<S> std::fmt::Debug for ResponseFuture<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Buffering {
                    parts,
                    collect,
                    service,
                    stats,
                } => {
                    let collected = ready!(Pin::new(collect).poll(cx))
                        .map_err(|status| Box::new(status) as BoxError)?;
                    let parts = parts.take().expect("polled after completion");
                    let mut service = service.take().expect("polled after completion");
                    // `service` was polled ready by `Retry::poll_ready` before it moved here.
                    let inner = service.call(rebuild(parts, collected, stats));
                    this.state.set(State::Running { inner });
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")));
                }
                StateProj::Running { inner } => return inner.poll(cx),
            }
        }
    }
}
