//! Fault injection through configuration: off unless configured, and "drop the response after
//! the work committed" really commits, so the client's retry with the same key replays.

use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestShop, order_request, shared};

#[tokio::test]
async fn a_dropped_response_still_committed_and_the_retry_replays_it() {
    let _machine = shared().await;
    let shop = TestShop::spawn_with(|config| {
        config.faults = Some("CreateOrder:drop_response".parse().unwrap());
    })
    .await;
    let product = shop.create_product(5).await;
    let customer = Uuid::now_v7();
    let mut client = shop.client.clone();
    let lost = client
        .create_order(order_request(
            &product.product_id,
            2,
            customer,
            "lost-reply",
        ))
        .await
        .unwrap_err();
    assert_eq!(lost.code(), Code::Unavailable);
    assert_eq!(
        shop.product(&product.product_id).await.stock,
        3,
        "the work committed"
    );

    shop.faults.clear();
    let replayed = client
        .create_order(order_request(
            &product.product_id,
            2,
            customer,
            "lost-reply",
        ))
        .await
        .unwrap();
    assert_eq!(
        replayed.metadata().get("idempotent-replayed").unwrap(),
        "true"
    );
    assert_eq!(shop.product(&product.product_id).await.stock, 3);
    assert_eq!(shop.table_counts().await.1, 1, "one order");
    shop.stop().await;
}

#[tokio::test]
async fn no_faults_unless_configured_whatever_the_request_says() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(5).await;
    let mut request = order_request(&product.product_id, 1, Uuid::now_v7(), "plain");
    request
        .metadata_mut()
        .insert("faults", "CreateOrder:drop_response".parse().unwrap());
    shop.client.clone().create_order(request).await.unwrap();
    assert_eq!(shop.faults.injected(), 0);
    shop.stop().await;
}
