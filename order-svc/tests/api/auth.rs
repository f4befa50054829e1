//! Authentication and the roles table on a real order-svc: every RPC refuses every bad
//! credential with its code and writes nothing; the idempotency scope is the token's subject,
//! whatever `client-id` says; keys rotate without a restart; protected mode.

use std::net::SocketAddr;
use std::time::Duration;

use lab_proto::order::v1 as pb;
use lab_proto::order::v1::ops_service_client::OpsServiceClient;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request};
use uuid::Uuid;

use crate::auth_support::{AUDIENCE, Credentials as Keys, with_auth};
use crate::helpers::{TestShop, WAIT, client_channel, config, order_request, reason, shared};

/// A shop that trusts `keys`.
pub(crate) async fn secured_shop(keys: &Keys) -> TestShop {
    let jwks = keys.0.jwks();
    TestShop::spawn_with(move |config| {
        config.auth.auth_keys = Some(jwks);
        config.auth.auth_audience = Some(AUDIENCE.into());
    })
    .await
}

/// A product of 10, created by `admin`.
async fn admin_product(client: &mut OrderServiceClient<Channel>, admin: &str) -> pb::Product {
    client
        .create_product(with_auth(
            Request::new(pb::CreateProductRequest {
                name: "hot".into(),
                initial_stock: 10,
                max_per_customer: 0,
            }),
            Some(admin),
        ))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap()
}

/// What the shop holds: products, total stock, orders, cancelled orders, idempotency keys,
/// audit events.
async fn snapshot(shop: &TestShop) -> (i64, i64, i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM products), (SELECT coalesce(sum(stock), 0)::bigint FROM products),
                (SELECT count(*) FROM orders),
                (SELECT count(*) FROM orders WHERE status = 'CANCELLED'),
                (SELECT count(*) FROM idempotency_keys),
                (SELECT count(*) FROM audit_events)",
    )
    .fetch_one(&shop.pool)
    .await
    .unwrap()
}

/// Calls `rpc` with a body that would write (or read) something real, under `header`.
async fn call(
    client: &mut OrderServiceClient<Channel>,
    ops: &mut OpsServiceClient<Channel>,
    rpc: &str,
    header: Option<&str>,
    product_id: &str,
    order_id: &str,
) -> Result<(), tonic::Status> {
    let product = || product_id.to_owned();
    let order = || order_id.to_owned();
    macro_rules! send {
        ($method:ident, $request:expr) => {
            client.$method(with_auth($request, header)).await.map(drop)
        };
    }
    match rpc {
        "CreateProduct" => send!(
            create_product,
            Request::new(pb::CreateProductRequest {
                name: "x".into(),
                initial_stock: 1,
                max_per_customer: 0,
            })
        ),
        "GetProduct" => send!(
            get_product,
            Request::new(pb::GetProductRequest {
                product_id: product()
            })
        ),
        "ListProducts" => send!(
            list_products,
            Request::new(pb::ListProductsRequest::default())
        ),
        "Restock" => send!(
            restock,
            Request::new(pb::RestockRequest {
                product_id: product(),
                quantity: 1
            })
        ),
        "CreateOrder" => send!(
            create_order,
            order_request(product_id, 1, Uuid::now_v7(), "k-matrix")
        ),
        "GetOrder" => send!(
            get_order,
            Request::new(pb::GetOrderRequest { order_id: order() })
        ),
        "LookupOrder" => send!(
            lookup_order,
            Request::new(pb::LookupOrderRequest {
                idempotency_key: "k-a".into()
            })
        ),
        "ListOrders" => send!(list_orders, Request::new(pb::ListOrdersRequest::default())),
        "CancelOrder" => send!(
            cancel_order,
            Request::new(pb::CancelOrderRequest {
                order_id: order(),
                reason: "x".into()
            })
        ),
        "GetProductLedger" => send!(
            get_product_ledger,
            Request::new(pb::GetProductLedgerRequest {
                product_id: product()
            })
        ),
        "ListAuditEvents" => ops
            .list_audit_events(with_auth(
                Request::new(pb::ListAuditEventsRequest::default()),
                header,
            ))
            .await
            .map(drop),
        other => panic!("no such RPC {other}"),
    }
}

const RPCS: [&str; 11] = [
    "CreateProduct",
    "GetProduct",
    "ListProducts",
    "Restock",
    "CreateOrder",
    "GetOrder",
    "LookupOrder",
    "ListOrders",
    "CancelOrder",
    "GetProductLedger",
    "ListAuditEvents",
];

#[tokio::test]
async fn every_rpc_refuses_every_bad_credential_and_writes_nothing() {
    let _machine = shared().await;
    let keys = Keys::new();
    let shop = secured_shop(&keys).await;
    let admin = keys.bearer("admin", &["shop-admin"]);
    let mut client = shop.client.clone();
    let product = admin_product(&mut client, &admin).await;
    let order = client
        .create_order(with_auth(
            order_request(&product.product_id, 1, Uuid::now_v7(), "k-a"),
            Some(&keys.bearer("client-a", &["shop-client"])),
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let before = snapshot(&shop).await;

    let mut ops = OpsServiceClient::new(client_channel(&shop).await);
    let cases = keys.bad(&["shop-admin", "shop-client", "operator"], &["approver"]);
    for rpc in RPCS {
        for bad in &cases {
            let header = bad.header.as_deref();
            let outcome = call(
                &mut client,
                &mut ops,
                rpc,
                header,
                &product.product_id,
                &order.order_id,
            )
            .await;
            bad.assert_refused(rpc, outcome);
        }
    }
    assert_eq!(
        snapshot(&shop).await,
        before,
        "a refused call wrote something"
    );
    // Health and reflection stay open.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(client_channel(&shop).await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers without a token");
}

#[tokio::test]
async fn the_idempotency_scope_is_the_token_subject_not_the_client_id_header() {
    let _machine = shared().await;
    let keys = Keys::new();
    let shop = secured_shop(&keys).await;
    let (a, b) = (
        keys.bearer("client-a", &["shop-client"]),
        keys.bearer("client-b", &["shop-client"]),
    );
    let admin = keys.bearer("admin", &["shop-admin"]);
    let mut client = shop.client.clone();
    let product = admin_product(&mut client, &admin).await;
    let customer = Uuid::now_v7();
    let spoofing = |token: &str, as_client: &str| {
        let mut request = with_auth(
            order_request(&product.product_id, 1, customer, "k-1"),
            Some(token),
        );
        request
            .metadata_mut()
            .insert("client-id", as_client.parse().unwrap());
        request
    };
    let a_order = client
        .create_order(spoofing(&a, "client-b"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(a_order.client_id, "client-a", "the header named client-b");
    // b sends a's key claiming to be a: a new order of b's own, never a's replayed.
    let b_answer = client.create_order(spoofing(&b, "client-a")).await.unwrap();
    assert!(b_answer.metadata().get("idempotent-replayed").is_none());
    let b_order = b_answer.into_inner().order.unwrap();
    assert_ne!(b_order.order_id, a_order.order_id);
    assert_eq!(b_order.client_id, "client-b");
    // Looking the key up as "client-a" finds b's own order.
    let mut lookup = with_auth(
        Request::new(pb::LookupOrderRequest {
            idempotency_key: "k-1".into(),
        }),
        Some(&b),
    );
    lookup
        .metadata_mut()
        .insert("client-id", "client-a".parse().unwrap());
    let found = client
        .lookup_order(lookup)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(found.order_id, b_order.order_id);
    // a's order is none of b's business: not found, not cancellable, not listed.
    let get = client
        .get_order(with_auth(
            Request::new(pb::GetOrderRequest {
                order_id: a_order.order_id.clone(),
            }),
            Some(&b),
        ))
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::NotFound);
    let cancel = client
        .cancel_order(with_auth(
            Request::new(pb::CancelOrderRequest {
                order_id: a_order.order_id.clone(),
                reason: "mine now".into(),
            }),
            Some(&b),
        ))
        .await
        .unwrap_err();
    assert_eq!(cancel.code(), Code::NotFound);
    let listed = client
        .list_orders(with_auth(
            Request::new(pb::ListOrdersRequest::default()),
            Some(&b),
        ))
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(
        listed
            .iter()
            .map(|o| o.order_id.as_str())
            .collect::<Vec<_>>(),
        [b_order.order_id.as_str()]
    );
    let other = client
        .list_orders(with_auth(
            Request::new(pb::ListOrdersRequest {
                client_id: "client-a".into(),
                ..Default::default()
            }),
            Some(&b),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (other.code(), reason(&other).as_str()),
        (Code::PermissionDenied, "NOT_OWNER")
    );
    // The admin sees both, and a's order is untouched.
    let all = client
        .list_orders(with_auth(
            Request::new(pb::ListOrdersRequest::default()),
            Some(&admin),
        ))
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(all.len(), 2);
    assert!(
        all.iter()
            .all(|order| order.status == pb::OrderStatus::Created as i32)
    );
}

#[tokio::test]
async fn a_new_key_file_is_used_without_a_restart() {
    let _machine = shared().await;
    let (old, new) = (Keys::new(), Keys::new());
    let shop = secured_shop(&old).await;
    let mut client = shop.client.clone();
    let list = |header: String| {
        with_auth(
            Request::new(pb::ListProductsRequest::default()),
            Some(&header),
        )
    };
    client
        .list_products(list(old.bearer("u", &["user"])))
        .await
        .expect("old key works");
    std::fs::copy(new.0.jwks(), old.0.jwks()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while client
        .list_products(list(new.bearer("u", &["user"])))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new key was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = client
        .list_products(list(old.bearer("u", &["user"])))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::Unauthenticated, "TOKEN_UNKNOWN_KEY")
    );
}

#[tokio::test]
async fn protected_mode_refuses_a_public_address_without_keys() {
    let _machine = shared().await;
    let url = lab_common::postgres::scratch_database().await.unwrap();
    let mut open = config(url);
    open.listen = SocketAddr::from(([0, 0, 0, 0], 0));
    let refusal = order_svc::Application::build(open.clone())
        .await
        .expect_err("refused");
    let message = refusal.to_string();
    assert!(
        message.contains("--auth-keys") && message.contains("--allow-unauthenticated"),
        "{message}"
    );
    open.auth.allow_unauthenticated = true;
    let served = order_svc::Application::build(open)
        .await
        .expect("allowed when told");
    assert!(served.local_addr().ip().is_unspecified());
}
