//! approval-svc against a real order-svc, both as tonic servers on loopback, each on a fresh
//! PostgreSQL database. One test binary (modules below) keeps linking cheap.

mod approve;
mod audit;
mod audit_trail;
mod auth;
mod check_lock;
mod check_verdicts;
mod completer_breaker;
mod consistency;
mod dead_letters;
mod deadline;
mod discovery;
mod helpers;
mod instances;
mod metrics;
mod ops;
mod outage;
mod recovery;
mod revoke;
mod sold_out;
#[path = "../../../common/tests/support/auth.rs"]
mod support;
mod tls;
mod unknown_outcomes;
mod validation;
mod write_batches;
