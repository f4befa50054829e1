//! The process module against the real order-svc binary: start, SIGTERM (exit 0 after
//! draining), `kill -9`, restart on the same port and database, and terminating a database's
//! connections.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use lab_drill::cluster::lazy_channel;
use lab_drill::process::{Binary, ServiceProcess, terminate_connections};
use lab_proto::order::v1 as pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;

#[tokio::test]
async fn start_kill_restart_terminate() {
    let database = lab_common::postgres::scratch_database().await.unwrap();
    let mut shop = ServiceProcess::start(
        Binary::OrderSvc,
        &database,
        &[("METRICS_ADDR", "127.0.0.1:0")],
    )
    .await
    .expect("order-svc starts");
    let addr = shop.addr();
    assert_ne!(addr.port(), 0, "the chosen port is read from the log");
    let metrics = shop
        .metrics_addr()
        .expect("the /metrics address is read from the log");
    let mut client = OrderServiceClient::new(lazy_channel(&shop.url()));
    let product = client
        .create_product(pb::CreateProductRequest {
            name: "survivor".into(),
            initial_stock: 3,
            max_per_customer: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();

    // kill -9: the process dies by the signal, without draining.
    let killed = shop.kill().await.unwrap();
    assert_eq!(killed.signal(), Some(9), "{killed:?}");
    assert!(!shop.is_running());

    // Restart: same address (and /metrics address), same database, the data is still there.
    shop.restart().await.expect("order-svc restarts");
    assert_eq!(shop.addr(), addr);
    // The metrics line may follow `listening on` by a moment.
    for _ in 0..50 {
        if shop.metrics_addr().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shop.metrics_addr(), Some(metrics));
    assert_eq!(shop.starts(), 2);
    let mut client = OrderServiceClient::new(lazy_channel(&shop.url()));
    let read = client
        .get_product(pb::GetProductRequest {
            product_id: product.product_id.clone(),
        })
        .await
        .expect("the restarted service answers on the same port")
        .into_inner()
        .product
        .unwrap();
    assert_eq!(read.stock, 3);

    // Its pool's connections can be terminated; the next calls still work.
    let terminated = terminate_connections(&database).await.unwrap();
    assert!(terminated > 0, "order-svc holds database connections");
    let mut answered = false;
    for _ in 0..20 {
        let call = client
            .get_product(pb::GetProductRequest {
                product_id: product.product_id.clone(),
            })
            .await;
        if call.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the pool did not recover");

    // SIGTERM: drains and exits 0.
    let status = shop.terminate(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "{status:?}\n{}", shop.log_tail(20));
    assert!(shop.logs().iter().any(|line| line.contains("listening on")));
}
