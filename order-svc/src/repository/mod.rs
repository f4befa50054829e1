//! SQL access. Each function is one short transaction (or one statement) so row locks on a hot
//! product are held for as little time as possible.

mod idempotency;
mod orders;
mod products;

pub use idempotency::reap_expired_keys;
pub use orders::{CreateOutcome, cancel_order, create_order, get_order, list_orders, lookup_order};
pub use products::{create_product, get_product, get_product_ledger, list_products, restock};
