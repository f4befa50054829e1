//! Idempotency past the key's retention (issue 9, item 1): the order that holds (client, key)
//! decides, however long ago it was made. A late retry replays it, a different request under
//! that key is refused, and no interleaving ever creates a second order for the pair. Since
//! session 3 the order is the key's only claim (no row in `idempotency_keys` is written), so
//! "past retention" is every key's normal state; these tests check it stays exact.

use std::sync::Arc;
use std::time::Duration;

use lab_proto::order::v1 as pb;
use tokio::sync::Barrier;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{DB_POLL, TestShop, WAIT, order_request, reason, shared};

/// What the reaper leaves of an expired key is what CreateOrder leaves now: no claim row, only
/// the order holding the key.
async fn forget_key(shop: &TestShop, key: &str) {
    let claims: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE idempotency_key = $1")
            .bind(key)
            .fetch_one(&shop.pool)
            .await
            .unwrap();
    assert_eq!(claims, 0, "no claim row for {key}: its order holds it");
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

/// A key taken by an order of another product while CreateOrder waits on it (a client sending
/// one key for two products at once; written directly here). Once that order commits, the batch
/// finds the key held, undoes its own orders and decides again: the request is refused as
/// reused and takes no stock, never INTERNAL and never a second order. (With key claims, this
/// answered a retryable ABORTED `IDEMPOTENCY_KEY_IN_USE`, and a batch-mate refused for the
/// stock that request had reserved was undersold.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_by_another_product_meanwhile_is_refused_as_reused() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(5).await;
    let other = shop.create_product(5).await;
    let other_id = Uuid::parse_str(&other.product_id).unwrap();
    let customer = Uuid::now_v7();

    // An uncommitted order of the other product under ("anonymous", "backstop").
    let mut writer = shop.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO orders (order_id, product_id, quantity, customer_id, status, client_id,
                             idempotency_key)
         VALUES ($1, $2, 1, $3, 'CREATED', 'anonymous', 'backstop')",
    )
    .bind(Uuid::now_v7())
    .bind(other_id)
    .bind(customer)
    .execute(&mut *writer)
    .await
    .unwrap();

    let mut client = shop.new_client().await;
    let request = order_request(&product.product_id, 1, customer, "backstop");
    let racing = tokio::spawn(async move { client.create_order(request).await });

    // CreateOrder saw no order holding the key, decided to create one, and now waits on the
    // writer's uncommitted key.
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
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(orders_holding(&shop, "backstop").await, 1, "a second order");
    assert_eq!(
        shop.product(&product.product_id).await.stock,
        5,
        "stock taken"
    );
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}
