//! One endpoint as the balancer sees it: not ready while ejected or while its probe is out,
//! and a load that makes the balancer prefer any other endpoint right after a failure.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker, ready};

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::Code;
use tower::Service;
use tower::load::Load;
use tower::load::peak_ewma::{Cost, PeakEwma};

use super::Pool;
use super::detector::{Detector, EndpointState, Readiness, Ticket, Verdict};
use crate::BoxError;
use crate::breaker::{Outcome, outcome};
use crate::errors::{code_of, surely_unsent};
use crate::telemetry::{self, EndpointMetrics};

struct Guarded {
    detector: Detector,
    // The balancer's task, woken when a probe finishes so the endpoint is polled again.
    waker: Option<Waker>,
}

/// What one endpoint's service, its response futures and the pool share.
pub(crate) struct EndpointShared {
    pub(crate) key: String,
    guarded: Mutex<Guarded>,
    pub(crate) in_flight: AtomicUsize,
    metrics: EndpointMetrics,
    // A trait object, not `Weak<Pool>`: the pool holds endpoint services, and that cycle of
    // types makes rustc fail to prove `Send` for futures that hold the pool
    // (rust-lang/rust#102211); the object's bounds are stated, not inferred.
    pool: Weak<dyn PoolEvents>,
}

/// What an endpoint tells its pool.
pub(crate) trait PoolEvents: Send + Sync {
    /// One endpoint changed state.
    fn endpoint_changed(&self);
    /// Whether an endpoint other than `key` is admitted.
    fn others_admitted(&self, key: &str) -> bool;
}

impl EndpointShared {
    pub(crate) fn new(key: String, pool: &Arc<Pool>) -> Arc<Self> {
        let metrics = telemetry::endpoint(pool.client(), &key);
        metrics.state.set(EndpointState::Admitted.gauge_value());
        Arc::new(Self {
            guarded: Mutex::new(Guarded {
                detector: Detector::new(pool.outlier(), Instant::now()),
                waker: None,
            }),
            key,
            in_flight: AtomicUsize::new(0),
            metrics,
            pool: Arc::downgrade(pool) as Weak<dyn PoolEvents>,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Guarded> {
        self.guarded.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn with_detector<T>(&self, f: impl FnOnce(&Detector) -> T) -> T {
        f(&self.lock().detector)
    }

    fn record(&self, ticket: Ticket, verdict: Verdict) {
        // Asked before taking this endpoint's lock: the pool locks every endpoint.
        let others_admitted = verdict == Verdict::Unreachable
            && self
                .pool
                .upgrade()
                .is_some_and(|pool| pool.others_admitted(&self.key));
        let (changed, waker) = {
            let mut guarded = self.lock();
            let changed = guarded
                .detector
                .record(ticket, verdict, others_admitted, Instant::now());
            (changed, guarded.waker.take())
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        self.publish(changed);
    }

    // Called with no lock held: the pool reads every endpoint.
    fn publish(&self, changed: Option<EndpointState>) {
        let Some(state) = changed else { return };
        self.metrics.state.set(state.gauge_value());
        match state {
            EndpointState::Ejected => {
                self.metrics.ejections.increment(1);
                let until = self.with_detector(|d| d.ejected_until());
                tracing::warn!(endpoint = %self.key, ejected_for = ?until.map(|u| u.saturating_duration_since(Instant::now())), "endpoint ejected");
            }
            EndpointState::Probing => tracing::info!(endpoint = %self.key, "endpoint probing"),
            EndpointState::Admitted => tracing::info!(endpoint = %self.key, "endpoint readmitted"),
        }
        if let Some(pool) = self.pool.upgrade() {
            pool.endpoint_changed();
        }
    }
}

/// One endpoint's attempt stack (`S`: per-attempt timeout and unary over its channel) behind
/// its failure detector, measured by PeakEWMA for the balancer.
pub struct EndpointService<S> {
    inner: PeakEwma<S>,
    shared: Arc<EndpointShared>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> fmt::Debug for EndpointService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointService")
            .field("endpoint", &self.shared.key)
            .finish_non_exhaustive()
    }
}

impl<S> EndpointService<S> {
    pub(crate) fn new(inner: PeakEwma<S>, shared: Arc<EndpointShared>) -> Self {
        Self {
            inner,
            shared,
            sleep: None,
        }
    }
}

impl<S> Load for EndpointService<S> {
    /// A due probe first (`false` sorts before `true`), then a recent failure (`None` sorts
    /// before any instant, an older failure before a newer one), then PeakEWMA's latency cost.
    /// Of the two endpoints p2c draws, the one that failed last loses, so a retry never returns
    /// to the endpoint that just failed it while another is ready; and an endpoint whose
    /// ejection has ended wins, so its probe goes out at once. Without that, its latency
    /// estimate (swollen by the timeouts that ejected it) lost every draw until it decayed,
    /// tens of seconds, and the endpoint stayed out although it was back.
    type Metric = (bool, Option<Instant>, Cost);

    fn load(&self) -> Self::Metric {
        let now = Instant::now();
        let (probe_due, failed) = {
            let guarded = self.shared.lock();
            (
                guarded.detector.probe_due(now),
                guarded.detector.recent_failure(now),
            )
        };
        (!probe_due, failed, self.inner.load())
    }
}

impl<S, Req, B> Service<Req> for EndpointService<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = ResponseFuture<<PeakEwma<S> as Service<Req>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            let (readiness, changed) = {
                let mut guarded = self.shared.lock();
                let answer = guarded.detector.readiness(Instant::now());
                if answer.0 == Readiness::ProbeBusy {
                    guarded.waker = Some(cx.waker().clone());
                }
                answer
            };
            self.shared.publish(changed);
            match readiness {
                Readiness::Ready => {
                    self.sleep = None;
                    return self.inner.poll_ready(cx).map_err(Into::into);
                }
                Readiness::ProbeBusy => return Poll::Pending,
                Readiness::EjectedUntil(until) => {
                    let sleep = self
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                    if sleep.deadline() != until {
                        sleep.as_mut().reset(until);
                    }
                    ready!(sleep.as_mut().poll(cx));
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let ticket = self.shared.lock().detector.admit();
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        ResponseFuture {
            inner: self.inner.call(req),
            report: Some(Report {
                shared: self.shared.clone(),
                ticket,
            }),
        }
    }
}

/// Reports an attempt's verdict once; an attempt dropped unfinished (cut by a timeout above,
/// or abandoned) says nothing about the endpoint.
struct Report {
    shared: Arc<EndpointShared>,
    ticket: Ticket,
}

impl Report {
    fn finish(self, verdict: Verdict, code: Code) {
        self.shared.metrics.attempts.get(code).increment(1);
        self.shared.record(self.ticket, verdict);
        // Drop runs next and decrements in_flight.
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// Response future of [`EndpointService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        report: Option<Report>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(report) = this.project().report.take() {
                report.shared.record(report.ticket, Verdict::Ignored);
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The endpoint's verdict on one attempt's result: refused before sending is `Unreachable`
/// (certain, and safe to send elsewhere); otherwise the breaker's classification.
fn verdict<B>(result: &Result<Response<B>, BoxError>) -> (Verdict, Code) {
    match result {
        Ok(_) => (Verdict::Success, Code::Ok),
        Err(err) if surely_unsent(err) => (Verdict::Unreachable, code_of(err)),
        Err(err) => {
            let verdict = match outcome(result) {
                Outcome::Success => Verdict::Success,
                Outcome::Failure => Verdict::Failure,
                Outcome::Ignored => Verdict::Ignored,
            };
            (verdict, code_of(err))
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        if let Some(report) = this.report.take() {
            let (verdict, code) = verdict(&result);
            report.finish(verdict, code);
        }
        Poll::Ready(result)
    }
}
