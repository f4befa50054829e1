//! order-svc, the shop: limited-stock products and orders over gRPC (`lab.order.v1`).
//!
//! - Stock is taken under the product's row lock in the transaction that claims the idempotency
//!   keys and inserts the orders, so concurrent buyers of one hot product, on any number of
//!   instances, can never oversell it, and a `CHECK (stock >= 0)` backs that up.
//! - `CreateOrder` is idempotent per (`client-id`, `idempotency-key`): the key row stores a
//!   fingerprint of the request; a replay returns the stored order, a different request under
//!   the same key is refused, and a refusal (out of stock, unknown product) consumes nothing.
//! - `CancelOrder` returns the stock exactly once, in one statement, whatever the concurrency.
//! - A hot product's CreateOrders are group-committed: those arriving while its previous batch
//!   is in the database settle together in one transaction, each with its own answer
//!   ([`group_commit`]). An instance that saw a product sold out refuses first attempts from
//!   memory until a restock or cancel is heard through LISTEN/NOTIFY ([`sold_out`],
//!   [`stock_listener`]). `max_per_customer` bounds the units one customer's orders hold.
//! - Every state-changing call that reaches the database writes one event to the append-only
//!   audit trail, in the transaction of its change (a batch's events in the batch's one
//!   statement): see [`repository::audited`]. Operators list it through
//!   `lab.order.v1.OpsService/ListAuditEvents` ([`service::ops`]).
//!
//! Modules: [`config`] (flags and environment), [`startup`] (the [`Application`] that binds and
//! serves), [`service`] (gRPC handlers of both services), [`repository`] (SQL, the audit trail
//! included), [`domain`] (validated inputs), [`error`] (the one error type and its mapping to
//! `tonic::Status`), [`reaper`] (expired keys),
//! [`group_commit`], [`sold_out`] and [`stock_listener`] (the hot row and the sold-out fast path),
//! [`metrics`] (what `/metrics` shows besides the per-RPC counters).
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod error;
pub mod group_commit;
pub mod metrics;
pub mod reaper;
pub mod repository;
pub mod service;
pub mod sold_out;
pub mod startup;
pub mod stock_listener;

pub use config::Config;
pub use startup::Application;
