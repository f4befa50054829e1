//! Idempotency past the key's retention (issue 9, item 1): once the claim in
//! `idempotency_keys` is reaped, the order that holds (client, key) still decides. A late retry
//! replays it, a different request under that key is refused, and no interleaving ever creates a
//! second order for the pair.

use std::sync::Arc;
use std::time::Duration;

use lab_proto::order::v1 as pb;
use tokio::sync::Barrier;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{DB_POLL, TestShop, WAIT, order_request, reason, shared};

/// Deletes the claim of `key`, exactly what the reaper does once it has expired.
async fn forget_key(shop: &TestShop, key: &str) {
    let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE idempotency_key = $1")
        .bind(key)
        .execute(&shop.pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(deleted, 1, "the claim of {key} existed");
}

async fn orders_holding(shop: &TestShop, key: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders WHERE idempotency_key = $1")
        .bind(key)
        .fetch_one(&shop.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_after_the_reaper_replays_the_order() {
    let _machine = shared().await;
    let shop = TestShop::spawn_with(|config| {
        config.idempotency_retention = Duration::from_millis(300);
        config.reaper_interval = Duration::from_millis(100);
    })
    .await;
    let product = shop.create_product(5).await;
    let customer = Uuid::now_v7();
    let mut client = shop.client.clone();
    let first = client
        .create_order(order_request(&product.product_id, 2, customer, "late"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    // The real reaper, not a simulation: wait for it to delete the expired claim.
    let deadline = tokio::time::Instant::now() + WAIT;
    while shop.table_counts().await.2 != 0 {
        assert!(tokio::time::Instant::now() < deadline, "key never reaped");
        tokio::time::sleep(DB_POLL).await;
    }

    let late = client
        .create_order(order_request(&product.product_id, 2, customer, "late"))
        .await
        .unwrap();
    assert_eq!(
        late.metadata()
            .get("idempotent-replayed")
            .map(|value| value.to_str().unwrap()),
        Some("true"),
        "a retry after retention is a replay"
    );
    assert_eq!(late.into_inner().order.unwrap(), first);
    assert_eq!(orders_holding(&shop, "late").await, 1, "a second order");
    assert_eq!(shop.product(&product.product_id).await.stock, 3);
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}

#[tokio::test]
async fn a_cancelled_order_still_holds_its_key_after_retention() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(5).await;
    let customer = Uuid::now_v7();
    let mut client = shop.client.clone();
    let order = client
        .create_order(order_request(&product.product_id, 1, customer, "cancelled"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    client
        .cancel_order(pb::CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    forget_key(&shop, "cancelled").await;

    let late = client
        .create_order(order_request(&product.product_id, 1, customer, "cancelled"))
        .await
        .unwrap();
    assert!(late.metadata().get("idempotent-replayed").is_some());
    let replayed = late.into_inner().order.unwrap();
    assert_eq!(replayed.order_id, order.order_id);
    assert_eq!(replayed.status, pb::OrderStatus::Cancelled as i32);
    assert_eq!(orders_holding(&shop, "cancelled").await, 1);
    assert_eq!(shop.product(&product.product_id).await.stock, 5);
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}

#[tokio::test]
async fn a_different_request_after_retention_is_refused_and_writes_nothing() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(5).await;
    let other_product = shop.create_product(5).await;
    let customer = Uuid::now_v7();
    let mut client = shop.client.clone();
    client
        .create_order(order_request(&product.product_id, 1, customer, "reused"))
        .await
        .unwrap();
    forget_key(&shop, "reused").await;

    let before = shop.table_counts().await;
    for changed in [
        order_request(&product.product_id, 2, customer, "reused"),
        order_request(&product.product_id, 1, Uuid::now_v7(), "reused"),
        order_request(&other_product.product_id, 1, customer, "reused"),
    ] {
        let status = client.create_order(changed).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    }
    assert_eq!(shop.table_counts().await, before, "nothing written");
    assert_eq!(shop.product(&product.product_id).await.stock, 4);
    assert_eq!(shop.product(&other_product.product_id).await.stock, 5);
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_late_retries_at_once_make_no_second_order() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(100).await;
    let customer = Uuid::now_v7();
    let first = shop
        .client
        .clone()
        .create_order(order_request(&product.product_id, 3, customer, "stampede"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    forget_key(&shop, "stampede").await;

    const CALLERS: usize = 32;
    let barrier = Arc::new(Barrier::new(CALLERS));
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let barrier = barrier.clone();
        let mut client = shop.new_client().await;
        let product_id = product.product_id.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client
                .create_order(order_request(&product_id, 3, customer, "stampede"))
                .await
        }));
    }
    let mut replayed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(response) => {
                assert!(
                    response.metadata().get("idempotent-replayed").is_some(),
                    "a late call must replay, not create"
                );
                assert_eq!(
                    response.into_inner().order.unwrap().order_id,
                    first.order_id
                );
                replayed += 1;
            }
            Err(status) => {
                // Contention on the key is retryable, never a failure that looks final.
                assert_eq!(status.code(), Code::Aborted, "{status:?}");
            }
        }
    }
    assert!(replayed > 0, "at least one late call replays");
    assert_eq!(
        orders_holding(&shop, "stampede").await,
        1,
        "exactly one order"
    );
    assert_eq!(shop.product(&product.product_id).await.stock, 97);
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}

/// The unique index on orders (client_id, idempotency_key) is the backstop when an order with the
/// pair commits without holding the claim (here: written directly, as a buggy writer would).
/// CreateOrder must then answer a retryable ABORTED, never INTERNAL and never a second order; the
/// retry replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unique_index_is_a_retryable_backstop() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(5).await;
    let product_id = Uuid::parse_str(&product.product_id).unwrap();
    let customer = Uuid::now_v7();

    // An uncommitted order under ("anonymous", "backstop") that holds the product's row lock.
    let mut writer = shop.pool.begin().await.unwrap();
    sqlx::query(
        "WITH taken AS (UPDATE products SET stock = stock - 1 WHERE product_id = $2
                        RETURNING product_id)
         INSERT INTO orders (order_id, product_id, quantity, customer_id, status, client_id,
                             idempotency_key)
         SELECT $1, product_id, 1, $3, 'CREATED', 'anonymous', 'backstop' FROM taken",
    )
    .bind(Uuid::now_v7())
    .bind(product_id)
    .bind(customer)
    .execute(&mut *writer)
    .await
    .unwrap();

    let mut client = shop.new_client().await;
    let request = order_request(&product.product_id, 1, customer, "backstop");
    let racing = tokio::spawn(async move { client.create_order(request).await });

    // CreateOrder has claimed the key (no claim existed) and now waits for the row lock.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE '%place_order%'",
        )
        .fetch_one(&shop.pool)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "CreateOrder never blocked"
        );
        tokio::time::sleep(DB_POLL).await;
    }
    writer.commit().await.unwrap();

    let status = racing.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_IN_USE");
    assert_eq!(orders_holding(&shop, "backstop").await, 1, "a second order");

    let retried = shop
        .client
        .clone()
        .create_order(order_request(&product.product_id, 1, customer, "backstop"))
        .await
        .unwrap();
    assert!(retried.metadata().get("idempotent-replayed").is_some());
    assert_eq!(orders_holding(&shop, "backstop").await, 1);
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}
