//! The sold-out fast path (issue 11): an instance that saw a product sold out refuses first
//! attempts from memory; a restock or cancel committed anywhere reopens sales on every instance
//! within 100 ms; a retry always reaches the database, so it replays an existing order.

use std::time::{Duration, Instant};

use lab_proto::order::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::{
    POLL, TestShop, WAIT, alone, eventually, order_request, reason, retried_order_request, shared,
};

async fn listening(shop: &TestShop) {
    let flags = shop.sold_out.clone();
    eventually(WAIT, "the stock listener connects", || flags.is_listening()).await;
}

/// Holds the product's row lock: a CreateOrder that reaches the database now waits, so one that
/// answers at once was answered from memory.
async fn hold_row_lock(
    shop: &TestShop,
    product_id: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = shop.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM products WHERE product_id = $1::uuid FOR UPDATE")
        .bind(product_id)
        .execute(&mut *holder)
        .await
        .unwrap();
    holder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restock_on_one_instance_reopens_sales_on_another_within_100_ms() {
    let _machine = alone().await;
    let first = TestShop::spawn().await;
    let second = TestShop::spawn_on(first.database_url.clone(), |_| {}).await;
    listening(&first).await;
    listening(&second).await;
    let product = first.create_product(2).await;
    let product_id = Uuid::parse_str(&product.product_id).unwrap();
    let mut client = second.client.clone();
    client
        .create_order(order_request(&product.product_id, 2, Uuid::now_v7(), "all"))
        .await
        .expect("the last units");
    assert!(second.sold_out.is_sold_out(product_id), "stock 0 was seen");

    // Refused without the database: its row is locked, yet the answer comes at once, in the
    // shape of the database's refusal.
    let holder = hold_row_lock(&first, &product.product_id).await;
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        client.create_order(order_request(
            &product.product_id,
            1,
            Uuid::now_v7(),
            "late",
        )),
    )
    .await
    .expect("answered from memory, not from behind the row lock")
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("OUT_OF_STOCK", "lab")
    );
    assert_eq!(
        info.metadata.get("available").map(String::as_str),
        Some("0")
    );
    assert_eq!(
        info.metadata.get("product_id").map(String::as_str),
        Some(product.product_id.as_str())
    );
    holder.commit().await.unwrap();

    first
        .client
        .clone()
        .restock(pb::RestockRequest {
            product_id: product.product_id.clone(),
            quantity: 3,
        })
        .await
        .unwrap();
    let restocked = Instant::now();
    loop {
        match client
            .create_order(order_request(
                &product.product_id,
                1,
                Uuid::now_v7(),
                "after-restock",
            ))
            .await
        {
            Ok(_) => break,
            Err(status) => assert_eq!(reason(&status), "OUT_OF_STOCK", "{status:?}"),
        }
        assert!(
            restocked.elapsed() < Duration::from_millis(100),
            "the second instance still refuses 100 ms after the restock"
        );
        tokio::time::sleep(POLL).await;
    }
    second.assert_no_oversell(&product.product_id).await;
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_on_one_instance_reopens_sales_on_another() {
    let _machine = alone().await;
    let first = TestShop::spawn().await;
    let second = TestShop::spawn_on(first.database_url.clone(), |_| {}).await;
    listening(&first).await;
    listening(&second).await;
    let product = first.create_product(1).await;
    let product_id = Uuid::parse_str(&product.product_id).unwrap();
    let order = second
        .client
        .clone()
        .create_order(order_request(&product.product_id, 1, Uuid::now_v7(), "one"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert!(second.sold_out.is_sold_out(product_id));
    first
        .client
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            order_id: order.order_id,
            reason: "changed my mind".into(),
        })
        .await
        .unwrap();
    let flags = second.sold_out.clone();
    eventually(Duration::from_millis(100), "the flag drops", || {
        !flags.is_sold_out(product_id)
    })
    .await;
    second
        .client
        .clone()
        .create_order(order_request(&product.product_id, 1, Uuid::now_v7(), "two"))
        .await
        .expect("the cancelled unit sells again");
    second.stop().await;
    first.stop().await;
}

/// The flag must never refuse the re-send of a request whose order exists: approval-svc would
/// record OUT_OF_STOCK while its order stands. A request carrying `grpc-previous-rpc-attempts`
/// (other than 0) always reaches the database and replays the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_key_holding_an_order_replays_it_despite_the_flag() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    listening(&shop).await;
    let product = shop.create_product(1).await;
    let product_id = Uuid::parse_str(&product.product_id).unwrap();
    let customer = Uuid::now_v7();
    let mut client = shop.client.clone();
    let created = client
        .create_order(order_request(&product.product_id, 1, customer, "mine"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert!(shop.sold_out.is_sold_out(product_id));

    for attempts in [1, 2, 5] {
        let replayed = client
            .create_order(retried_order_request(
                &product.product_id,
                1,
                customer,
                "mine",
                attempts,
            ))
            .await
            .unwrap_or_else(|status| panic!("attempt {attempts} refused: {status:?}"));
        assert_eq!(
            replayed.metadata().get("idempotent-replayed").unwrap(),
            "true"
        );
        assert_eq!(replayed.into_inner().order.unwrap(), created);
    }
    // A first attempt is refused from memory; a retry of a key without an order is refused by
    // the database, the same way.
    for request in [
        order_request(&product.product_id, 1, customer, "other"),
        retried_order_request(&product.product_id, 1, customer, "other", 1),
    ] {
        let status = client.create_order(request).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "OUT_OF_STOCK");
    }
    let keys: i64 = sqlx::query_scalar("SELECT count(DISTINCT idempotency_key) FROM orders")
        .fetch_one(&shop.pool)
        .await
        .unwrap();
    assert_eq!(keys, 1, "refusals consume no key");
    shop.stop().await;
}

/// With the listener's connection gone, notifications are lost: the flags go at once, later ones
/// expire quickly, and the listener comes back on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_connection_drops_the_flags_and_reconnects() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    listening(&shop).await;
    let product = shop.create_product(1).await;
    let product_id = Uuid::parse_str(&product.product_id).unwrap();
    shop.client
        .clone()
        .create_order(order_request(&product.product_id, 1, Uuid::now_v7(), "one"))
        .await
        .unwrap();
    assert!(shop.sold_out.is_sold_out(product_id));

    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1
         ) AS killed",
    )
    .bind(order_svc::stock_listener::APPLICATION_NAME)
    .fetch_one(&shop.pool)
    .await
    .unwrap();
    assert_eq!(terminated, 1, "one listener connection");
    let flags = shop.sold_out.clone();
    eventually(Duration::from_secs(5), "the loss is noticed", || {
        !flags.is_listening()
    })
    .await;
    assert!(
        !flags.is_sold_out(product_id),
        "flags go with the connection"
    );
    eventually(WAIT, "the listener reconnects", || flags.is_listening()).await;
    shop.stop().await;
}
