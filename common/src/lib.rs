//! Plumbing shared by the concurrency-lab services.
//!
//! - [`audit`]: the append-only audit trail of state-changing calls (write, list).
//! - [`batch`]: leader/follower group commit (one transaction for the writes that arrive together,
//!   in one queue or one per key).
//! - [`auth`]: bearer-token authentication, roles, protected mode (one tower layer).
//! - [`alerts`]: alert delivery to Slack-compatible and PagerDuty webhooks, with retries.
//! - [`grpc`]: binding, reflection, health and request ids for tonic servers.
//! - [`shutdown`]: the one shutdown signal of a process's tasks, and SIGINT/SIGTERM.
//! - [`status`]: `tonic::Status` with `google.rpc` error details (domain `lab`).
//! - [`reason`]: the typed `ErrorInfo.reason` vocabulary both sides of a call use.
//! - [`validate`]: input validation that collects `BadRequest` field violations.
//! - [`paging`]: `page_size` / opaque `page_token` handling.
//! - [`metadata`]: the metadata names of the public contract (`idempotency-key`, …).
//! - [`postgres`]: connection pools, and a private throwaway PostgreSQL when no URL is given.
//! - [`telemetry`]: `tracing` set-up in `pretty` or `json` format.
//! - [`time`]: conversions between `chrono` and protobuf timestamps.
//! - [`service`]: a service's database, server builder, health while serving and draining.
//! - [`grpc_metrics`]: per-RPC request counts and latency histograms (a tower layer).
//! - [`tls`]: TLS and mutual TLS for the gRPC servers (certificates re-read when they
//!   change), the client side's settings, throwaway certificates.
//! - [`metrics_http`]: `/metrics` (Prometheus) and `/healthz` on their own HTTP port.
//! - [`runtime`]: the tokio runtime every binary runs on (its LIFO slot off).
#![forbid(unsafe_code)]

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod grpc;
pub mod grpc_metrics;
pub mod metadata;
pub mod metrics_http;
pub mod paging;
pub mod postgres;
pub mod reason;
pub mod runtime;
pub mod service;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod validate;
