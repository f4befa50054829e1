//! Every status this crate makes, and their building blocks: the `ErrorInfo` domain and
//! reasons, the builder, the local mark, and each refusing layer's status (breaker, shed,
//! deadline, per-attempt timeout) and the retry layer's stop reasons. A leaf: the layers build
//! on it and [`crate::errors`] re-exports it, so neither depends on the other.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every status made here (the project's domain, API.md).
pub const DOMAIN: &str = "lab";

/// `ErrorInfo.reason` values of the statuses made here.
pub mod reason {
    /// UNAVAILABLE: the circuit breaker is open (or half-open with every probe slot taken).
    pub const CIRCUIT_OPEN: &str = "CIRCUIT_OPEN";
    /// RESOURCE_EXHAUSTED: too many attempts in flight; shed locally, never sent.
    pub const LOAD_SHED: &str = "LOAD_SHED";
    /// DEADLINE_EXCEEDED: the logical call's overall budget is spent.
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
    /// DEADLINE_EXCEEDED: one attempt hit the per-attempt timeout (retryable).
    pub const ATTEMPT_TIMEOUT: &str = "ATTEMPT_TIMEOUT";
    /// Any code: a fault injected on purpose by [`crate::fault`].
    pub const FAULT_INJECTED: &str = "FAULT_INJECTED";
}

/// The `ErrorInfo` reason of `status` when its domain is [`DOMAIN`].
pub fn reason_of(status: &Status) -> Option<String> {
    status
        .get_details_error_info()
        .filter(|info| info.domain == DOMAIN)
        .map(|info| info.reason)
}

/// Builds a status with an `ErrorInfo` detail: domain [`DOMAIN`], `reason` (one of [`reason`]
/// here; the services' own are `lab_common::reason::Reason`) and `metadata`. The one status
/// builder of the workspace: lab-common re-exports it.
pub fn with_reason<'a>(
    code: Code,
    reason: impl AsRef<str>,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (&'a str, String)>,
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason.as_ref(), DOMAIN, metadata),
    )
}

/// Which local layer refused a call without sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalKind {
    CircuitOpen,
    LoadShed,
}

/// Marks a status as made here for a request that never left the process. It rides in the
/// status' `source()`, which never crosses the wire, so a remote server can't forge it.
#[derive(Debug)]
struct Local {
    kind: LocalKind,
    status: Status,
}

impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.status, f)
    }
}

impl StdError for Local {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.status)
    }
}

pub(crate) fn local(kind: LocalKind, status: Status) -> Status {
    // `from_error` finds the status in the source chain, copies code, message, details and
    // metadata, and keeps the `Local` wrapper as the new status' source.
    Status::from_error(Box::new(Local { kind, status }))
}

pub(crate) fn local_kind(status: &Status) -> Option<LocalKind> {
    status
        .source()
        .and_then(|source| source.downcast_ref::<Local>())
        .map(|local| local.kind)
}

/// The status of a call refused by an open breaker.
pub fn circuit_open(client: &str) -> Status {
    local(
        LocalKind::CircuitOpen,
        with_reason(
            Code::Unavailable,
            reason::CIRCUIT_OPEN,
            "circuit breaker is open",
            [("client", client.to_owned())],
        ),
    )
}

/// Whether `status` is a breaker rejection ([`reason::CIRCUIT_OPEN`]).
pub fn is_circuit_open(status: &Status) -> bool {
    status.code() == Code::Unavailable && reason_of(status).as_deref() == Some(reason::CIRCUIT_OPEN)
}

/// The status of an attempt shed by the concurrency limit.
pub fn load_shed(limit: usize) -> Status {
    local(
        LocalKind::LoadShed,
        with_reason(
            Code::ResourceExhausted,
            reason::LOAD_SHED,
            format!("more than {limit} calls in flight"),
            [("limit", limit.to_string())],
        ),
    )
}

/// The status of a logical call whose overall budget is spent.
pub fn deadline_exceeded(budget: Duration) -> Status {
    with_reason(
        Code::DeadlineExceeded,
        reason::DEADLINE_EXCEEDED,
        format!("deadline of {budget:?} exceeded"),
        [("budget_ms", budget.as_millis().to_string())],
    )
}

/// The status of one attempt cut by the per-attempt timeout.
pub fn attempt_timeout(timeout: Duration) -> Status {
    with_reason(
        Code::DeadlineExceeded,
        reason::ATTEMPT_TIMEOUT,
        format!("attempt timed out after {timeout:?}"),
        [("timeout_ms", timeout.as_millis().to_string())],
    )
}

/// Response metadata key added to the final status when a retryable failure was not retried,
/// saying why: one of the [`stop`] values.
pub const RETRY_STOP_KEY: &str = "lab-retry-stop";

/// Values of [`RETRY_STOP_KEY`].
pub mod stop {
    /// The configured maximum number of attempts was used.
    pub const MAX_ATTEMPTS: &str = "MAX_ATTEMPTS";
    /// The retry budget had no tokens left.
    pub const RETRY_BUDGET_EXHAUSTED: &str = "RETRY_BUDGET_EXHAUSTED";
    /// The backoff (or pushback) would have slept past the deadline.
    pub const DEADLINE: &str = "DEADLINE";
    /// The server sent a negative or malformed `grpc-retry-pushback-ms`.
    pub const PUSHBACK: &str = "PUSHBACK";
    /// No `idempotency-key`, and the request may have reached the server.
    pub const NOT_IDEMPOTENT: &str = "NOT_IDEMPOTENT";
}
