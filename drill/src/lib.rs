//! Fault-injection tooling for concurrency-lab, reusable by operators and by the scenario suite
//! in `tests/tests/`.
//!
//! - [`proxy`]: a TCP fault proxy (latency, black hole, resets, cuts, lost responses,
//!   UNAVAILABLE answers, refused connections), controllable while running, with an admin port.
//! - [`process`]: start the release binaries, `kill -9`, restart on the same address and
//!   database, SIGTERM; terminate a database's connections.
//! - [`metrics`]: a minimal `/metrics` scraper for the resilience stack's counters.
//! - [`check`]: the I1–I6 invariant checker over both services' public RPCs.
//! - [`cluster`]: both services as release processes on fresh databases, order-svc behind the
//!   proxy: what every scenario starts from.
//! - [`load`]: bounded, seeded load (products, challenges, concurrent approvals) with tallied
//!   outcomes, and the one-line [`load::Summary`] each scenario prints.
//! - [`engine`]: the one scenario engine: a [`engine::Scenario`] (cluster, workload, fault
//!   timeline, settling, expectations) run to a [`engine::DrillOutcome`] by [`engine::run`].
//! - [`scenarios`]: the built-in drills of `lab drill` and the TOML timeline file format.
//! - [`sampler`]: samples a running drill every 250 ms (outcomes, latency, the resilience
//!   counters of every approval-svc, breaker state, stock, challenges by state, dead letters);
//!   a failed read keeps the previous value.
//! - [`tally`]: what the load records per answer (outcomes, latencies), read by the sampler.
//! - [`report`]: the drill report: `report.json`, and `report.html`, one self-contained page
//!   with the verdicts, the configuration and a plot per quantity, fault windows shaded.
#![forbid(unsafe_code)]

pub mod check;
pub mod cluster;
pub mod engine;
pub mod load;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod report;
pub mod sampler;
pub mod scenarios;
pub mod tally;
