//! `/metrics` parses as Prometheus text and its counters move with the traffic; `/healthz`
//! reports readiness.

use std::net::SocketAddr;

use prometheus_parse::{Sample, Scrape, Value};
use uuid::Uuid;

use crate::helpers::{TestShop, WAIT, eventually, order_request, retried_order_request, shared};

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    Scrape::parse(lines)
        .expect("Prometheus text format")
        .samples
}

/// The value of a counter sample with these labels (0 when absent: counters start at zero).
fn counter(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| sample.metric == name)
        .filter(|sample| labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v)))
        .map(|sample| match sample.value {
            Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => value,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn counters_move_with_the_traffic() {
    let _machine = shared().await;
    let shop = TestShop::spawn_with(|config| {
        config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.metrics_sample_interval = std::time::Duration::from_millis(50);
    })
    .await;
    let metrics_addr = shop.metrics_addr.expect("metrics endpoint bound");
    let health = reqwest::get(format!("http://{metrics_addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // A flag set while the listener connects would be dropped by its connecting.
    let flags = shop.sold_out.clone();
    eventually(WAIT, "listening", || flags.is_listening()).await;
    // The recorder is process-wide and other tests run in parallel: compare before and after.
    let before = scrape(metrics_addr).await;
    // Two units: the key reuse and the first refusal happen while the product is not sold out
    // yet, so the database answers them (a sold-out product refuses first attempts from memory).
    let product = shop.create_product(2).await;
    let customer = Uuid::now_v7();
    let mut client = shop.client.clone();
    client
        .create_order(order_request(&product.product_id, 1, customer, "m-1"))
        .await
        .unwrap();
    // The re-send is marked as one, as API.md asks of clients.
    client
        .create_order(retried_order_request(
            &product.product_id,
            1,
            customer,
            "m-1",
            1,
        ))
        .await
        .unwrap();
    client
        .create_order(order_request(&product.product_id, 2, customer, "m-1"))
        .await
        .unwrap_err();
    client
        .create_order(order_request(&product.product_id, 2, customer, "m-2"))
        .await
        .unwrap_err();
    // The last unit: the product is sold out, and the next first attempt is refused from memory.
    client
        .create_order(order_request(&product.product_id, 1, customer, "m-3"))
        .await
        .unwrap();
    client
        .create_order(order_request(&product.product_id, 1, customer, "m-4"))
        .await
        .unwrap_err();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let after = scrape(metrics_addr).await;

    let delta = |name: &str, labels: &[(&str, &str)]| {
        counter(&after, name, labels) - counter(&before, name, labels)
    };
    assert!(delta("order_orders_created_total", &[]) >= 1.0);
    assert!(delta("order_idempotent_replays_total", &[]) >= 1.0);
    assert!(delta("order_out_of_stock_total", &[]) >= 1.0);
    assert!(delta("order_idempotency_key_reuse_total", &[]) >= 1.0);
    assert!(delta("order_sold_out_fast_path_total", &[]) >= 1.0);
    assert!(delta("order_batches_total", &[]) >= 5.0);
    assert!(
        after
            .iter()
            .any(|sample| sample.metric == "order_batch_size"
                && matches!(sample.value, Value::Histogram(_))),
        "the batch size is a histogram"
    );
    assert!(
        after
            .iter()
            .any(|sample| sample.metric == "order_stock_listener_connected"),
        "the listener's state is exported"
    );
    let create_order = [
        ("grpc_service", "lab.order.v1.OrderService"),
        ("grpc_method", "CreateOrder"),
    ];
    let ok = [create_order[0], create_order[1], ("grpc_code", "OK")];
    let refused = [
        create_order[0],
        create_order[1],
        ("grpc_code", "FailedPrecondition"),
    ];
    assert!(delta("grpc_server_handled_total", &ok) >= 2.0);
    assert!(delta("grpc_server_handled_total", &refused) >= 2.0);
    assert!(
        after
            .iter()
            .any(|sample| sample.metric == "grpc_server_handling_seconds"
                && matches!(sample.value, Value::Histogram(_))),
        "latency is a histogram"
    );
    assert_eq!(
        counter(
            &after,
            "order_product_stock",
            &[("product_id", &product.product_id)]
        ),
        0.0
    );
    assert!(after.iter().any(|s| s.metric == "order_product_stock"
        && s.labels.get("product_id") == Some(product.product_id.as_str())));
    assert!(after.iter().any(|s| s.metric == "db_pool_connections"));
    shop.stop().await;
}

/// The families issue 11 added are described (HELP) and exist before their first event.
#[tokio::test]
async fn the_group_commit_and_sold_out_families_have_help_text() {
    let _machine = shared().await;
    let shop = TestShop::spawn_with(|config| {
        config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let metrics_addr = shop.metrics_addr.expect("metrics endpoint bound");
    let body = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "order_batches_total",
        "order_sold_out_fast_path_total",
        "order_customer_limit_total",
        "order_stock_listener_connected",
        "order_stock_listener_disconnects_total",
        "order_stock_notifications_total",
    ] {
        assert!(
            body.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
        assert!(
            body.lines().any(|line| line.starts_with(family)),
            "{family} is not registered"
        );
    }
    shop.stop().await;
}
