//! Many buyers at once, on real connections, released together by a barrier.

use std::sync::Arc;

use lab_proto::order::v1 as pb;
use tokio::sync::Barrier;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestShop, order_request, reason, shared};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_buyers_never_oversell_fifty_units() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(50).await;
    let barrier = Arc::new(Barrier::new(200));
    let mut tasks = Vec::new();
    for buyer in 0..200 {
        let barrier = barrier.clone();
        let mut client = shop.new_client().await;
        let product_id = product.product_id.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client
                .create_order(order_request(
                    &product_id,
                    1,
                    Uuid::now_v7(),
                    &format!("buyer-{buyer}"),
                ))
                .await
        }));
    }
    let (mut created, mut out_of_stock) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(reason(&status), "OUT_OF_STOCK");
                out_of_stock += 1;
            }
        }
    }
    assert_eq!((created, out_of_stock), (50, 150));
    assert_eq!(shop.product(&product.product_id).await.stock, 0);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&shop.pool)
        .await
        .unwrap();
    assert_eq!(orders, 50);
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_calls_with_one_key_make_one_order() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(1_000).await;
    let customer = Uuid::now_v7();
    let barrier = Arc::new(Barrier::new(100));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let barrier = barrier.clone();
        let mut client = shop.new_client().await;
        let product_id = product.product_id.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client
                .create_order(order_request(&product_id, 2, customer, "one-key"))
                .await
        }));
    }
    let mut order_ids = std::collections::HashSet::new();
    let mut replayed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(response) => {
                if response.metadata().get("idempotent-replayed").is_some() {
                    replayed += 1;
                }
                order_ids.insert(response.into_inner().order.unwrap().order_id);
            }
            // The contract allows ABORTED (retryable) for a racing duplicate, never a 2nd order.
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert_eq!(order_ids.len(), 1, "every OK response names the same order");
    assert!(replayed >= 1, "duplicates are replays");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&shop.pool)
        .await
        .unwrap();
    assert_eq!(orders, 1);
    assert_eq!(shop.product(&product.product_id).await.stock, 998);
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_cancels_return_the_stock_once() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(10).await;
    let order = shop
        .client
        .clone()
        .create_order(order_request(
            &product.product_id,
            3,
            Uuid::now_v7(),
            "to-cancel",
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(shop.product(&product.product_id).await.stock, 7);

    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let barrier = barrier.clone();
        let mut client = shop.new_client().await;
        let order_id = order.order_id.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client
                .cancel_order(pb::CancelOrderRequest {
                    order_id,
                    reason: "changed my mind".into(),
                })
                .await
        }));
    }
    for task in tasks {
        let cancelled = task
            .await
            .unwrap()
            .expect("cancel is idempotent")
            .into_inner();
        assert_eq!(
            cancelled.order.unwrap().status,
            pb::OrderStatus::Cancelled as i32
        );
    }
    assert_eq!(shop.product(&product.product_id).await.stock, 10);
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}
