//! The fault proxy itself, against a real order-svc process: each fault does what it says, the
//! counters count it, and the admin protocol drives it.

use std::time::Duration;

use lab_drill::cluster::lazy_channel;
use lab_drill::process::{Binary, ServiceProcess};
use lab_drill::proxy::{Fault, Proxy};
use lab_proto::order::v1 as pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;
use tonic::Code;

async fn shop() -> ServiceProcess {
    let url = lab_common::postgres::fresh_test_database()
        .await
        .expect("a fresh database");
    ServiceProcess::start(Binary::OrderSvc, &url, &[])
        .await
        .expect("order-svc starts")
}

fn client(url: &str) -> OrderServiceClient<tonic::transport::Channel> {
    OrderServiceClient::new(lazy_channel(url))
}

fn create_order(product_id: &str, key: &str) -> tonic::Request<pb::CreateOrderRequest> {
    let mut request = tonic::Request::new(pb::CreateOrderRequest {
        product_id: product_id.into(),
        quantity: 1,
        customer_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
    });
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    request.set_timeout(Duration::from_secs(2));
    request
}

async fn product(client: &mut OrderServiceClient<tonic::transport::Channel>) -> pb::Product {
    client
        .create_product(pb::CreateProductRequest {
            name: "proxied".into(),
            initial_stock: 100,
            max_per_customer: 0,
        })
        .await
        .expect("CreateProduct")
        .into_inner()
        .product
        .unwrap()
}

#[tokio::test]
async fn every_fault_does_what_it_says() {
    let shop = shop().await;
    let proxy = Proxy::start_seeded("127.0.0.1:0".parse().unwrap(), shop.addr().to_string(), 7)
        .await
        .unwrap();
    let handle = proxy.handle();
    let mut direct = client(&shop.url());
    let product = product(&mut direct).await;

    // Pass-through: calls work and are counted.
    let mut proxied = client(&proxy.url());
    proxied
        .create_order(create_order(&product.product_id, "pass-1"))
        .await
        .expect("a call through a clear proxy");
    assert_eq!(handle.stats().requests, 1);

    // Latency: the answer arrives after the delay.
    handle.set_fault(Fault::Latency {
        base: Duration::from_millis(400),
        jitter: Duration::from_millis(50),
    });
    let began = Instant::now();
    proxied
        .create_order(create_order(&product.product_id, "slow-1"))
        .await
        .expect("a slow call still succeeds");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(340),
        "latency not applied: {took:?}"
    );

    // Lose responses: the call fails, but the order exists (the upstream did the work), and a
    // retry with the same key replays it.
    handle.set_fault(Fault::LoseResponses { probability: 1.0 });
    let lost = proxied
        .create_order(create_order(&product.product_id, "lost-1"))
        .await
        .expect_err("the response is lost");
    assert!(
        matches!(
            lost.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{lost:?}"
    );
    eprintln!("lost response seen as {lost:?}");
    assert_eq!(handle.stats().responses_lost, 1);
    let mut lookup = tonic::Request::new(pb::LookupOrderRequest {
        idempotency_key: "lost-1".into(),
    });
    lookup.set_timeout(Duration::from_secs(2));
    let existing = direct
        .lookup_order(lookup)
        .await
        .expect("the order was committed before the response was lost")
        .into_inner()
        .order
        .unwrap();
    handle.clear();
    let replayed = proxied
        .create_order(create_order(&product.product_id, "lost-1"))
        .await
        .expect("the retry succeeds");
    assert_eq!(
        replayed
            .metadata()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(
        replayed.into_inner().order.unwrap().order_id,
        existing.order_id
    );

    // Cut after a few bytes: the connection dies before any response gets through.
    handle.set_fault(Fault::CutAfter { bytes: 20 });
    let cut = client(&proxy.url())
        .create_order(create_order(&product.product_id, "cut-1"))
        .await
        .expect_err("a cut connection fails the call");
    assert_ne!(cut.code(), Code::Ok);
    assert!(handle.stats().connections_cut >= 1);

    // Reset: every connection is reset on accept.
    handle.set_fault(Fault::Reset);
    let reset = client(&proxy.url())
        .get_product(pb::GetProductRequest {
            product_id: product.product_id.clone(),
        })
        .await
        .expect_err("a reset connection fails the call");
    // tonic reports a connection closed during its handshake as CANCELLED, a refused or reset
    // one as UNAVAILABLE.
    assert!(
        matches!(reset.code(), Code::Unavailable | Code::Cancelled),
        "{reset:?}"
    );
    assert!(handle.stats().connections_reset >= 1);

    // Unavailable: answered by the proxy itself, with the code the client sees.
    handle.set_fault(Fault::Unavailable {
        pushback: Some(Duration::from_millis(100)),
    });
    let before = handle.stats().unavailable_answers;
    let unavailable = client(&proxy.url())
        .get_product(pb::GetProductRequest {
            product_id: product.product_id.clone(),
        })
        .await
        .expect_err("UNAVAILABLE");
    assert_eq!(unavailable.code(), Code::Unavailable);
    assert!(
        unavailable.message().contains("fault proxy"),
        "{unavailable:?}"
    );
    assert_eq!(handle.stats().unavailable_answers, before + 1);

    // Black hole: the call hangs until its deadline.
    handle.set_fault(Fault::Blackhole);
    let mut request = tonic::Request::new(pb::GetProductRequest {
        product_id: product.product_id.clone(),
    });
    request.set_timeout(Duration::from_millis(300));
    let began = Instant::now();
    let hole = client(&proxy.url())
        .get_product(request)
        .await
        .expect_err("no answer");
    // tonic's own client-side timeout reports CANCELLED "Timeout expired".
    assert!(
        matches!(hole.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{hole:?}"
    );
    assert!(began.elapsed() >= Duration::from_millis(290));

    // Refuse: nobody listens; afterwards the proxy listens again on the same address.
    handle.set_fault(Fault::Refuse);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = tokio::net::TcpStream::connect(proxy.local_addr()).await;
    assert_eq!(
        refused.expect_err("refused").kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    handle.clear();
    tokio::time::sleep(Duration::from_millis(100)).await;
    client(&proxy.url())
        .get_product(pb::GetProductRequest {
            product_id: product.product_id.clone(),
        })
        .await
        .expect("the proxy listens again after refuse");

    // Nothing was lost or duplicated on the way: exactly the orders that were committed.
    let orders = direct
        .list_orders(pb::ListOrdersRequest {
            product_id: product.product_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    let keys: Vec<&str> = orders.iter().map(|o| o.idempotency_key.as_str()).collect();
    assert!(keys.contains(&"pass-1") && keys.contains(&"slow-1") && keys.contains(&"lost-1"));
    assert_eq!(keys.iter().filter(|k| **k == "lost-1").count(), 1);
    eprintln!("{}", handle.stats());
}

#[tokio::test]
async fn the_admin_port_drives_the_proxy() {
    let shop = shop().await;
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), shop.addr().to_string())
        .await
        .unwrap();
    let admin = proxy
        .serve_admin("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    let mut replies = BufReader::new(reader).lines();
    let mut say = async |line: &str| {
        writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        replies.next_line().await.unwrap().unwrap()
    };
    assert_eq!(
        say("latency 200ms 50ms").await,
        "ok fault=latency 200ms 50ms"
    );
    assert_eq!(
        proxy.handle().fault(),
        Fault::Latency {
            base: Duration::from_millis(200),
            jitter: Duration::from_millis(50)
        }
    );
    assert_eq!(say("lose 0.5").await, "ok fault=lose 0.5");
    assert_eq!(say("cut 100").await, "ok fault=cut 100");
    assert_eq!(say("refuse").await, "ok fault=refuse");
    assert_eq!(say("unavailable").await, "ok fault=unavailable");
    assert_eq!(say("blackhole").await, "ok fault=blackhole");
    assert_eq!(say("reset").await, "ok fault=reset");
    assert!(say("explode").await.starts_with("err unknown fault"));
    assert_eq!(say("clear").await, "ok fault=none");
    assert!(proxy.handle().fault().is_none());
    let status = say("status").await;
    assert!(status.starts_with("ok fault=none accepted="), "{status}");
    assert!(say("help").await.contains("latency BASE [JITTER]"));
}
