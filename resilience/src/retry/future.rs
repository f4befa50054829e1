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
    }
}

impl<S> ResponseFuture<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    pub(super) fn new(
        req: Request<Body>,
        service: TowerRetry<S>,
        max_request_bytes: usize,
        stats: RetryStats,
    ) -> Self {
        let (parts, body) = req.into_parts();
        Self {
            state: State::Buffering {
                parts: Some(parts),
                collect: Collect::new(body, max_request_bytes),
                service: Some(service),
                stats,
            },
        }
    }
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
                    let mut parts = parts.take().expect("polled after completion");
                    let body = match collected {
                        Collected::Complete {
                            data,
                            trailers: None,
                        } => {
                            parts.extensions.insert(Replay(data.clone()));
                            Body::new(Full::new(data))
                        }
                        // gRPC requests carry no trailers; one that does is sent as is, once.
                        Collected::Complete { data, trailers } => {
                            Body::new(Buffered::new(data, trailers))
                        }
                        Collected::TooLarge(body) => {
                            stats.add_not_buffered();
                            body
                        }
                    };
                    let mut service = service.take().expect("polled after completion");
                    // `service` was polled ready by `Retry::poll_ready` before it moved here.
                    let inner = service.call(Request::from_parts(parts, body));
                    this.state.set(State::Running { inner });
                }
                StateProj::Running { inner } => return inner.poll(cx),
            }
        }
    }
}
