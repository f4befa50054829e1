//! order-svc as a real tonic server on loopback, each test on a fresh PostgreSQL database. One
//! test binary (modules below, the harness in [`helpers`]) keeps linking cheap.

mod audit;
mod auth;
#[path = "../../../common/tests/support/auth.rs"]
mod auth_support;
mod bad_input;
mod contention;
mod customer_limit;
mod discovery;
mod faults;
mod group_commit;
mod helpers;
mod idempotency;
mod key_retention;
mod ledger;
mod metrics;
mod shutdown;
mod sold_out;
mod tls;
