//! GetProductLedger: a product's counters and its CREATED orders from one snapshot, so that
//! initial_stock + restocked - stock = created_quantity can be judged without a race.

use lab_proto::order::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::{TestShop, order_request, reason, shared};

async fn ledger(shop: &TestShop, product_id: &str) -> pb::ProductLedger {
    shop.client
        .clone()
        .get_product_ledger(pb::GetProductLedgerRequest {
            product_id: product_id.into(),
        })
        .await
        .expect("GetProductLedger")
        .into_inner()
        .ledger
        .expect("ledger")
}

/// (stock, initial, restocked, created_quantity, created_orders): the ledger's numbers.
fn numbers(ledger: &pb::ProductLedger) -> (i64, i64, i64, i64, i64) {
    (
        ledger.stock,
        ledger.initial_stock,
        ledger.restocked,
        ledger.created_quantity,
        ledger.created_orders,
    )
}

#[tokio::test]
async fn the_ledger_follows_creates_a_cancel_and_a_restock() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(10).await;
    let other = shop.create_product(7).await;
    let mut client = shop.client.clone();

    let fresh = ledger(&shop, &product.product_id).await;
    assert_eq!(fresh.product_id, product.product_id);
    assert_eq!(numbers(&fresh), (10, 10, 0, 0, 0));
    assert!(fresh.as_of.is_some(), "the snapshot's time");

    let mut orders = Vec::new();
    for (quantity, key) in [(2, "ledger-1"), (3, "ledger-2"), (1, "ledger-3")] {
        let order = client
            .create_order(order_request(
                &product.product_id,
                quantity,
                Uuid::now_v7(),
                key,
            ))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        orders.push(order);
    }
    // Another product's order and a replay change nothing here.
    client
        .create_order(order_request(&other.product_id, 4, Uuid::now_v7(), "other"))
        .await
        .unwrap();
    let replay = client
        .create_order(order_request(
            &product.product_id,
            orders[0].quantity,
            Uuid::parse_str(&orders[0].customer_id).unwrap(),
            "ledger-1",
        ))
        .await
        .unwrap();
    assert!(replay.metadata().get("idempotent-replayed").is_some());
    assert_eq!(
        numbers(&ledger(&shop, &product.product_id).await),
        (4, 10, 0, 6, 3)
    );

    client
        .cancel_order(pb::CancelOrderRequest {
            order_id: orders[1].order_id.clone(),
            reason: "ledger test".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        numbers(&ledger(&shop, &product.product_id).await),
        (7, 10, 0, 3, 2)
    );

    client
        .restock(pb::RestockRequest {
            product_id: product.product_id.clone(),
            quantity: 5,
        })
        .await
        .unwrap();
    let after = ledger(&shop, &product.product_id).await;
    assert_eq!(numbers(&after), (12, 10, 5, 3, 2));
    assert_eq!(
        after.initial_stock + after.restocked - after.stock,
        after.created_quantity,
        "I1 from one snapshot"
    );
    let seconds =
        |ledger: &pb::ProductLedger| ledger.as_of.as_ref().map(|at| (at.seconds, at.nanos));
    assert!(seconds(&after) >= seconds(&fresh), "as_of moves forward");
    // The ledger agrees with GetProduct and with the orders themselves.
    let product_now = shop.product(&product.product_id).await;
    assert_eq!(
        (product_now.stock, product_now.restocked),
        (after.stock, after.restocked)
    );
    shop.assert_no_oversell(&product.product_id).await;
    assert_eq!(
        numbers(&ledger(&shop, &other.product_id).await),
        (3, 7, 0, 4, 1)
    );
    shop.stop().await;
}

#[tokio::test]
async fn an_unknown_product_is_not_found_with_error_info() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let missing = Uuid::now_v7().to_string();
    let status = shop
        .client
        .clone()
        .get_product_ledger(pb::GetProductLedgerRequest {
            product_id: missing.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "PRODUCT_NOT_FOUND");
    assert_eq!(info.domain, "lab");
    assert_eq!(
        info.metadata.get("product_id").map(String::as_str),
        Some(missing.as_str())
    );
    shop.stop().await;
}

#[tokio::test]
async fn a_malformed_id_is_invalid_argument_with_bad_request() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    for malformed in ["", "not-a-uuid", "01234567-89ab-cdef-0123-456789abcdeg"] {
        let status = shop
            .client
            .clone()
            .get_product_ledger(pb::GetProductLedgerRequest {
                product_id: malformed.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{malformed:?}: {status:?}"
        );
        assert_eq!(reason(&status), "INVALID_ARGUMENT");
        let bad_request = status.get_details_bad_request().expect("BadRequest");
        let fields: Vec<&str> = bad_request
            .field_violations
            .iter()
            .map(|violation| violation.field.as_str())
            .collect();
        assert_eq!(fields, ["product_id"], "{malformed:?}");
    }
    shop.stop().await;
}
