use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use tokio::time::{Instant, Sleep, sleep};
use tonic::Status;
use tonic::body::Body;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use super::RetryStats;
use crate::BoxError;
use crate::backoff::{Backoff, JitterRng};
use crate::config::RetryConfig;
use crate::deadline::CallDeadline;
use crate::errors::{LocalKind, code_of, is_retryable_code, local_kind, status_of, surely_unsent};
use crate::metadata::{
    GRPC_PREVIOUS_RPC_ATTEMPTS, IDEMPOTENCY_KEY, Pushback, error_status_in, pushback,
};
use crate::status::{RETRY_STOP_KEY, stop};
use crate::telemetry;

/// The buffered request body, kept in the request's extensions so every attempt can be rebuilt.
#[derive(Debug, Clone)]
pub(crate) struct Replay(pub(crate) Bytes);

/// State shared by every clone of one retry layer.
pub(crate) struct Shared {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) rng: JitterRng,
    pub(crate) budget: TpsBudget,
    pub(crate) idempotent_rpcs: Vec<String>,
    pub(crate) stats: RetryStats,
    pub(crate) retries: metrics::Counter,
    pub(crate) exhausted: metrics::Counter,
}

impl Shared {
    /// # Panics
    ///
    /// When `config` is out of range ([`RetryConfig::validate`]); tower's budget would panic on
    /// it anyway, less precisely.
    pub(crate) fn new(config: &RetryConfig, client: &str, rng: JitterRng) -> Arc<Self> {
        if let Err(error) = config.validate() {
            panic!("invalid retry configuration: {error}");
        }
        Arc::new(Self {
            max_attempts: config.max_attempts,
            backoff: Backoff::new(config.backoff_base, config.backoff_cap),
            rng,
            budget: TpsBudget::new(
                config.budget_ttl,
                config.budget_min_per_sec,
                config.budget_ratio,
            ),
            idempotent_rpcs: config.idempotent_rpcs.clone(),
            stats: RetryStats::default(),
            retries: telemetry::plain(telemetry::RETRIES, client),
            exhausted: telemetry::plain(telemetry::RETRY_BUDGET_EXHAUSTED, client),
        })
    }

    fn idempotent<B>(&self, req: &Request<B>) -> bool {
        if req
            .headers()
            .get(IDEMPOTENCY_KEY)
            .is_some_and(|key| !key.is_empty())
        {
            return true;
        }
        let path = req.uri().path();
        let method = path.rsplit('/').next().unwrap_or(path);
        self.idempotent_rpcs
            .iter()
            .any(|rpc| rpc == path || rpc == method)
    }
}

/// The retry decisions of one logical call (a fresh clone per call; counts its attempts).
#[derive(Clone)]
pub struct RetryPolicy {
    shared: Arc<Shared>,
    attempts: u32,
    // Whether an attempt before the current one may have reached the server's application code.
    maybe_delivered: bool,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("attempts", &self.attempts)
            .field("max_attempts", &self.shared.max_attempts)
            .field("maybe_delivered", &self.maybe_delivered)
            .finish()
    }
}

/// Whether a failed attempt may have reached the server's application code: anything but a
/// failure [`surely_unsent`] proves harmless (an answer from the server, a timeout, a reset).
fn may_have_been_delivered(result: &Result<Response<Body>, BoxError>) -> bool {
    match result {
        Ok(_) => true,
        Err(err) => !surely_unsent(err),
    }
}

/// Marks a failed final result whose call had an earlier attempt that may have been delivered
/// (see [`crate::errors::earlier_attempt_maybe_delivered`]). A success needs no mark, and a
/// failure left unlifted in an `Ok` response (no `unary` layer below) cannot carry one.
fn mark_maybe_delivered(result: &mut Result<Response<Body>, BoxError>) {
    if let Err(err) = result {
        let taken = std::mem::replace(err, Box::new(Status::ok("")));
        let status = match taken.downcast::<Status>() {
            Ok(status) => *status,
            Err(other) => Status::from_error(other),
        };
        *err = Box::new(crate::errors::mark_maybe_delivered(status));
    }
}

enum Verdict {
    Done,
    Stop(&'static str),
    After(Duration),
}

impl RetryPolicy {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            attempts: 1,
            maybe_delivered: false,
        }
    }

    fn judge(&self, req: &Request<Body>, result: &Result<Response<Body>, BoxError>) -> Verdict {
        let (code, pushback, unsent, circuit_open) = match result {
            Ok(response) => match error_status_in(response.headers()) {
                None => return Verdict::Done,
                Some(status) => (status.code(), pushback(&status), false, false),
            },
            Err(err) => {
                let status = status_of(err);
                (
                    code_of(err),
                    status.map_or(Pushback::Absent, pushback),
                    surely_unsent(err),
                    status.and_then(local_kind) == Some(LocalKind::CircuitOpen),
                )
            }
        };
        // An open circuit is the breaker saying "stop"; retrying it would only burn budget.
        if !is_retryable_code(code) || circuit_open {
            return Verdict::Done;
        }
        if self.attempts >= self.shared.max_attempts {
            return Verdict::Stop(stop::MAX_ATTEMPTS);
        }
        if !unsent && !self.shared.idempotent(req) {
            return Verdict::Stop(stop::NOT_IDEMPOTENT);
        }
        let delay = match pushback {
            Pushback::Stop => return Verdict::Stop(stop::PUSHBACK),
            Pushback::After(delay) => delay,
            Pushback::Absent => self
                .shared
                .backoff
                .delay_with(self.attempts, &mut self.shared.rng.clone()),
        };
        if let Some(deadline) = req.extensions().get::<CallDeadline>()
            && Instant::now() + delay >= deadline.at()
        {
            return Verdict::Stop(stop::DEADLINE);
        }
        // Withdraw last: only a retry that will really happen may spend budget.
        if !self.shared.budget.withdraw() {
            self.shared.stats.add_budget_exhausted();
            self.shared.exhausted.increment(1);
            return Verdict::Stop(stop::RETRY_BUDGET_EXHAUSTED);
        }
        Verdict::After(delay)
    }
}

fn annotate(result: &mut Result<Response<Body>, BoxError>, why: &'static str) {
    let value = HeaderValue::from_static(why);
    match result {
        Ok(response) => {
            response.headers_mut().insert(RETRY_STOP_KEY, value);
        }
        Err(err) => {
            if let Some(status) = err.downcast_mut::<Status>() {
                status.metadata_mut().insert(
                    RETRY_STOP_KEY,
                    tonic::metadata::MetadataValue::from_static(why),
                );
            }
        }
    }
}

impl Policy<Request<Body>, Response<Body>, BoxError> for RetryPolicy {
    type Future = Sleep;

    fn retry(
        &mut self,
        req: &mut Request<Body>,
        result: &mut Result<Response<Body>, BoxError>,
    ) -> Option<Sleep> {
        let verdict = self.judge(req, result);
        if self.maybe_delivered && !matches!(verdict, Verdict::After(_)) {
            mark_maybe_delivered(result);
        }
        match verdict {
            Verdict::Done => None,
            Verdict::Stop(why) => {
                tracing::debug!(attempts = self.attempts, why, "not retrying");
                annotate(result, why);
                None
            }
            Verdict::After(delay) => {
                self.maybe_delivered |= may_have_been_delivered(result);
                tracing::debug!(
                    attempt = self.attempts + 1,
                    ?delay,
                    code = ?result.as_ref().err().map(code_of),
                    "retrying"
                );
                req.headers_mut()
                    .insert(GRPC_PREVIOUS_RPC_ATTEMPTS, HeaderValue::from(self.attempts));
                self.attempts += 1;
                self.shared.stats.add_retry();
                self.shared.retries.increment(1);
                Some(sleep(delay))
            }
        }
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        let Replay(data) = req.extensions().get::<Replay>()?;
        let mut clone = Request::new(Body::new(Full::new(data.clone())));
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}
