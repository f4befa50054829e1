//! Who may call what on order-svc (API.md "Security", the roles table), in one place.
//!
//! The role check runs in the [`AuthLayer`](lab_common::auth::AuthLayer) with [`policy`],
//! before any handler work: a refused call reads and writes nothing and consumes no key. What
//! needs the request body (whose orders) is [`own_orders_only`], asked by the handlers.

use lab_common::auth::{AuthError, Principal, principal};
use tonic::Request;

const OPERATOR: &str = "operator";
const SHOP_ADMIN: &str = "shop-admin";
const SHOP_CLIENT: &str = "shop-client";
const USER: &str = "user";

/// The roles admitting each RPC. Product reads are open to every role that shops; the ledger
/// (stock counters of a product) counts as a product read, since approval-svc's consistency
/// check, with its `shop-client` token, needs it. The audit trail (`OpsService`) is the
/// operator's alone.
pub fn policy(path: &str) -> &'static [&'static str] {
    if path.starts_with("/lab.order.v1.OpsService/") {
        return &[OPERATOR];
    }
    let method = path
        .strip_prefix("/lab.order.v1.OrderService/")
        .unwrap_or_default();
    match method {
        "CreateProduct" | "Restock" => &[SHOP_ADMIN],
        "GetProduct" | "ListProducts" => &[SHOP_ADMIN, SHOP_CLIENT, USER],
        "GetProductLedger" => &[SHOP_ADMIN, SHOP_CLIENT],
        "CreateOrder" => &[SHOP_CLIENT],
        "CancelOrder" | "GetOrder" | "LookupOrder" | "ListOrders" => &[SHOP_ADMIN, SHOP_CLIENT],
        _ => &[],
    }
}

/// The client whose orders alone the caller may see or cancel: its subject when it is a
/// `shop-client` without `shop-admin`; `None` (every order) for a `shop-admin`, and in open
/// mode.
pub fn own_orders_only<T>(request: &Request<T>) -> Option<&str> {
    principal(request)
        .filter(|caller| !caller.has_role(SHOP_ADMIN))
        .map(|caller: &Principal| caller.subject.as_str())
}

/// The refusal for asking about another client's orders by filter.
pub fn not_owner(client_id: &str) -> AuthError {
    AuthError::NotOwner(format!(
        "a shop-client lists only its own orders, not those of client_id {client_id:?}"
    ))
}
