//! The audit trail (issue 12) on a real order-svc: every state-changing call that reaches the
//! database writes exactly one event, in the transaction of its change (a CreateOrder batch's
//! events with the batch's orders), naming its caller and `x-request-id`; calls refused before
//! the database write none; the trail is append-only even for the service's own role; only an
//! operator lists it, page by page.

use std::sync::Arc;

use lab_proto::order::v1 as pb;
use lab_proto::order::v1::ops_service_client::OpsServiceClient;
use tokio::sync::Barrier;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::auth::secured_shop;
use crate::auth_support::{Credentials as Keys, with_auth};
use crate::group_commit::{blocked_batch, hold_row_lock};
use crate::helpers::{
    TestShop, WAIT, client_channel, eventually, order_request, reason, retried_order_request,
    shared,
};

/// One event as the test expects it (the request id selects it).
#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
struct Event {
    actor: String,
    action: String,
    target_id: String,
    outcome: String,
}

fn event(actor: &str, action: &str, target_id: &str, outcome: &str) -> Event {
    Event {
        actor: actor.into(),
        action: action.into(),
        target_id: target_id.into(),
        outcome: outcome.into(),
    }
}

/// The events recorded under `request_id`.
async fn recorded(shop: &TestShop, request_id: &str) -> Vec<Event> {
    sqlx::query_as(
        "SELECT actor, action, target_id, outcome FROM audit_events
         WHERE request_id = $1 ORDER BY event_id",
    )
    .bind(request_id)
    .fetch_all(&shop.pool)
    .await
    .unwrap()
}

async fn event_count(shop: &TestShop) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&shop.pool)
        .await
        .unwrap()
}

/// True when the transaction that wrote the event of `request_id` is the one that last wrote
/// the row of `table` whose `key` is `id`: the event was committed with the change.
async fn written_with(shop: &TestShop, request_id: &str, table: &str, key: &str, id: &str) -> bool {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT e.xmin::text = t.xmin::text FROM audit_events e, {table} t
         WHERE e.request_id = $1 AND t.{key} = $2::uuid"
    )))
    .bind(request_id)
    .bind(id)
    .fetch_one(&shop.pool)
    .await
    .unwrap()
}

/// `request` sent under `request_id`, as `client_id` (open mode's caller) when given.
fn tagged<T>(mut request: Request<T>, request_id: &str, client_id: Option<&str>) -> Request<T> {
    let metadata = request.metadata_mut();
    metadata.insert("x-request-id", request_id.parse().unwrap());
    if let Some(client_id) = client_id {
        metadata.insert("client-id", client_id.parse().unwrap());
    }
    request
}

fn restock(product_id: &str, quantity: i64) -> Request<pb::RestockRequest> {
    Request::new(pb::RestockRequest {
        product_id: product_id.into(),
        quantity,
    })
}

fn cancel(order_id: &str) -> Request<pb::CancelOrderRequest> {
    Request::new(pb::CancelOrderRequest {
        order_id: order_id.into(),
        reason: "audit".into(),
    })
}

fn new_product(stock: i64, max_per_customer: i32) -> Request<pb::CreateProductRequest> {
    Request::new(pb::CreateProductRequest {
        name: "audited".into(),
        initial_stock: stock,
        max_per_customer,
    })
}

async fn ops_client(shop: &TestShop) -> OpsServiceClient<Channel> {
    OpsServiceClient::new(client_channel(shop).await)
}

#[tokio::test]
async fn every_call_that_reaches_the_database_records_one_event_of_its_caller() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let mut client = shop.client.clone();
    let missing = Uuid::now_v7().to_string();
    let missing = missing.as_str();
    let customer = Uuid::now_v7();

    let product = client
        .create_product(tagged(new_product(2, 0), "r-product", Some("admin-7")))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let p = product.product_id.as_str();
    assert_eq!(
        recorded(&shop, "r-product").await,
        [event("admin-7", "CreateProduct", p, "OK")]
    );
    assert!(written_with(&shop, "r-product", "products", "product_id", p).await);

    // Without a client-id the open-mode caller is anonymous.
    client
        .restock(tagged(restock(p, 3), "r-restock", None))
        .await
        .unwrap();
    assert_eq!(
        recorded(&shop, "r-restock").await,
        [event("anonymous", "Restock", p, "OK")]
    );
    assert!(written_with(&shop, "r-restock", "products", "product_id", p).await);

    let order = client
        .create_order(tagged(
            order_request(p, 1, customer, "k-1"),
            "r-order",
            Some("shop-9"),
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let o = order.order_id.as_str();
    assert_eq!(
        recorded(&shop, "r-order").await,
        [event("shop-9", "CreateOrder", o, "OK")]
    );
    assert!(written_with(&shop, "r-order", "orders", "order_id", o).await);

    let replay = client
        .create_order(tagged(
            order_request(p, 1, customer, "k-1"),
            "r-replay",
            Some("shop-9"),
        ))
        .await
        .unwrap();
    assert!(replay.metadata().get("idempotent-replayed").is_some());
    assert_eq!(
        recorded(&shop, "r-replay").await,
        [event("shop-9", "CreateOrder", o, "REPLAYED")]
    );

    // Refusals decided in the database are recorded with the reason the caller got.
    let limited = client
        .create_product(tagged(new_product(5, 1), "r-limited", Some("admin-7")))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let l = limited.product_id.as_str();
    client
        .create_order(tagged(order_request(l, 1, customer, "k-l1"), "r-l1", None))
        .await
        .unwrap();
    let refusals = [
        ("r-reused", order_request(p, 2, customer, "k-1"), p),
        ("r-no-stock", order_request(p, 5, customer, "k-2"), p),
        (
            "r-no-product",
            order_request(missing, 1, customer, "k-3"),
            missing,
        ),
        ("r-limit", order_request(l, 1, customer, "k-l2"), l),
    ];
    let mut reasons = Vec::new();
    for (request_id, request, target) in refusals {
        let status = client
            .create_order(tagged(request, request_id, Some("shop-9")))
            .await
            .unwrap_err();
        assert_eq!(
            recorded(&shop, request_id).await,
            [event("shop-9", "CreateOrder", target, &reason(&status))]
        );
        reasons.push(reason(&status));
    }
    assert_eq!(
        reasons,
        [
            "IDEMPOTENCY_KEY_REUSED",
            "OUT_OF_STOCK",
            "PRODUCT_NOT_FOUND",
            "CUSTOMER_LIMIT_REACHED"
        ]
    );
    let status = client
        .restock(tagged(restock(missing, 1), "r-restock-missing", None))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "PRODUCT_NOT_FOUND");
    assert_eq!(
        recorded(&shop, "r-restock-missing").await,
        [event("anonymous", "Restock", missing, "PRODUCT_NOT_FOUND")]
    );

    client
        .cancel_order(tagged(cancel(o), "r-cancel", Some("shop-9")))
        .await
        .unwrap();
    assert_eq!(
        recorded(&shop, "r-cancel").await,
        [event("shop-9", "CancelOrder", o, "OK")]
    );
    assert!(written_with(&shop, "r-cancel", "orders", "order_id", o).await);
    // Cancelling it again answers the cancelled order: OK, nothing more restored.
    client
        .cancel_order(tagged(cancel(o), "r-cancel-again", Some("shop-9")))
        .await
        .unwrap();
    assert_eq!(
        recorded(&shop, "r-cancel-again").await,
        [event("shop-9", "CancelOrder", o, "OK")]
    );
    let status = client
        .cancel_order(tagged(cancel(missing), "r-cancel-missing", Some("shop-9")))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ORDER_NOT_FOUND");
    assert_eq!(
        recorded(&shop, "r-cancel-missing").await,
        [event("shop-9", "CancelOrder", missing, "ORDER_NOT_FOUND")]
    );

    // Counters one restock away from overflowing: refused, recorded, unchanged.
    sqlx::query(
        "UPDATE products SET initial_stock = 1, stock = 1, restocked = 9223372036854775805
         WHERE product_id = $1::uuid",
    )
    .bind(l)
    .execute(&shop.pool)
    .await
    .unwrap();
    let status = client
        .restock(tagged(restock(l, 5), "r-overflow", None))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::OutOfRange, "STOCK_OVERFLOW")
    );
    assert_eq!(
        recorded(&shop, "r-overflow").await,
        [event("anonymous", "Restock", l, "STOCK_OVERFLOW")]
    );
    assert_eq!(shop.product(l).await.restocked, 9_223_372_036_854_775_805);

    // Bad input never reaches the database: no event.
    let before = event_count(&shop).await;
    let bad = client
        .create_order(tagged(order_request(p, 0, customer, "k-4"), "r-bad", None))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = client
        .create_product(tagged(new_product(-1, 0), "r-bad", None))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = client
        .restock(tagged(restock("not-a-uuid", 1), "r-bad", None))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = client
        .cancel_order(tagged(cancel("not-a-uuid"), "r-bad", None))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(recorded(&shop, "r-bad").await, []);
    assert_eq!(event_count(&shop).await, before);
    // One event per call that reached the database, and nothing else: 2 products, 1 restock,
    // 2 orders, 1 replay, 4 refused orders, 1 restock refused, 3 cancels, 1 overflow.
    assert_eq!(before, 15);
    shop.stop().await;
}

#[tokio::test]
async fn with_authentication_the_actor_is_the_token_subject() {
    let _machine = shared().await;
    let keys = Keys::new();
    let shop = secured_shop(&keys).await;
    let mut client = shop.client.clone();
    let admin = keys.bearer("admin-ann", &["shop-admin"]);
    let (bo, cy) = (
        keys.bearer("buyer-bo", &["shop-client"]),
        keys.bearer("buyer-cy", &["shop-client"]),
    );
    let product = client
        .create_product(tagged(
            with_auth(new_product(5, 0), Some(&admin)),
            "a-product",
            None,
        ))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let p = product.product_id.as_str();
    // The client-id header names someone else: the token decides.
    let order = client
        .create_order(tagged(
            with_auth(order_request(p, 1, Uuid::now_v7(), "k-1"), Some(&bo)),
            "a-order",
            Some("spoofed"),
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let o = order.order_id.as_str();
    // Another client's order is not found to cy, and the attempt is on the record.
    let status = client
        .cancel_order(tagged(with_auth(cancel(o), Some(&cy)), "a-cancel-cy", None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1::uuid")
        .bind(o)
        .fetch_one(&shop.pool)
        .await
        .unwrap();
    assert_eq!(status, "CREATED", "cy cancelled nothing");
    client
        .cancel_order(tagged(with_auth(cancel(o), Some(&bo)), "a-cancel", None))
        .await
        .unwrap();
    for (request_id, expected) in [
        ("a-product", event("admin-ann", "CreateProduct", p, "OK")),
        ("a-order", event("buyer-bo", "CreateOrder", o, "OK")),
        (
            "a-cancel-cy",
            event("buyer-cy", "CancelOrder", o, "ORDER_NOT_FOUND"),
        ),
        ("a-cancel", event("buyer-bo", "CancelOrder", o, "OK")),
    ] {
        assert_eq!(
            recorded(&shop, request_id).await,
            [expected],
            "{request_id}"
        );
    }

    // Refused by authentication or the roles table: nothing reached the database.
    let user = keys.bearer("someone", &["user"]);
    for header in [None, Some(user.as_str())] {
        let status = client
            .create_order(tagged(
                with_auth(order_request(p, 1, Uuid::now_v7(), "k-2"), header),
                "a-refused",
                None,
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ),
            "{status:?}"
        );
    }
    assert_eq!(recorded(&shop, "a-refused").await, []);

    // Only an operator lists the trail.
    let mut ops = ops_client(&shop).await;
    let list = |header: Option<&str>| {
        with_auth(Request::new(pb::ListAuditEventsRequest::default()), header)
    };
    let operator = keys.bearer("ops", &["operator"]);
    let events = ops
        .list_audit_events(list(Some(&operator)))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 4);
    let everyone_else = keys.bearer("boss", &["shop-admin", "shop-client", "approver", "user"]);
    let denied = ops
        .list_audit_events(list(Some(&everyone_else)))
        .await
        .unwrap_err();
    assert_eq!(
        (denied.code(), reason(&denied).as_str()),
        (Code::PermissionDenied, "ROLE_REQUIRED")
    );
    let anonymous = ops.list_audit_events(list(None)).await.unwrap_err();
    assert_eq!(
        (anonymous.code(), reason(&anonymous).as_str()),
        (Code::Unauthenticated, "TOKEN_MISSING")
    );
    shop.stop().await;
}

/// Twelve buyers in one batch for five units: one event per request, committed in the batch's
/// transaction (the one that wrote its orders), each with the answer its caller got.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_records_one_event_per_request_with_its_orders() {
    let _machine = shared().await;
    // Every request reaches the database, even after the stock is gone.
    let shop = TestShop::spawn_with(|config| config.sold_out_fast_path = false).await;
    let product = shop.create_product(1 + 5).await;
    let product_id = Uuid::parse_str(&product.product_id).unwrap();
    let holder = hold_row_lock(&shop, &product.product_id).await;
    let blocked = blocked_batch(&shop, &product.product_id).await;

    const BUYERS: usize = 12;
    let barrier = Arc::new(Barrier::new(BUYERS));
    let mut tasks = Vec::new();
    for buyer in 0..BUYERS {
        let barrier = barrier.clone();
        let mut client = shop.new_client().await;
        let request = tagged(
            order_request(&product.product_id, 1, Uuid::now_v7(), "k"),
            &format!("batch-{buyer}"),
            Some(&format!("buyer-{buyer}")),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client.create_order(request).await
        }));
    }
    let group_commit = shop.group_commit.clone();
    eventually(WAIT, "all buyers queued", || {
        group_commit.waiting(product_id) == BUYERS
    })
    .await;
    holder.commit().await.unwrap();
    blocked.await.unwrap().expect("the blocked batch's order");

    let mut created = 0;
    for (buyer, task) in tasks.into_iter().enumerate() {
        let (target, outcome) = match task.await.unwrap() {
            Ok(response) => {
                created += 1;
                (response.into_inner().order.unwrap().order_id, "OK".into())
            }
            Err(status) => (product.product_id.clone(), reason(&status)),
        };
        let request_id = format!("batch-{buyer}");
        assert_eq!(
            recorded(&shop, &request_id).await,
            [event(
                &format!("buyer-{buyer}"),
                "CreateOrder",
                &target,
                &outcome
            )],
            "{request_id}"
        );
        if outcome == "OK" {
            assert!(written_with(&shop, &request_id, "orders", "order_id", &target).await);
        } else {
            assert_eq!(outcome, "OUT_OF_STOCK");
        }
    }
    assert_eq!(created, 5);
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM audit_events WHERE request_id LIKE 'batch-%'",
    )
    .fetch_one(&shop.pool)
    .await
    .unwrap();
    assert_eq!(transactions, 1, "the buyers' events in one transaction");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_from_memory_records_nothing_a_retry_reaching_the_database_does() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let flags = shop.sold_out.clone();
    eventually(WAIT, "the stock listener connects", || flags.is_listening()).await;
    let product = shop.create_product(1).await;
    let p = product.product_id.as_str();
    let mut client = shop.client.clone();
    client
        .create_order(order_request(p, 1, Uuid::now_v7(), "last"))
        .await
        .unwrap();
    let product_id = Uuid::parse_str(p).unwrap();
    assert!(shop.sold_out.is_sold_out(product_id), "stock 0 was seen");

    let from_memory = client
        .create_order(tagged(
            order_request(p, 1, Uuid::now_v7(), "k-1"),
            "m-first",
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&from_memory), "OUT_OF_STOCK");
    assert_eq!(recorded(&shop, "m-first").await, []);
    let from_database = client
        .create_order(tagged(
            retried_order_request(p, 1, Uuid::now_v7(), "k-1", 1),
            "m-retry",
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&from_database), "OUT_OF_STOCK");
    assert_eq!(
        recorded(&shop, "m-retry").await,
        [event("anonymous", "CreateOrder", p, "OUT_OF_STOCK")]
    );
    shop.stop().await;
}

/// The SQLSTATE of a statement refused by the database.
fn sqlstate(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> String {
    let error = result.expect_err("the trail refuses to change");
    error
        .as_database_error()
        .and_then(|error| error.code())
        .map(|code| code.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_trail_is_append_only_for_the_service_itself() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    shop.create_product(1).await;
    shop.create_product(2).await;
    let rows = || async {
        sqlx::query_as::<_, (Uuid, String, String, String, String)>(
            "SELECT event_id, actor, action, target_id, outcome FROM audit_events
             ORDER BY event_id",
        )
        .fetch_all(&shop.pool)
        .await
        .unwrap()
    };
    let before = rows().await;
    assert_eq!(before.len(), 2);

    // The service's own pool, hence its own role.
    for statement in [
        "UPDATE audit_events SET outcome = 'FORGED'",
        "DELETE FROM audit_events",
        "DELETE FROM audit_events WHERE event_id = '00000000-0000-0000-0000-000000000000'",
        "TRUNCATE audit_events",
    ] {
        let refused = sqlx::query(statement).execute(&shop.pool).await;
        assert_eq!(sqlstate(refused), "42501", "{statement}");
    }
    assert_eq!(rows().await, before, "the rows stay as written");
    shop.stop().await;
}

#[tokio::test]
async fn operators_page_through_the_trail_and_filter_it() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let mut client = shop.client.clone();
    let mut create = async |request_id: &str, as_client: &str| {
        client
            .create_product(tagged(new_product(1, 0), request_id, Some(as_client)))
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap()
            .product_id
    };
    let first = create("l-1", "alice").await;
    let second = create("l-2", "bob").await;
    for (request_id, as_client, product) in [
        ("l-3", "alice", &first),
        ("l-4", "bob", &second),
        ("l-5", "bob", &first),
    ] {
        shop.client
            .clone()
            .restock(tagged(restock(product, 1), request_id, Some(as_client)))
            .await
            .unwrap();
    }

    let mut ops = ops_client(&shop).await;
    let mut listed = Vec::new();
    let mut page_token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = ops
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 2,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(page.events.len());
        listed.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, [2, 2, 1]);
    let request_ids: Vec<_> = listed.iter().map(|e| e.request_id.as_str()).collect();
    assert_eq!(
        request_ids,
        ["l-1", "l-2", "l-3", "l-4", "l-5"],
        "oldest first"
    );
    let fifth = &listed[4];
    assert_eq!(
        (
            fifth.actor.as_str(),
            fifth.action.as_str(),
            fifth.target_id.as_str(),
            fifth.outcome.as_str()
        ),
        ("bob", "Restock", first.as_str(), "OK")
    );
    assert!(Uuid::parse_str(&fifth.event_id).is_ok());
    assert!(fifth.at.is_some());

    let mut filtered = async |actor: &str, target_id: &str| {
        ops.list_audit_events(pb::ListAuditEventsRequest {
            actor: actor.into(),
            target_id: target_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.request_id)
        .collect::<Vec<_>>()
    };
    assert_eq!(filtered("bob", "").await, ["l-2", "l-4", "l-5"]);
    assert_eq!(filtered("", &first).await, ["l-1", "l-3", "l-5"]);
    assert_eq!(filtered("bob", &first).await, ["l-5"]);
    assert_eq!(filtered("carol", "").await, Vec::<String>::new());

    for (request, field) in [
        (
            pb::ListAuditEventsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListAuditEventsRequest {
                actor: "a".repeat(256),
                ..Default::default()
            },
            "actor",
        ),
    ] {
        let status = ops.list_audit_events(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        let bad_request = status.get_details_bad_request().expect("BadRequest");
        assert!(
            bad_request
                .field_violations
                .iter()
                .any(|v| v.field == field),
            "{bad_request:?}"
        );
    }
    shop.stop().await;
}
