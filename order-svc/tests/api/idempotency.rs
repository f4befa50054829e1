//! The CreateOrder idempotency rules of the public contract, one by one.

use std::time::Duration;

use lab_proto::order::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{DB_POLL, TestShop, WAIT, order_request, reason, shared};

#[tokio::test]
async fn same_key_same_request_replays_the_order() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(5).await;
    let customer = Uuid::now_v7();
    let mut client = shop.client.clone();
    let first = client
        .create_order(order_request(&product.product_id, 2, customer, "k-1"))
        .await
        .unwrap();
    assert!(first.metadata().get("idempotent-replayed").is_none());
    let second = client
        .create_order(order_request(&product.product_id, 2, customer, "k-1"))
        .await
        .unwrap();
    assert_eq!(
        second.metadata().get("idempotent-replayed").unwrap(),
        "true"
    );
    assert_eq!(first.into_inner().order, second.into_inner().order);
    assert_eq!(shop.product(&product.product_id).await.stock, 3);
    shop.stop().await;
}

#[tokio::test]
async fn same_key_different_request_is_refused_and_writes_nothing() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(5).await;
    let customer = Uuid::now_v7();
    let mut client = shop.client.clone();
    client
        .create_order(order_request(&product.product_id, 1, customer, "k-2"))
        .await
        .unwrap();
    let before = shop.table_counts().await;
    for changed in [
        order_request(&product.product_id, 2, customer, "k-2"),
        order_request(&product.product_id, 1, Uuid::now_v7(), "k-2"),
    ] {
        let status = client.create_order(changed).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    }
    assert_eq!(shop.table_counts().await, before);
    assert_eq!(shop.product(&product.product_id).await.stock, 4);
    shop.stop().await;
}

#[tokio::test]
async fn out_of_stock_does_not_consume_the_key() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(1).await;
    let customer = Uuid::now_v7();
    let mut client = shop.client.clone();
    let before = shop.table_counts().await;
    let status = client
        .create_order(order_request(&product.product_id, 3, customer, "k-3"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "OUT_OF_STOCK");
    assert_eq!(
        shop.table_counts().await,
        before,
        "a refusal writes nothing"
    );

    client
        .restock(pb::RestockRequest {
            product_id: product.product_id.clone(),
            quantity: 5,
        })
        .await
        .unwrap();
    let created = client
        .create_order(order_request(&product.product_id, 3, customer, "k-3"))
        .await
        .unwrap();
    assert!(created.metadata().get("idempotent-replayed").is_none());
    let product = shop.product(&product.product_id).await;
    assert_eq!((product.stock, product.restocked), (3, 5));
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}

#[tokio::test]
async fn unknown_product_does_not_consume_the_key() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let mut client = shop.client.clone();
    let status = client
        .create_order(order_request(
            &Uuid::now_v7().to_string(),
            1,
            Uuid::now_v7(),
            "k-4",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "PRODUCT_NOT_FOUND");
    assert_eq!(shop.table_counts().await, (0, 0, 0));
    shop.stop().await;
}

#[tokio::test]
async fn keys_are_scoped_to_the_client_id_and_lookup_finds_them() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(5).await;
    let customer = Uuid::now_v7();
    let mut client = shop.client.clone();
    let as_client = |client_id: &str| {
        let mut request = order_request(&product.product_id, 1, customer, "shared-key");
        request
            .metadata_mut()
            .insert("client-id", client_id.parse().unwrap());
        request
    };
    let a = client
        .create_order(as_client("alpha"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let b = client
        .create_order(as_client("beta"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_ne!(a.order_id, b.order_id, "two principals, two orders");
    assert_eq!(
        (a.client_id.as_str(), b.client_id.as_str()),
        ("alpha", "beta")
    );

    let mut lookup = tonic::Request::new(pb::LookupOrderRequest {
        idempotency_key: "shared-key".into(),
    });
    lookup
        .metadata_mut()
        .insert("client-id", "beta".parse().unwrap());
    let found = client
        .lookup_order(lookup)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(found.order_id, b.order_id);

    let status = client
        .lookup_order(pb::LookupOrderRequest {
            idempotency_key: "shared-key".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "anonymous holds no such key");
    shop.stop().await;
}

#[tokio::test]
async fn the_reaper_frees_expired_keys() {
    let _machine = shared().await;
    let shop = TestShop::spawn_with(|config| {
        config.idempotency_retention = Duration::from_millis(200);
        config.reaper_interval = Duration::from_millis(100);
    })
    .await;
    let product = shop.create_product(5).await;
    let mut client = shop.client.clone();
    client
        .create_order(order_request(
            &product.product_id,
            1,
            Uuid::now_v7(),
            "short-lived",
        ))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, orders, keys) = shop.table_counts().await;
        if keys == 0 {
            assert_eq!(orders, 1, "orders outlive their keys");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "key never reaped");
        tokio::time::sleep(DB_POLL).await;
    }
    shop.stop().await;
}
