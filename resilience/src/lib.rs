//! Tower middleware that makes a tonic client resilient, plus a server-side fault injector.
//!
//! The client stack, outermost first (see [`ResilientChannel`]):
//!
//! | layer | module | what it does |
//! | --- | --- | --- |
//! | instrument | [`instrument`] | a tracing span and call metrics per logical call |
//! | deadline | [`deadline`] | one budget per logical call: `min(config, caller's grpc-timeout)` |
//! | retry | [`retry`] | buffers the unary request; budgeted full-jitter retries of retryable codes |
//! | circuit breaker | [`breaker`] | fails fast with `CIRCUIT_OPEN` while the server looks down |
//! | load shed | [`shed`] | at most N attempts in flight; beyond that `RESOURCE_EXHAUSTED` at once |
//! | balancer | [`endpoints`] | over several endpoints: p2c among the admitted, one failure detector each |
//! | per-attempt timeout | [`timeout`] | bounds one attempt, refreshes `grpc-timeout` per attempt |
//! | unary | [`unary`] | buffers the unary response and lifts a non-OK `grpc-status` into `Err` |
//! | the channel | | a tonic `Channel` (one per endpoint when balanced) |
//!
//! Over a balanced set ([`ResilientChannelBuilder::balance`], [`ResilientChannelBuilder::discover`])
//! the per-attempt timeout and unary layers sit below the balancer, one stack per endpoint, and
//! the breaker opens only when no endpoint is admitted ([`endpoints`]).
//!
//! Every layer fails with a boxed [`tonic::Status`], so a generated client surfaces the exact code,
//! message and details. Statuses made by this crate carry a `google.rpc.ErrorInfo` with domain
//! [`errors::DOMAIN`] and a reason from [`errors::reason`]; [`errors::reason_of`] reads it back.
//!
//! Failure classification (shared by retry and breaker, see [`errors`]):
//! - retryable: `UNAVAILABLE`, `DEADLINE_EXCEEDED` of one attempt, `RESOURCE_EXHAUSTED`, `ABORTED`,
//!   never a `CIRCUIT_OPEN` rejection;
//! - a server failure (counted by the breaker): `UNAVAILABLE`, `DEADLINE_EXCEEDED`,
//!   `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNKNOWN`; every other answer proves the server is up.
//!
//! Every wait (retry backoff, open periods, ejections) comes from [`backoff`], one capped
//! exponential schedule with jitter drawn from an injectable RNG
//! ([`ResilientChannelBuilder::from_rng`], `RetryLayer::from_rng`, `CircuitBreakerLayer::from_rng`),
//! so tests can replay the jittered paths. [`ResilienceConfig::validate`] refuses out-of-range
//! settings with a [`ConfigError`] ([`ResilientChannel::try_builder`]); nothing is clamped.
//!
//! The [`fault`] module is the server side: a layer for `tonic::transport::Server::builder().layer`
//! that injects delays, errors and lost responses for tests and drills.
//!
//! # Metrics
//!
//! Emitted through the [`metrics`] facade; every series has a `client` label
//! ([`ResilienceConfig::client`]). Handles are registered when a layer is built, so install the
//! recorder before building the stack.
//!
//! | name | kind | extra labels | meaning |
//! | --- | --- | --- | --- |
//! | `resilience_calls_total` | counter | `code` | logical calls by final gRPC code |
//! | `resilience_call_duration_seconds` | histogram | | duration of a logical call |
//! | `resilience_attempts_total` | counter | | attempts sent (first tries and retries) |
//! | `resilience_attempt_timeouts_total` | counter | | attempts cut by the per-attempt timeout |
//! | `resilience_retries_total` | counter | | retries scheduled |
//! | `resilience_retry_budget_exhausted_total` | counter | | retries refused by the retry budget |
//! | `resilience_breaker_state` | gauge | | 0 closed, 1 open, 2 half-open, 3 forced open |
//! | `resilience_breaker_transitions_total` | counter | `to` | state changes, by new state |
//! | `resilience_breaker_rejections_total` | counter | | calls failed fast with `CIRCUIT_OPEN` |
//! | `resilience_shed_total` | counter | | attempts shed by the concurrency limit |
//! | `resilience_deadline_exceeded_total` | counter | | logical calls that ran out of budget |
//! | `resilience_endpoint_state` | gauge | `endpoint` | 0 admitted, 1 ejected, 2 probing |
//! | `resilience_endpoint_ejections_total` | counter | `endpoint` | ejections of one endpoint |
//! | `resilience_endpoint_attempts_total` | counter | `endpoint`, `code` | attempts sent to one endpoint, by final code |
//!
//! The fault injector counts `resilience_faults_injected_total` with a `kind` label.
//!
//! # Examples
//!
//! Runnable on their own (each starts an in-process server on `127.0.0.1:0`):
//!
//! | example | shows |
//! | --- | --- |
//! | `cargo run -p resilience --example stack` | the full [`ResilientChannel`] retrying a flaky server, with seeded backoff |
//! | `cargo run -p resilience --example breaker_handle` | [`BreakerHandle`]: force open, trip, `open_until`, transitions, reset |
//! | `cargo run -p resilience --example fault_plan` | the server side: [`FaultLayer`] and [`FaultPlan`] changed at run time |
#![forbid(unsafe_code)]

pub mod backoff;
mod body;
pub mod breaker;
mod channel;
pub mod config;
pub mod deadline;
pub mod endpoints;
pub mod errors;
pub mod fault;
pub mod instrument;
pub mod metadata;
pub mod retry;
pub mod shed;
mod status;
mod telemetry;
pub mod timeout;
pub mod unary;

#[cfg(test)]
mod test_support;

pub use breaker::{BreakerHandle, BreakerState, BreakerStats, Transition};
pub use channel::{Attempt, ResilientChannel, ResilientChannelBuilder, Stack};
pub use config::{BreakerConfig, ConfigError, OutlierConfig, ResilienceConfig, RetryConfig};
pub use deadline::CallDeadline;
pub use endpoints::{Balanced, Discovery, EndpointState, EndpointView, EndpointsHandle};
pub use fault::{FaultHandle, FaultLayer, FaultPlan};
pub use retry::RetryStats;

/// The error type of every layer: a boxed [`tonic::Status`] in practice.
pub type BoxError = tower::BoxError;
