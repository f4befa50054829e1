//! Bad input, per RPC: the documented code with BadRequest details, and nothing written.

use futures::future::BoxFuture;
use lab_proto::order::v1 as pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::{TestShop, order_request, shared};

type Call = Box<dyn FnOnce(OrderServiceClient<Channel>) -> BoxFuture<'static, Result<(), Status>>>;

/// One bad request: what it is, the code and the BadRequest field it must name.
struct Case {
    name: &'static str,
    code: Code,
    field: Option<&'static str>,
    call: Call,
}

fn case<F>(name: &'static str, code: Code, field: Option<&'static str>, call: F) -> Case
where
    F: FnOnce(OrderServiceClient<Channel>) -> BoxFuture<'static, Result<(), Status>> + 'static,
{
    Case {
        name,
        code,
        field,
        call: Box::new(call),
    }
}

fn cases(product_id: String, order_id: String) -> Vec<Case> {
    let p = product_id.clone();
    let p2 = product_id.clone();
    let p3 = product_id.clone();
    let p4 = product_id.clone();
    let p5 = product_id.clone();
    let p6 = product_id.clone();
    let p7 = product_id.clone();
    let o = order_id.clone();
    let missing = Uuid::now_v7().to_string();
    let missing2 = missing.clone();
    let missing3 = missing.clone();
    vec![
        case(
            "CreateProduct empty name",
            Code::InvalidArgument,
            Some("name"),
            |mut c| {
                Box::pin(async move {
                    c.create_product(pb::CreateProductRequest {
                        name: "  ".into(),
                        initial_stock: 1,
                        max_per_customer: 0,
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "CreateProduct oversized name",
            Code::InvalidArgument,
            Some("name"),
            |mut c| {
                Box::pin(async move {
                    c.create_product(pb::CreateProductRequest {
                        name: "x".repeat(201),
                        initial_stock: 1,
                        max_per_customer: 0,
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "CreateProduct negative stock",
            Code::InvalidArgument,
            Some("initial_stock"),
            |mut c| {
                Box::pin(async move {
                    c.create_product(pb::CreateProductRequest {
                        name: "lamp".into(),
                        initial_stock: -1,
                        max_per_customer: 0,
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "GetProduct malformed id",
            Code::InvalidArgument,
            Some("product_id"),
            |mut c| {
                Box::pin(async move {
                    c.get_product(pb::GetProductRequest {
                        product_id: "42".into(),
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "GetProduct empty id",
            Code::InvalidArgument,
            Some("product_id"),
            |mut c| {
                Box::pin(async move {
                    c.get_product(pb::GetProductRequest {
                        product_id: String::new(),
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "GetProduct unknown id",
            Code::NotFound,
            None,
            move |mut c| {
                Box::pin(async move {
                    c.get_product(pb::GetProductRequest {
                        product_id: missing,
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "ListProducts page too large",
            Code::InvalidArgument,
            Some("page_size"),
            |mut c| {
                Box::pin(async move {
                    c.list_products(pb::ListProductsRequest {
                        page_size: 501,
                        page_token: String::new(),
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "Restock zero",
            Code::InvalidArgument,
            Some("quantity"),
            move |mut c| {
                Box::pin(async move {
                    c.restock(pb::RestockRequest {
                        product_id: p,
                        quantity: 0,
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "Restock above maximum",
            Code::InvalidArgument,
            Some("quantity"),
            move |mut c| {
                Box::pin(async move {
                    c.restock(pb::RestockRequest {
                        product_id: p2,
                        quantity: 1_000_001,
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "Restock unknown product",
            Code::NotFound,
            None,
            move |mut c| {
                Box::pin(async move {
                    c.restock(pb::RestockRequest {
                        product_id: missing2,
                        quantity: 1,
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "CreateOrder without key",
            Code::InvalidArgument,
            Some("idempotency-key"),
            move |mut c| {
                Box::pin(async move {
                    c.create_order(pb::CreateOrderRequest {
                        product_id: p3,
                        quantity: 1,
                        customer_id: Uuid::now_v7().to_string(),
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "CreateOrder oversized key",
            Code::InvalidArgument,
            Some("idempotency-key"),
            move |mut c| {
                Box::pin(async move {
                    c.create_order(order_request(&p4, 1, Uuid::now_v7(), &"k".repeat(256)))
                        .await
                        .map(drop)
                })
            },
        ),
        case(
            "CreateOrder zero quantity",
            Code::InvalidArgument,
            Some("quantity"),
            move |mut c| {
                Box::pin(async move {
                    c.create_order(order_request(&p5, 0, Uuid::now_v7(), "bad-1"))
                        .await
                        .map(drop)
                })
            },
        ),
        case(
            "CreateOrder negative quantity",
            Code::InvalidArgument,
            Some("quantity"),
            move |mut c| {
                Box::pin(async move {
                    c.create_order(order_request(&p6, -3, Uuid::now_v7(), "bad-2"))
                        .await
                        .map(drop)
                })
            },
        ),
        case(
            "CreateOrder malformed customer",
            Code::InvalidArgument,
            Some("customer_id"),
            move |mut c| {
                Box::pin(async move {
                    let mut request = order_request(&p7, 1, Uuid::now_v7(), "bad-3");
                    request.get_mut().customer_id = "bob".into();
                    c.create_order(request).await.map(drop)
                })
            },
        ),
        case(
            "CreateOrder malformed product",
            Code::InvalidArgument,
            Some("product_id"),
            |mut c| {
                Box::pin(async move {
                    let mut request = order_request("", 1, Uuid::now_v7(), "bad-4");
                    request.get_mut().product_id = "not-a-uuid".into();
                    c.create_order(request).await.map(drop)
                })
            },
        ),
        case(
            "GetOrder malformed id",
            Code::InvalidArgument,
            Some("order_id"),
            |mut c| {
                Box::pin(async move {
                    c.get_order(pb::GetOrderRequest {
                        order_id: "zzz".into(),
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case("GetOrder unknown id", Code::NotFound, None, move |mut c| {
            Box::pin(async move {
                c.get_order(pb::GetOrderRequest { order_id: missing3 })
                    .await
                    .map(drop)
            })
        }),
        case(
            "LookupOrder empty key",
            Code::InvalidArgument,
            Some("idempotency_key"),
            |mut c| {
                Box::pin(async move {
                    c.lookup_order(pb::LookupOrderRequest {
                        idempotency_key: String::new(),
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "ListOrders bad filter",
            Code::InvalidArgument,
            Some("product_id"),
            |mut c| {
                Box::pin(async move {
                    c.list_orders(pb::ListOrdersRequest {
                        product_id: "nope".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "ListOrders unknown status",
            Code::InvalidArgument,
            Some("status"),
            |mut c| {
                Box::pin(async move {
                    c.list_orders(pb::ListOrdersRequest {
                        status: 42,
                        ..Default::default()
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "ListOrders forged token",
            Code::InvalidArgument,
            Some("page_token"),
            |mut c| {
                Box::pin(async move {
                    c.list_orders(pb::ListOrdersRequest {
                        page_token: "forged".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "CancelOrder malformed id",
            Code::InvalidArgument,
            Some("order_id"),
            |mut c| {
                Box::pin(async move {
                    c.cancel_order(pb::CancelOrderRequest {
                        order_id: "1".into(),
                        reason: String::new(),
                    })
                    .await
                    .map(drop)
                })
            },
        ),
        case(
            "CancelOrder oversized reason",
            Code::InvalidArgument,
            Some("reason"),
            move |mut c| {
                Box::pin(async move {
                    c.cancel_order(pb::CancelOrderRequest {
                        order_id: o,
                        reason: "r".repeat(501),
                    })
                    .await
                    .map(drop)
                })
            },
        ),
    ]
}

#[tokio::test]
async fn every_bad_request_gets_its_code_and_writes_nothing() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(3).await;
    let order = shop
        .client
        .clone()
        .create_order(order_request(
            &product.product_id,
            1,
            Uuid::now_v7(),
            "good",
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let before = shop.table_counts().await;
    let product_before = shop.product(&product.product_id).await;

    for case in cases(product.product_id.clone(), order.order_id.clone()) {
        let status = (case.call)(shop.client.clone()).await.expect_err(case.name);
        assert_eq!(status.code(), case.code, "{}: {status:?}", case.name);
        let info = status
            .get_details_error_info()
            .unwrap_or_else(|| panic!("{}: ErrorInfo missing", case.name));
        assert_eq!(info.domain, "lab", "{}", case.name);
        if let Some(field) = case.field {
            let bad_request = status
                .get_details_bad_request()
                .unwrap_or_else(|| panic!("{}: BadRequest missing", case.name));
            assert!(
                bad_request
                    .field_violations
                    .iter()
                    .any(|v| v.field == field),
                "{}: no violation for {field}: {bad_request:?}",
                case.name
            );
        }
        assert!(
            !status.message().to_lowercase().contains("sql"),
            "{}: database detail leaked: {}",
            case.name,
            status.message()
        );
    }
    assert_eq!(
        shop.table_counts().await,
        before,
        "bad input wrote something"
    );
    assert_eq!(shop.product(&product.product_id).await, product_before);
    shop.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let _machine = shared().await;
    let shop = TestShop::spawn_with(|config| config.max_message_bytes = 1024).await;
    let status = shop
        .client
        .clone()
        .create_product(pb::CreateProductRequest {
            name: "x".repeat(4096),
            initial_stock: 1,
            max_per_customer: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(shop.table_counts().await, (0, 0, 0));
    shop.stop().await;
}
