//! Requests to validated inputs. Every check of one request is collected before failing, so a
//! client learns all its mistakes from one INVALID_ARGUMENT.

use lab_common::audit::AuditQuery;
use lab_common::metadata;
use lab_common::paging::PageRequest;
use lab_common::validate::Violations;
use lab_proto::order::v1 as pb;
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::domain::{
    IdempotencyScope, Limits, MAX_NAME_CHARS, MAX_REASON_CHARS, NewOrder, NewProduct, OrderFilter,
    OrderStatus,
};
use crate::error::OrderError;

/// CreateProduct: the name, initial stock and per-customer limit (0 = unlimited).
pub(super) fn new_product(
    request: &pb::CreateProductRequest,
    limits: Limits,
) -> Result<NewProduct, OrderError> {
    let mut violations = Violations::default();
    let name = violations.text("name", &request.name, 1, MAX_NAME_CHARS);
    violations.range(
        "initial_stock",
        request.initial_stock,
        0,
        i64::from(limits.max_quantity),
    );
    violations.range("max_per_customer", request.max_per_customer, 0, i32::MAX);
    finish(
        violations,
        NewProduct {
            name,
            initial_stock: request.initial_stock,
            max_per_customer: request.max_per_customer,
        },
    )
}

/// True for a first attempt: `grpc-previous-rpc-attempts` absent or 0. Anything else (a retry,
/// or a value that does not parse) may be the re-send of a request whose order exists, which
/// only the database can answer.
pub(super) fn is_first_attempt(metadata: &MetadataMap) -> bool {
    match metadata.get(metadata::GRPC_PREVIOUS_RPC_ATTEMPTS) {
        None => true,
        Some(value) => {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
                == Some(0)
        }
    }
}

/// A request naming one product.
pub(super) fn product_id(value: &str) -> Result<Uuid, OrderError> {
    let mut violations = Violations::default();
    let id = violations.uuid("product_id", value);
    finish_with(violations, id)
}

/// A request naming one order.
pub(super) fn order_id(value: &str) -> Result<Uuid, OrderError> {
    let mut violations = Violations::default();
    let id = violations.uuid("order_id", value);
    finish_with(violations, id)
}

/// Restock: the product and a positive quantity.
pub(super) fn restock(
    request: &pb::RestockRequest,
    limits: Limits,
) -> Result<(Uuid, i64), OrderError> {
    let mut violations = Violations::default();
    let id = violations.uuid("product_id", &request.product_id);
    limits.check_quantity(&mut violations, "quantity", request.quantity);
    finish_with(violations, id.map(|id| (id, request.quantity)))
}

/// CreateOrder: the order plus its idempotency scope from metadata.
pub(super) fn create_order(
    metadata: &MetadataMap,
    request: &pb::CreateOrderRequest,
    limits: Limits,
) -> Result<(IdempotencyScope, NewOrder), OrderError> {
    let mut violations = Violations::default();
    let key = metadata::idempotency_key(metadata, &mut violations);
    let client_id = metadata::client_id(metadata, &mut violations);
    let product_id = violations.uuid("product_id", &request.product_id);
    limits.check_quantity(&mut violations, "quantity", i64::from(request.quantity));
    let customer_id = violations.uuid("customer_id", &request.customer_id);
    let parsed = match (key, product_id, customer_id) {
        (Some(key), Some(product_id), Some(customer_id)) => Some((
            IdempotencyScope { client_id, key },
            NewOrder {
                product_id,
                quantity: request.quantity,
                customer_id,
            },
        )),
        _ => None,
    };
    finish_with(violations, parsed)
}

/// LookupOrder: the key from the request body, scoped to the caller's `client-id`.
pub(super) fn lookup(
    metadata: &MetadataMap,
    request: &pb::LookupOrderRequest,
) -> Result<IdempotencyScope, OrderError> {
    let mut violations = Violations::default();
    let client_id = metadata::client_id(metadata, &mut violations);
    if !metadata::is_valid_key(&request.idempotency_key) {
        violations.add(
            "idempotency_key",
            "must be 1-255 printable ASCII characters",
        );
    }
    finish(
        violations,
        IdempotencyScope {
            client_id,
            key: request.idempotency_key.clone(),
        },
    )
}

/// ListOrders: filters and the page.
pub(super) fn list_orders(
    request: &pb::ListOrdersRequest,
) -> Result<(OrderFilter, PageRequest), OrderError> {
    let mut violations = Violations::default();
    let product_id = violations.optional_uuid("product_id", &request.product_id);
    let customer_id = violations.optional_uuid("customer_id", &request.customer_id);
    let status = match pb::OrderStatus::try_from(request.status) {
        Ok(pb::OrderStatus::Unspecified) => None,
        Ok(pb::OrderStatus::Created) => Some(OrderStatus::Created),
        Ok(pb::OrderStatus::Cancelled) => Some(OrderStatus::Cancelled),
        Err(_) => {
            violations.known_enum("status", false);
            None
        }
    };
    let client_id = if request.client_id.is_empty() {
        None
    } else {
        if !metadata::is_valid_key(&request.client_id) {
            violations.add("client_id", "must be 1-255 printable ASCII characters");
        }
        Some(request.client_id.clone())
    };
    let created_after = request.created_after.and_then(|at| {
        let parsed = u32::try_from(at.nanos)
            .ok()
            .and_then(|nanos| chrono::DateTime::from_timestamp(at.seconds, nanos));
        if parsed.is_none() {
            violations.add("created_after", "is not a valid timestamp");
        }
        parsed
    });
    let page = PageRequest::parse(request.page_size, &request.page_token, &mut violations);
    let filter = OrderFilter {
        client_id,
        created_after,
        product_id,
        customer_id,
        status,
    };
    finish(violations, (filter, page))
}

/// ListProducts: the page.
pub(super) fn list_products(request: &pb::ListProductsRequest) -> Result<PageRequest, OrderError> {
    let mut violations = Violations::default();
    let page = PageRequest::parse(request.page_size, &request.page_token, &mut violations);
    finish(violations, page)
}

/// ListAuditEvents: the filters and the page.
pub(super) fn audit_query(request: &pb::ListAuditEventsRequest) -> Result<AuditQuery, OrderError> {
    let mut violations = Violations::default();
    let query = AuditQuery::parse(
        request.page_size,
        &request.page_token,
        &request.actor,
        &request.target_id,
        &mut violations,
    );
    finish(violations, query)
}

/// CancelOrder: the order and a bounded reason.
pub(super) fn cancel(request: &pb::CancelOrderRequest) -> Result<(Uuid, String), OrderError> {
    let mut violations = Violations::default();
    let id = violations.uuid("order_id", &request.order_id);
    let reason = violations.text("reason", &request.reason, 0, MAX_REASON_CHARS);
    finish_with(violations, id.map(|id| (id, reason)))
}

fn finish<T>(violations: Violations, value: T) -> Result<T, OrderError> {
    if violations.is_empty() {
        Ok(value)
    } else {
        Err(OrderError::Invalid(violations))
    }
}

fn finish_with<T>(violations: Violations, value: Option<T>) -> Result<T, OrderError> {
    match (violations.is_empty(), value) {
        (true, Some(value)) => Ok(value),
        // A parse that produced nothing always recorded why.
        _ => Err(OrderError::Invalid(violations)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_or_zero_attempt_count_is_a_first_attempt() {
        let with = |value: &'static str| {
            let mut metadata = MetadataMap::new();
            metadata.insert(metadata::GRPC_PREVIOUS_RPC_ATTEMPTS, value.parse().unwrap());
            is_first_attempt(&metadata)
        };
        assert!(is_first_attempt(&MetadataMap::new()));
        assert!(with("0"));
        assert!(!with("1"));
        assert!(!with("7"));
        assert!(!with("not a number"));
        assert!(!with("-1"));
    }
}
