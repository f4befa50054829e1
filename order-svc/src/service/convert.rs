//! Rows to protobuf messages.

use lab_common::time::{to_proto, to_proto_opt};
use lab_proto::order::v1 as pb;

use crate::domain::{Order, Product, ProductLedger};

impl From<Product> for pb::Product {
    fn from(product: Product) -> Self {
        Self {
            product_id: product.product_id.to_string(),
            name: product.name,
            stock: product.stock,
            initial_stock: product.initial_stock,
            restocked: product.restocked,
            created_at: Some(to_proto(product.created_at)),
            updated_at: Some(to_proto(product.updated_at)),
            max_per_customer: product.max_per_customer,
        }
    }
}

impl From<Order> for pb::Order {
    fn from(order: Order) -> Self {
        let status = match order.status.as_str() {
            "CREATED" => pb::OrderStatus::Created,
            "CANCELLED" => pb::OrderStatus::Cancelled,
            // The CHECK constraint admits only the two values above.
            _ => pb::OrderStatus::Unspecified,
        };
        Self {
            order_id: order.order_id.to_string(),
            product_id: order.product_id.to_string(),
            quantity: order.quantity,
            customer_id: order.customer_id.to_string(),
            status: status.into(),
            idempotency_key: order.idempotency_key,
            created_at: Some(to_proto(order.created_at)),
            updated_at: Some(to_proto(order.updated_at)),
            cancelled_at: to_proto_opt(order.cancelled_at),
            cancel_reason: order.cancel_reason,
            client_id: order.client_id,
        }
    }
}

impl From<ProductLedger> for pb::ProductLedger {
    fn from(ledger: ProductLedger) -> Self {
        Self {
            product_id: ledger.product_id.to_string(),
            stock: ledger.stock,
            initial_stock: ledger.initial_stock,
            restocked: ledger.restocked,
            created_quantity: ledger.created_quantity,
            created_orders: ledger.created_orders,
            as_of: Some(to_proto(ledger.as_of)),
        }
    }
}
