//! Each fault kind as a plain generated client over a bare channel sees it.

use std::time::{Duration, Instant};

use lab_proto::order::v1::order_service_client::OrderServiceClient;
use resilience::errors::{reason, reason_of};
use resilience::{FaultPlan, ResilientChannel};
use tonic::Code;

use crate::common::{TestServer, config, create_order, get_order};

#[tokio::test]
async fn delay_slows_the_call_down() {
    let server = TestServer::start().await;
    server.faults.set_from_str("*:delay=200ms").unwrap();
    let mut client = server.bare_client();
    let started = Instant::now();
    client.create_order(create_order(Some("k"))).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(server.script.calls(), 1);
}

#[tokio::test]
async fn error_answers_the_chosen_code_without_running_the_handler() {
    let server = TestServer::start().await;
    server
        .faults
        .set_from_str("/lab.order.v1.OrderService/CreateOrder:error=RESOURCE_EXHAUSTED")
        .unwrap();
    let mut client = server.bare_client();
    let status = client
        .create_order(create_order(Some("k")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason_of(&status).as_deref(), Some(reason::FAULT_INJECTED));
    assert_eq!(server.script.calls(), 0);
    // The filter spares other RPCs.
    client.get_order(get_order()).await.unwrap();
    assert_eq!(server.script.calls(), 1);
}

#[tokio::test]
async fn drop_response_commits_the_work_and_answers_unavailable() {
    let server = TestServer::start().await;
    server
        .faults
        .set_from_str("CreateOrder:drop_response:1.0")
        .unwrap();
    let mut client = server.bare_client();
    for _ in 0..3 {
        let status = client
            .create_order(create_order(Some("k")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    assert_eq!(server.script.calls(), 3, "the handler ran every time");
    assert_eq!(server.faults.injected(), 3);
}

#[tokio::test]
async fn black_hole_commits_the_work_and_the_client_times_out() {
    let server = TestServer::start().await;
    server
        .faults
        .set_from_str("CreateOrder:black_hole")
        .unwrap();
    let mut client = server.bare_client();
    let waited = tokio::time::timeout(
        Duration::from_millis(300),
        client.create_order(create_order(Some("k"))),
    )
    .await;
    assert!(waited.is_err(), "no answer ever came");
    assert_eq!(server.script.calls(), 1);

    // Through the stack, the attempt timeout turns it into a retryable DEADLINE_EXCEEDED.
    let mut cfg = config();
    cfg.attempt_timeout = Duration::from_millis(100);
    cfg.retry.max_attempts = 2;
    let (stack, _) = ResilientChannel::builder(cfg).build(server.channel());
    let status = OrderServiceClient::new(stack)
        .create_order(create_order(Some("k")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(reason_of(&status).as_deref(), Some(reason::ATTEMPT_TIMEOUT));
    assert_eq!(server.script.calls(), 3);
}

#[tokio::test]
async fn faults_change_while_the_server_runs() {
    let server = TestServer::start().await;
    let mut client = server.bare_client();
    client.create_order(create_order(None)).await.unwrap();
    server.faults.set(
        "CreateOrder:error=INTERNAL:1;CreateOrder:error=ABORTED"
            .parse::<FaultPlan>()
            .unwrap(),
    );
    let status = client.create_order(create_order(None)).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Internal,
        "the first matching outcome wins"
    );
    server
        .faults
        .set_from_str("CreateOrder:error=INTERNAL:0")
        .unwrap();
    client.create_order(create_order(None)).await.unwrap();
    server.faults.clear();
    client.create_order(create_order(None)).await.unwrap();
    assert_eq!(server.script.calls(), 3);
}

#[tokio::test]
async fn the_rpc_filter_matches_method_names_and_full_paths() {
    let server = TestServer::start().await;
    server
        .faults
        .set_from_str("GetOrder:error=NOT_FOUND")
        .unwrap();
    let mut client = server.bare_client();
    client.create_order(create_order(None)).await.unwrap();
    assert_eq!(
        client.get_order(get_order()).await.unwrap_err().code(),
        Code::NotFound
    );
    server
        .faults
        .set_from_str("/lab.order.v1.OrderService/CreateOrder:error=NOT_FOUND")
        .unwrap();
    client.get_order(get_order()).await.unwrap();
    let rpcs: Vec<_> = server.script.seen().iter().map(|s| s.rpc).collect();
    assert_eq!(rpcs, ["CreateOrder", "GetOrder"]);
}
