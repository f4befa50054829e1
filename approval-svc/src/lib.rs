//! approval-svc: users' challenges and the saga that turns an approval into exactly one order in
//! order-svc (`lab.approval.v1`).
//!
//! - **Intent first**: a short transaction locks the challenge and records APPROVING with its
//!   idempotency key (made once, kept forever), the attempt and a lease; only then is order-svc
//!   called, through a resilient client, with no transaction or lock held; a second short
//!   transaction writes APPROVED or APPROVE_FAILED with a precise reason, fenced by the attempt.
//! - **Completer**: every instance re-drives APPROVING/REVOKING challenges whose lease expired
//!   and runs the automatic retries of transient failures (`resilience::backoff`'s capped
//!   exponential backoff with full jitter, then dead letter), sharing the work through `FOR UPDATE SKIP LOCKED`.
//! - **Compensation**: a revoke cancels the order (idempotent), then records REVOKED.
//!
//! Modules: [`config`] (flags and environment), [`startup`] (the [`Application`]), [`service`]
//! (gRPC handlers and the protobuf conversions), [`saga`] (the three phases), [`write_batch`]
//! (their writes' group commit), [`completer`], [`orders`] (the order-svc client and failure
//! classification), [`repository`] (SQL), [`domain`] (states, rows and the saga's vocabulary),
//! [`error`] (the one error type and its mapping to `tonic::Status`), [`deadline`],
//! [`failpoints`] (test-only failure points), [`breaker_gate`], [`consistency`]
//! (the checker that compares both sides, heals and alerts), [`metrics`] (what `/metrics`
//! shows), [`audit`] (what the audit trail records, and where).
#![forbid(unsafe_code)]

pub mod audit;
pub mod breaker_gate;
pub mod completer;
pub mod config;
pub mod consistency;
pub mod deadline;
pub mod domain;
pub mod error;
pub mod failpoints;
pub mod metrics;
pub mod orders;
pub mod repository;
pub mod saga;
pub mod service;
pub mod sold_out;
pub mod startup;
pub mod write_batch;

pub use config::Config;
pub use failpoints::FailurePoints;
pub use startup::Application;
