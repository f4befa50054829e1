//! Server-side fault injection for tests and drills.
//!
//! Put [`FaultLayer`] around a tonic server (`Server::builder().layer(layer)`); each request is
//! matched against the rules of the [`FaultPlan`] in force:
//!
//! | kind | effect | what the client sees |
//! | --- | --- | --- |
//! | `delay=DURATION` | waits, then handles the request normally | latency |
//! | `error=CODE` | answers CODE at once; the handler does not run | that code |
//! | `drop_response` | runs the handler to completion, then answers UNAVAILABLE instead | UNAVAILABLE, though the work was committed |
//! | `black_hole` | runs the handler to completion, then never answers | its own timeout, though the work was committed |
//!
//! Injected errors carry `ErrorInfo` reason `FAULT_INJECTED` with the fault's kind, so a drill's
//! logs can tell them apart; the client-side classification does not look at it.
//!
//! Rules are evaluated in order; every matching `delay` that fires adds up, and the first
//! matching `error`, `drop_response` or `black_hole` that fires decides the outcome.
//!
//! # Text form (`FAULTS` environment variable)
//!
//! ```text
//! plan        = rule *( ";" rule )           blank rules and spaces are ignored; "" = no faults
//! rule        = target ":" action [ ":" probability ]
//! target      = rpc [ "@" attempt ]          attempt: only that try of a call (1 = first)
//! rpc         = "*"                          every RPC
//!             | "/" package "." Service "/" Method   one RPC by full path
//!             | Method                       every RPC with that method name
//! action      = "delay=" duration            humantime: 200ms, 1s, 1m30s
//!             | "error=" code                UNAVAILABLE, unavailable or 14 (not OK)
//!             | "drop_response" | "black_hole"
//! probability = number in [0, 1]             default 1
//! ```
//!
//! e.g. `FAULTS="CreateOrder:drop_response:1.0;*:delay=200ms:0.5"`, or, to script one call,
//! `FAULTS="CreateOrder@1:drop_response;CreateOrder@2:error=INTERNAL"` (the first try commits
//! and loses its reply, the retry is refused). The attempt is read from the request's
//! `grpc-previous-rpc-attempts` (absent: the first try).
//!
//! Off by default: with no plan every request goes straight through. Only code holding the
//! [`FaultHandle`] (or the process environment) can turn faults on; nothing in a request can.

mod future;
mod handle;
mod layer;
mod plan;

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tonic::body::Body;
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::handle::{FAULTS_ENV, FaultHandle};
pub use self::layer::FaultLayer;
pub use self::plan::{FaultKind, FaultParseError, FaultPlan, FaultRule, RpcFilter};
use crate::BoxError;
use crate::errors::{self, reason};
use crate::metadata::GRPC_PREVIOUS_RPC_ATTEMPTS;

/// Injects the faults of its [`FaultHandle`] into the requests it serves.
#[derive(Debug, Clone)]
pub struct Fault<S> {
    inner: S,
    handle: FaultHandle,
    counters: KindCounters,
}

#[derive(Debug, Clone)]
struct KindCounters([metrics::Counter; 4]);

impl KindCounters {
    fn new() -> Self {
        Self(["delay", "error", "drop_response", "black_hole"].map(crate::telemetry::fault))
    }

    fn fired(&self, kind: FaultKind) {
        let i = match kind {
            FaultKind::Delay(_) => 0,
            FaultKind::Error(_) => 1,
            FaultKind::DropResponse => 2,
            FaultKind::BlackHole => 3,
        };
        self.0[i].increment(1);
    }
}

/// What the rules decided for one request.
struct Decision {
    delay: Duration,
    outcome: Option<FaultKind>,
}

/// Which attempt of its call a request is (1 = the first try), from
/// `grpc-previous-rpc-attempts`; a missing or malformed value reads as the first try.
fn attempt_of<B>(req: &Request<B>) -> u32 {
    req.headers()
        .get(GRPC_PREVIOUS_RPC_ATTEMPTS)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u32>().ok())
        .map_or(1, |previous| previous.saturating_add(1))
}

fn decide(
    plan: &FaultPlan,
    path: &str,
    attempt: u32,
    counters: &KindCounters,
    handle: &FaultHandle,
) -> Option<Decision> {
    let mut decision = Decision {
        delay: Duration::ZERO,
        outcome: None,
    };
    let mut fired = 0;
    for rule in plan.rules.iter().filter(|r| r.applies_to(path, attempt)) {
        let is_delay = matches!(rule.kind, FaultKind::Delay(_));
        if !is_delay && decision.outcome.is_some() {
            continue;
        }
        if rule.probability < 1.0 && !rand::random_bool(rule.probability) {
            continue;
        }
        fired += 1;
        counters.fired(rule.kind);
        match rule.kind {
            FaultKind::Delay(d) => decision.delay += d,
            kind => decision.outcome = Some(kind),
        }
    }
    handle.count(fired);
    (fired > 0).then_some(decision)
}

fn injected(code: tonic::Code, kind: FaultKind, message: &str) -> Response<Body> {
    errors::with_reason(
        code,
        reason::FAULT_INJECTED,
        message,
        [("fault", kind.name().to_owned())],
    )
    .into_http()
}

impl<S, B, ResB> Service<Request<B>> for Fault<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let plan = self.handle.plan();
        let decision = match plan.is_empty() {
            true => None,
            false => decide(
                &plan,
                req.uri().path(),
                attempt_of(&req),
                &self.counters,
                &self.handle,
            ),
        };
        let Some(Decision { delay, outcome }) = decision else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        tracing::debug!(rpc = %req.uri().path(), ?delay, ?outcome, "injecting fault");
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::faulted(Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let kind = match outcome {
                Some(FaultKind::Error(code)) => {
                    return Ok(injected(code, FaultKind::Error(code), "injected fault"));
                }
                Some(kind) => kind,
                None => {
                    let response = ready.call(req).await.map_err(Into::into)?;
                    return Ok(response.map(Body::new));
                }
            };
            // The handler runs to the end and its response is produced in full, so whatever
            // it commits is committed; only then is the answer lost.
            if let Ok(response) = ready.call(req).await.map_err(Into::into) {
                let _ = response.into_body().collect().await;
            }
            if kind == FaultKind::BlackHole {
                std::future::pending::<()>().await;
            }
            Ok(injected(
                tonic::Code::Unavailable,
                kind,
                "response dropped (fault injection)",
            ))
        }))
    }
}

#[cfg(test)]
mod tests;
