//! Graceful shutdown: once told to stop, the server refuses new connections but finishes the
//! calls already in flight.

use std::time::Duration;

use uuid::Uuid;

use crate::helpers::{TestShop, WAIT, order_request, shared, try_connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_calls_finish_after_the_shutdown_signal() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(5).await;
    let product_uuid = Uuid::parse_str(&product.product_id).unwrap();

    // Hold the product's row lock so the next CreateOrder is provably in flight, blocked on it.
    let mut blocker = shop.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM products WHERE product_id = $1 FOR UPDATE")
        .bind(product_uuid)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let mut client = shop.new_client().await;
    let product_id = product.product_id.clone();
    let in_flight = tokio::spawn(async move {
        client
            .create_order(order_request(&product_id, 1, Uuid::now_v7(), "in-flight"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!in_flight.is_finished(), "the call waits on the row lock");

    let addr = shop.addr;
    let database_url = shop.database_url.clone();
    let stopping = tokio::spawn(shop.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "the server waits for the in-flight call"
    );
    let refused = tokio::time::timeout(Duration::from_secs(2), try_connect(addr)).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a draining server accepts no new connections"
    );

    blocker.rollback().await.unwrap();
    let response = tokio::time::timeout(WAIT, in_flight)
        .await
        .expect("in-flight call finishes")
        .unwrap();
    assert!(response.is_ok(), "in-flight call succeeded: {response:?}");
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("server stops after draining")
        .unwrap();
    let pool = lab_common::postgres::connect(&database_url, 1)
        .await
        .unwrap();
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 1);
}
