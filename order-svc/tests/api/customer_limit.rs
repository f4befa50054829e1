//! `max_per_customer` (issue 11): the CREATED orders of one customer never hold more units of a
//! product than its limit, checked with the stock under the product's row lock, whatever the
//! concurrency and the instance; a refusal writes nothing; a cancel frees the units.

use std::sync::Arc;

use lab_proto::order::v1 as pb;
use tokio::sync::Barrier;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::{TestShop, order_request, reason, shared};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_calls_of_one_customer_take_exactly_the_limit() {
    let _machine = shared().await;
    let first = TestShop::spawn().await;
    let second = TestShop::spawn_on(first.database_url.clone(), |_| {}).await;
    const LIMIT: i32 = 3;
    let product = first.create_limited_product(100, LIMIT).await;
    assert_eq!(
        product.max_per_customer, LIMIT,
        "the product shows its limit"
    );
    let customer = Uuid::now_v7();
    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = Vec::new();
    for call in 0..20 {
        let barrier = barrier.clone();
        let shop = if call % 2 == 0 { &first } else { &second };
        let mut client = shop.new_client().await;
        let product_id = product.product_id.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client
                .create_order(order_request(
                    &product_id,
                    1,
                    customer,
                    &format!("call-{call}"),
                ))
                .await
        }));
    }
    let (mut created, mut refused) = (Vec::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(response) => created.push(response.into_inner().order.unwrap()),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                let info = status.get_details_error_info().expect("ErrorInfo");
                assert_eq!(info.reason, "CUSTOMER_LIMIT_REACHED");
                assert_eq!(info.domain, "lab");
                assert_eq!(info.metadata.get("limit").map(String::as_str), Some("3"));
                assert_eq!(info.metadata.get("held").map(String::as_str), Some("3"));
                refused += 1;
            }
        }
    }
    assert_eq!((created.len(), refused), (3, 17));
    let keys: i64 = sqlx::query_scalar("SELECT count(DISTINCT idempotency_key) FROM orders")
        .fetch_one(&first.pool)
        .await
        .unwrap();
    assert_eq!(keys, 3, "refusals consume no key");
    assert_eq!(first.product(&product.product_id).await.stock, 97);

    // Another customer has a limit of its own.
    first
        .client
        .clone()
        .create_order(order_request(
            &product.product_id,
            3,
            Uuid::now_v7(),
            "other",
        ))
        .await
        .expect("another customer's units");
    // Over the limit in one order.
    let status = first
        .client
        .clone()
        .create_order(order_request(&product.product_id, 4, Uuid::now_v7(), "big"))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "CUSTOMER_LIMIT_REACHED");

    // A cancelled order frees its units; a refused key can be used once it fits.
    first
        .client
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            order_id: created[0].order_id.clone(),
            reason: "returned".into(),
        })
        .await
        .unwrap();
    let refused_key = (0..20)
        .map(|call| format!("call-{call}"))
        .find(|key| created.iter().all(|order| &order.idempotency_key != key))
        .unwrap();
    second
        .client
        .clone()
        .create_order(order_request(
            &product.product_id,
            1,
            customer,
            &refused_key,
        ))
        .await
        .expect("the freed unit");
    let held: i64 = sqlx::query_scalar(
        "SELECT sum(quantity)::bigint FROM orders
         WHERE customer_id = $1 AND status = 'CREATED'",
    )
    .bind(customer)
    .fetch_one(&first.pool)
    .await
    .unwrap();
    assert_eq!(held, i64::from(LIMIT));
    first.assert_no_oversell(&product.product_id).await;
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_negative_limit_is_invalid_and_zero_means_unlimited() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let status = shop
        .client
        .clone()
        .create_product(pb::CreateProductRequest {
            name: "lamp".into(),
            initial_stock: 5,
            max_per_customer: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "max_per_customer");
    assert_eq!(shop.table_counts().await, (0, 0, 0), "nothing written");

    let product = shop.create_product(5).await;
    assert_eq!(product.max_per_customer, 0);
    shop.client
        .clone()
        .create_order(order_request(&product.product_id, 5, Uuid::now_v7(), "all"))
        .await
        .expect("no limit");
    let fetched = shop.product(&product.product_id).await;
    assert_eq!(fetched.max_per_customer, 0);
    shop.stop().await;
}
