//! Group commit on the hot row (issue 11): CreateOrders of one product that arrive while its
//! previous batch is in the database settle together, each with its own answer, across
//! instances, without overselling or underselling.

use std::collections::HashSet;
use std::sync::Arc;

use lab_proto::order::v1 as pb;
use tokio::sync::Barrier;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{DB_POLL, TestShop, WAIT, eventually, order_request, reason, shared};

/// Many buyers on two instances of one database, quantities 1 and 2, demand four times the
/// stock. Every unit is either taken or left, and no request was refused that the stock left at
/// its turn covered: stock only falls during the run, so each refused quantity must exceed the
/// final stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_quantities_on_two_instances_neither_oversell_nor_undersell() {
    let _machine = shared().await;
    let first = TestShop::spawn().await;
    let second = TestShop::spawn_on(first.database_url.clone(), |_| {}).await;
    const STOCK: i64 = 100;
    const BUYERS: usize = 300;
    let product = first.create_product(STOCK).await;
    let mut channels = Vec::new();
    for shop in [&first, &second] {
        for _ in 0..4 {
            channels.push(shop.new_client().await);
        }
    }
    let barrier = Arc::new(Barrier::new(BUYERS));
    let mut tasks = Vec::new();
    for buyer in 0..BUYERS {
        let barrier = barrier.clone();
        let mut client = channels[buyer % channels.len()].clone();
        let product_id = product.product_id.clone();
        let quantity = if buyer % 3 == 0 { 2 } else { 1 };
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let answer = client
                .create_order(order_request(
                    &product_id,
                    quantity,
                    Uuid::now_v7(),
                    &format!("buyer-{buyer}"),
                ))
                .await;
            (quantity, answer)
        }));
    }
    let (mut taken, mut created, mut refused) = (0_i64, 0_i64, Vec::new());
    for task in tasks {
        match task.await.unwrap() {
            (quantity, Ok(_)) => {
                taken += i64::from(quantity);
                created += 1;
            }
            (quantity, Err(status)) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(reason(&status), "OUT_OF_STOCK");
                refused.push(quantity);
            }
        }
    }
    let left = first.product(&product.product_id).await.stock;
    assert_eq!(taken + left, STOCK, "units taken + units left = the stock");
    assert!(
        refused.iter().all(|quantity| i64::from(*quantity) > left),
        "a request was refused although the {left} units left covered it: {refused:?}"
    );
    let (orders, transactions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT created_at) FROM orders WHERE product_id = $1::uuid",
    )
    .bind(&product.product_id)
    .fetch_one(&first.pool)
    .await
    .unwrap();
    assert_eq!(orders, created);
    // now() is the transaction's start: orders of one batch share it.
    assert!(
        transactions < orders,
        "{orders} orders in {transactions} transactions: nothing was batched"
    );
    first.assert_no_oversell(&product.product_id).await;
    second.stop().await;
    first.stop().await;
}

/// Holds `product_id`'s row lock in an open transaction, so the batch in the database waits and
/// the requests sent meanwhile form the next batch.
pub(crate) async fn hold_row_lock(
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

/// Sends a request that becomes a batch of its own and waits, in the database, for the lock
/// `hold_row_lock` holds; returns its task.
pub(crate) async fn blocked_batch(
    shop: &TestShop,
    product_id: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::CreateOrderResponse>, tonic::Status>> {
    let mut client = shop.new_client().await;
    let request = order_request(product_id, 1, Uuid::now_v7(), "blocked-batch");
    let task = tokio::spawn(async move { client.create_order(request).await });
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE '%place_orders%'",
        )
        .fetch_one(&shop.pool)
        .await
        .unwrap();
        if waiting == 1 {
            return task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first batch never blocked"
        );
        tokio::time::sleep(DB_POLL).await;
    }
}

/// Fifty calls with one key, all in one batch: one order, created by the first, replayed to the
/// other forty-nine (no ABORTED, no second order).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_many_times_in_one_batch_makes_one_order() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(10).await;
    let product_id = Uuid::parse_str(&product.product_id).unwrap();
    let holder = hold_row_lock(&shop, &product.product_id).await;
    let blocked = blocked_batch(&shop, &product.product_id).await;

    const CALLS: usize = 50;
    let customer = Uuid::now_v7();
    let barrier = Arc::new(Barrier::new(CALLS));
    let mut tasks = Vec::new();
    for _ in 0..CALLS {
        let barrier = barrier.clone();
        let mut client = shop.client.clone();
        let request = order_request(&product.product_id, 2, customer, "one-key");
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client.create_order(request).await
        }));
    }
    let group_commit = shop.group_commit.clone();
    eventually(WAIT, "all calls queued", || {
        group_commit.waiting(product_id) == CALLS
    })
    .await;
    holder.commit().await.unwrap();
    blocked.await.unwrap().expect("the blocked batch's order");

    let (mut order_ids, mut replayed) = (HashSet::new(), 0);
    for task in tasks {
        let response = task.await.unwrap().expect("every call gets the order");
        if response.metadata().get("idempotent-replayed").is_some() {
            replayed += 1;
        }
        order_ids.insert(response.into_inner().order.unwrap().order_id);
    }
    assert_eq!(order_ids.len(), 1, "every call names the same order");
    assert_eq!(replayed, CALLS - 1, "all but the first replay it");
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE idempotency_key = 'one-key'")
            .fetch_one(&shop.pool)
            .await
            .unwrap();
    assert_eq!(orders, 1);
    assert_eq!(shop.product(&product.product_id).await.stock, 10 - 1 - 2);
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}

/// One batch holding good requests and bad ones (a key reused with a different request, before
/// and within the batch; more than the stock; greedy stock 5 - 3 - 3 - 2): each gets its own
/// answer, the bad ones write nothing and keep their keys free, the good ones are created.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_inside_a_batch_fail_only_themselves() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(1 + 1 + 5).await;
    let product_id = Uuid::parse_str(&product.product_id).unwrap();
    let customer = Uuid::now_v7();
    shop.client
        .clone()
        .create_order(order_request(&product.product_id, 1, customer, "taken"))
        .await
        .unwrap();
    let holder = hold_row_lock(&shop, &product.product_id).await;
    let blocked = blocked_batch(&shop, &product.product_id).await;

    // In arrival order; the queue keeps it, so the batch's slots follow this list.
    let batch: [(&str, i32, &str); 7] = [
        ("taken", 2, "IDEMPOTENCY_KEY_REUSED"),
        ("taken", 1, "replayed"),
        ("greedy-a", 3, "created"),
        ("greedy-b", 3, "OUT_OF_STOCK"),
        ("greedy-c", 2, "created"),
        ("twice", 1, "OUT_OF_STOCK"),
        ("greedy-c", 1, "IDEMPOTENCY_KEY_REUSED"),
    ];
    let mut tasks = Vec::new();
    for (position, (key, quantity, _)) in batch.iter().enumerate() {
        let mut client = shop.client.clone();
        let request = order_request(&product.product_id, *quantity, customer, key);
        tasks.push(tokio::spawn(
            async move { client.create_order(request).await },
        ));
        let group_commit = shop.group_commit.clone();
        eventually(WAIT, "the request queued", || {
            group_commit.waiting(product_id) == position + 1
        })
        .await;
    }
    holder.commit().await.unwrap();
    blocked.await.unwrap().expect("the blocked batch's order");

    for ((key, quantity, expected), task) in batch.iter().zip(tasks) {
        let answer = task.await.unwrap();
        let got = match &answer {
            Ok(response) if response.metadata().get("idempotent-replayed").is_some() => {
                "replayed".to_owned()
            }
            Ok(_) => "created".to_owned(),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                reason(status)
            }
        };
        assert_eq!(&got, expected, "{key} x{quantity}");
    }
    let keys: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM orders ORDER BY 1")
        .fetch_all(&shop.pool)
        .await
        .unwrap();
    assert_eq!(
        keys,
        ["blocked-batch", "greedy-a", "greedy-c", "taken"],
        "refused requests keep their keys free"
    );
    assert_eq!(shop.product(&product.product_id).await.stock, 0);
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}

/// A request for a product that does not exist is its own batch and fails alone, while a batch
/// of another product goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_product_fails_alone() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(20).await;
    let unknown = Uuid::now_v7().to_string();
    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = Vec::new();
    for call in 0..20 {
        let barrier = barrier.clone();
        let mut client = shop.client.clone();
        let target = if call % 4 == 0 {
            unknown.clone()
        } else {
            product.product_id.clone()
        };
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let answer = client
                .create_order(order_request(
                    &target,
                    1,
                    Uuid::now_v7(),
                    &format!("k-{call}"),
                ))
                .await;
            (call, answer)
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            (call, Err(status)) if call % 4 == 0 => {
                assert_eq!(status.code(), Code::NotFound, "{status:?}");
                assert_eq!(reason(&status), "PRODUCT_NOT_FOUND");
            }
            (_, answer) => {
                answer.expect("orders of the existing product are created");
            }
        }
    }
    assert_eq!(shop.product(&product.product_id).await.stock, 5);
    shop.stop().await;
}

/// Waits until a batch waits for a lock in the database, then cancels its statement (SQLSTATE
/// 57014, as a statement timeout would).
async fn cancel_the_blocked_batch(shop: &TestShop) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let cancelled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
                 SELECT pg_cancel_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND query LIKE '%place_orders%'
             ) AS cancelled",
        )
        .fetch_one(&shop.pool)
        .await
        .unwrap();
        if cancelled == 1 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no batch blocked");
        tokio::time::sleep(DB_POLL).await;
    }
}

/// A batch whose call fails answers each of its requests with the mapped database status
/// (retryable UNAVAILABLE here, never a panic or a hang), writes nothing of it, and the product's
/// next batch is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_batch_fails_its_requests_with_the_mapped_status_only() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(10).await;
    let product_id = Uuid::parse_str(&product.product_id).unwrap();
    let holder = hold_row_lock(&shop, &product.product_id).await;
    let blocked = blocked_batch(&shop, &product.product_id).await;
    let mut tasks = Vec::new();
    for call in 0..5 {
        let mut client = shop.client.clone();
        let request = order_request(
            &product.product_id,
            1,
            Uuid::now_v7(),
            &format!("failed-{call}"),
        );
        tasks.push(tokio::spawn(
            async move { client.create_order(request).await },
        ));
    }
    let group_commit = shop.group_commit.clone();
    eventually(WAIT, "five requests queued", || {
        group_commit.waiting(product_id) == 5
    })
    .await;
    // The first batch fails; then the batch of five, once it waits for the lock in its turn.
    cancel_the_blocked_batch(&shop).await;
    let status = blocked.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    cancel_the_blocked_batch(&shop).await;
    for task in tasks {
        let status = task.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(reason(&status), "DATABASE_UNAVAILABLE");
        assert!(!status.message().contains("cancel"), "no database message");
    }
    holder.commit().await.unwrap();
    assert_eq!(
        shop.table_counts().await,
        (1, 0, 0),
        "nothing of them written"
    );

    shop.client
        .clone()
        .create_order(order_request(
            &product.product_id,
            1,
            Uuid::now_v7(),
            "failed-0",
        ))
        .await
        .expect("the next batch is served, and the failed key is free");
    shop.assert_no_oversell(&product.product_id).await;
    shop.stop().await;
}

/// One call of the `place_orders` function for `n` one-unit orders under new keys.
async fn place_directly(connection: &mut sqlx::PgConnection, product_id: Uuid, n: usize) {
    let keys: Vec<String> = (0..n).map(|_| Uuid::now_v7().to_string()).collect();
    let placed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM place_orders($1, $2, $3, $4, $5, $6, $7, 3600)
         WHERE outcome = 'created'",
    )
    .bind(product_id)
    .bind(vec!["plans"; n])
    .bind(&keys)
    .bind(vec![vec![0_u8]; n])
    .bind((0..n).map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(vec![1_i32; n])
    .bind((0..n).map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .fetch_one(&mut *connection)
    .await
    .unwrap();
    assert_eq!(placed, i64::try_from(n).unwrap());
}

/// A batch reads only its own orders from the orders table, even on a connection whose plans
/// were made while the table was empty (a new shop, or a flash sale's first seconds before
/// autovacuum analyzes it). Before, those cached plans read the whole table into a hash or
/// scanned it on every batch: 200 us per order after 20 000 orders in `lab bench flash-sale`.
#[tokio::test]
async fn a_batch_reads_its_own_orders_only_however_the_table_grew() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let product = shop.create_product(1_000_000).await;
    let product_id = Uuid::parse_str(&product.product_id).unwrap();
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&shop.database_url)
        .await
        .unwrap();
    // Enough calls on the empty table for the function's statements to settle on cached plans.
    for _ in 0..8 {
        place_directly(&mut connection, product_id, 1).await;
    }
    place_directly(&mut connection, product_id, 500).await;
    sqlx::query(
        "INSERT INTO orders (order_id, product_id, quantity, customer_id, status, client_id,
                             idempotency_key)
         SELECT gen_random_uuid(), $1, 1, gen_random_uuid(), 'CREATED', 'bulk', g::text
         FROM generate_series(1, 20000) AS g",
    )
    .bind(product_id)
    .execute(&mut connection)
    .await
    .unwrap();

    sqlx::query("BEGIN").execute(&mut connection).await.unwrap();
    let before = orders_read(&mut connection).await;
    place_directly(&mut connection, product_id, 64).await;
    let after = orders_read(&mut connection).await;
    sqlx::query("COMMIT")
        .execute(&mut connection)
        .await
        .unwrap();
    assert_eq!(after.0 - before.0, 0, "a batch scanned the orders table");
    let rows_read = after.1 - before.1;
    assert!(
        rows_read <= 2 * 64,
        "a batch of 64 read {rows_read} rows of orders"
    );
    shop.stop().await;
}

/// Sequential scans of orders and rows read from it (sequentially or through an index) by this
/// backend so far. Read twice inside one transaction, the difference is the transaction's own:
/// counters are only flushed between transactions.
async fn orders_read(connection: &mut sqlx::PgConnection) -> (i64, i64) {
    sqlx::query_as(
        "SELECT seq_scan, seq_tup_read + coalesce(idx_tup_fetch, 0)
         FROM pg_stat_xact_user_tables WHERE relname = 'orders'",
    )
    .fetch_one(connection)
    .await
    .unwrap()
}

/// `place_orders` runs with the planner settings its migrations gave it: no scans, hash or
/// merge joins (so every plan is a nested loop over an index, whatever the statistics), and
/// generic plans, which that makes safe, so its statements are planned once per connection
/// rather than on every batch. A later `CREATE OR REPLACE FUNCTION` without them would silently
/// drop them all.
#[tokio::test]
async fn place_orders_keeps_its_planner_settings() {
    let _machine = shared().await;
    let shop = TestShop::spawn().await;
    let settings: Vec<String> =
        sqlx::query_scalar("SELECT unnest(proconfig) FROM pg_proc WHERE proname = 'place_orders'")
            .fetch_all(&shop.pool)
            .await
            .unwrap();
    for expected in [
        "enable_seqscan=off",
        "enable_hashjoin=off",
        "enable_mergejoin=off",
        "plan_cache_mode=force_generic_plan",
    ] {
        assert!(
            settings.iter().any(|setting| setting == expected),
            "place_orders runs without {expected}: {settings:?}"
        );
    }
    shop.stop().await;
}
