//! SQL access. Each function is one short transaction (or one statement) so row locks on a hot
//! product are held for as little time as possible. State changes write their audit event in
//! their transaction ([`audited`]).

pub mod audited;
mod idempotency;
mod orders;
mod products;

pub use idempotency::reap_expired_keys;
pub use orders::{
    CreateOutcome, PlaceRequest, PlacedBatch, cancel_order, get_order, list_orders, lookup_order,
    place_orders,
};
pub use products::{
    STOCK_CHANNEL, create_product, get_product, get_product_ledger, list_products, restock,
};
