//! Metric names and pre-registered handles (one registry lookup per layer, none per call).
//! Building a handle also describes its family (HELP text, unit), so a family is on the
//! `/metrics` page, described and at zero, from the moment its layer exists.

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use tonic::Code;

pub(crate) const CALLS: &str = "resilience_calls_total";
pub(crate) const CALL_DURATION: &str = "resilience_call_duration_seconds";
pub(crate) const ATTEMPTS: &str = "resilience_attempts_total";
pub(crate) const ATTEMPT_TIMEOUTS: &str = "resilience_attempt_timeouts_total";
pub(crate) const RETRIES: &str = "resilience_retries_total";
pub(crate) const RETRY_BUDGET_EXHAUSTED: &str = "resilience_retry_budget_exhausted_total";
pub(crate) const BREAKER_STATE: &str = "resilience_breaker_state";
pub(crate) const BREAKER_TRANSITIONS: &str = "resilience_breaker_transitions_total";
pub(crate) const BREAKER_REJECTIONS: &str = "resilience_breaker_rejections_total";
pub(crate) const SHED: &str = "resilience_shed_total";
pub(crate) const DEADLINE_EXCEEDED: &str = "resilience_deadline_exceeded_total";
pub(crate) const FAULTS_INJECTED: &str = "resilience_faults_injected_total";
pub(crate) const ENDPOINT_STATE: &str = "resilience_endpoint_state";
pub(crate) const ENDPOINT_EJECTIONS: &str = "resilience_endpoint_ejections_total";
pub(crate) const ENDPOINT_ATTEMPTS: &str = "resilience_endpoint_attempts_total";

/// Gives the per-endpoint metric families their HELP text (the recorder keeps it for series
/// registered later too).
pub(crate) fn describe_endpoint_metrics() {
    metrics::describe_gauge!(
        ENDPOINT_STATE,
        "State of one balanced endpoint: 0 admitted, 1 ejected, 2 probing"
    );
    metrics::describe_counter!(
        ENDPOINT_EJECTIONS,
        "Times one balanced endpoint was ejected by its failure detector"
    );
    metrics::describe_counter!(
        ENDPOINT_ATTEMPTS,
        "Attempts sent to one balanced endpoint, by the gRPC code they ended with"
    );
}

/// The handles of one balanced endpoint's metrics.
pub(crate) struct EndpointMetrics {
    pub(crate) state: Gauge,
    pub(crate) ejections: Counter,
    pub(crate) attempts: PerCode,
}

pub(crate) fn endpoint(client: &str, endpoint: &str) -> EndpointMetrics {
    let labels = || {
        [
            ("client", client.to_owned()),
            ("endpoint", endpoint.to_owned()),
        ]
    };
    EndpointMetrics {
        state: gauge!(ENDPOINT_STATE, &labels()),
        ejections: counter!(ENDPOINT_EJECTIONS, &labels()),
        attempts: PerCode(ALL_CODES.map(|code| {
            counter!(ENDPOINT_ATTEMPTS, "client" => client.to_owned(), "endpoint" => endpoint.to_owned(), "code" => code_name(code))
        })),
    }
}

/// Describes every family above. Descriptions are kept by the recorder installed at the time,
/// so this runs each time a handle is built rather than once per process: a layer built after
/// the recorder was installed still gets them.
fn describe() {
    describe_counter!(
        CALLS,
        "Calls through the resilience stack, by client and final gRPC code."
    );
    describe_histogram!(
        CALL_DURATION,
        Unit::Seconds,
        "Duration of calls through the resilience stack, retries included, by client."
    );
    describe_counter!(
        ATTEMPTS,
        "Attempts sent to the server (first tries and retries), by client."
    );
    describe_counter!(
        ATTEMPT_TIMEOUTS,
        "Attempts cut by the per-attempt timeout, by client."
    );
    describe_counter!(RETRIES, "Retries scheduled, by client.");
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        "Retries refused because the retry budget was spent, by client."
    );
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state by client: 0 closed, 1 open, 2 half-open."
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        "Circuit breaker transitions, by client and the state entered."
    );
    describe_counter!(
        BREAKER_REJECTIONS,
        "Calls failed fast by an open circuit breaker, by client."
    );
    describe_counter!(
        SHED,
        "Calls refused by the concurrency limit (load shedding), by client."
    );
    describe_counter!(
        DEADLINE_EXCEEDED,
        "Calls that ran out of their overall deadline, by client."
    );
    describe_counter!(
        FAULTS_INJECTED,
        "Faults injected by the fault-injection layer, by kind."
    );
}

/// The label value used when a layer is built without a client name.
pub(crate) const DEFAULT_CLIENT: &str = "default";

const ALL_CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// One counter per gRPC code, indexed by the code's number.
#[derive(Debug, Clone)]
pub(crate) struct PerCode([Counter; 17]);

impl PerCode {
    pub(crate) fn new(name: &'static str, client: &str) -> Self {
        describe();
        Self(
            ALL_CODES.map(
                |code| counter!(name, "client" => client.to_owned(), "code" => code_name(code)),
            ),
        )
    }

    pub(crate) fn get(&self, code: Code) -> &Counter {
        &self.0[(code as usize).min(16)]
    }
}

/// The canonical UPPER_SNAKE name of a code, as used in labels and the fault grammar.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Parses a code from its UPPER_SNAKE name (any case) or its number.
pub(crate) fn parse_code(text: &str) -> Option<Code> {
    if let Ok(n) = text.parse::<i32>() {
        return (0..=16).contains(&n).then(|| Code::from(n));
    }
    ALL_CODES
        .into_iter()
        .find(|code| code_name(*code).eq_ignore_ascii_case(text))
}

pub(crate) fn calls(client: &str) -> (PerCode, Histogram) {
    describe();
    (
        PerCode::new(CALLS, client),
        histogram!(CALL_DURATION, "client" => client.to_owned()),
    )
}

pub(crate) fn plain(name: &'static str, client: &str) -> Counter {
    describe();
    counter!(name, "client" => client.to_owned())
}

pub(crate) fn breaker_state(client: &str) -> Gauge {
    describe();
    gauge!(BREAKER_STATE, "client" => client.to_owned())
}

pub(crate) fn breaker_transition(client: &str, to: &'static str) -> Counter {
    describe();
    counter!(BREAKER_TRANSITIONS, "client" => client.to_owned(), "to" => to)
}

pub(crate) fn fault(kind: &'static str) -> Counter {
    describe();
    counter!(FAULTS_INJECTED, "kind" => kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_parse_back() {
        for code in ALL_CODES {
            assert_eq!(parse_code(code_name(code)), Some(code));
            assert_eq!(parse_code(&(code as i32).to_string()), Some(code));
        }
        assert_eq!(parse_code("unavailable"), Some(Code::Unavailable));
        assert_eq!(parse_code("17"), None);
        assert_eq!(parse_code("NOPE"), None);
    }
}
