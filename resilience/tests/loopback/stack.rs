use std::time::{Duration, Instant};

use http::HeaderValue;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use resilience::errors::{RETRY_STOP_KEY, is_circuit_open, reason, reason_of, stop};
use resilience::metadata::decode_timeout;
use resilience::{BreakerState, ResilientChannel};
use tonic::Code;

use crate::common::{Step, TestServer, config, create_order};

fn timeout_of(text: &str) -> Duration {
    decode_timeout(&HeaderValue::from_str(text).unwrap()).unwrap()
}

#[tokio::test]
async fn retries_keep_the_key_and_count_previous_attempts() {
    let server = TestServer::start().await;
    server
        .script
        .push([Step::fail(Code::Unavailable), Step::fail(Code::Aborted)]);
    let (stack, _breaker) = ResilientChannel::builder(config()).build(server.channel());
    let stats = stack.retry_stats();
    let mut client = OrderServiceClient::new(stack);

    let response = client
        .create_order(create_order(Some("key-1")))
        .await
        .unwrap();
    assert_eq!(
        response.into_inner().order.unwrap().idempotency_key,
        "key-1"
    );

    let seen = server.script.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.key.as_deref() == Some("key-1")));
    let previous: Vec<_> = seen
        .iter()
        .map(|s| s.previous_attempts.as_deref())
        .collect();
    assert_eq!(previous, [None, Some("1"), Some("2")]);
    let timeouts: Vec<_> = seen
        .iter()
        .map(|s| timeout_of(s.grpc_timeout.as_deref().unwrap()))
        .collect();
    assert!(timeouts[0] <= Duration::from_secs(2));
    assert!(
        timeouts.windows(2).all(|w| w[1] < w[0]),
        "remaining budget shrinks: {timeouts:?}"
    );
    assert_eq!(stats.retries(), 2);
}

#[tokio::test]
async fn client_errors_arrive_intact_and_are_not_retried() {
    let server = TestServer::start().await;
    server
        .script
        .set_default(Step::fail(Code::FailedPrecondition));
    let (stack, breaker) = ResilientChannel::builder(config()).build(server.channel());
    let mut client = OrderServiceClient::new(stack);
    for _ in 0..8 {
        let status = client
            .create_order(create_order(Some("k")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "scripted");
        assert_eq!(reason_of(&status).as_deref(), Some("SCRIPTED"));
    }
    assert_eq!(server.script.calls(), 8);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test]
async fn the_breaker_opens_and_then_fails_fast_without_the_network() {
    let server = TestServer::start().await;
    server.script.set_default(Step::fail(Code::Unavailable));
    let mut cfg = config();
    cfg.retry.max_attempts = 1;
    cfg.breaker.consecutive_failures = 3;
    let (stack, breaker) = ResilientChannel::builder(cfg).build(server.channel());
    let mut client = OrderServiceClient::new(stack);
    for _ in 0..3 {
        let status = client
            .create_order(create_order(Some("k")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!is_circuit_open(&status));
    }
    assert_eq!(breaker.state(), BreakerState::Open);

    let started = Instant::now();
    let status = client
        .create_order(create_order(Some("k")))
        .await
        .unwrap_err();
    assert!(is_circuit_open(&status), "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some(reason::CIRCUIT_OPEN));
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(server.script.calls(), 3, "the open breaker sent nothing");

    breaker.reset();
    server.script.set_default(Step::ok());
    client.create_order(create_order(Some("k"))).await.unwrap();
    assert_eq!(breaker.stats().rejections, 1);
}

#[tokio::test]
async fn slow_attempts_time_out_and_are_retried_inside_the_deadline() {
    let server = TestServer::start().await;
    let slow = Step::ok().after(Duration::from_millis(400));
    server.script.push([slow.clone(), slow]);
    let mut cfg = config();
    cfg.attempt_timeout = Duration::from_millis(100);
    let (stack, _) = ResilientChannel::builder(cfg).build(server.channel());
    let mut client = OrderServiceClient::new(stack);
    let started = Instant::now();
    client.create_order(create_order(Some("k"))).await.unwrap();
    assert_eq!(server.script.calls(), 3);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(1000),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn the_deadline_ends_the_call_whatever_is_left_to_try() {
    let server = TestServer::start().await;
    server
        .script
        .set_default(Step::ok().after(Duration::from_secs(2)));
    let mut cfg = config();
    cfg.deadline = Duration::from_millis(250);
    cfg.attempt_timeout = Duration::from_millis(100);
    cfg.retry.max_attempts = 10;
    let (stack, _) = ResilientChannel::builder(cfg).build(server.channel());
    let mut client = OrderServiceClient::new(stack);
    let started = Instant::now();
    let status = client
        .create_order(create_order(Some("k")))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(
        reason_of(&status).as_deref(),
        Some(reason::DEADLINE_EXCEEDED)
    );
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(450),
        "{elapsed:?}"
    );
    assert!(
        (2..=3).contains(&server.script.calls()),
        "{} attempts",
        server.script.calls()
    );
}

#[tokio::test]
async fn the_callers_grpc_timeout_shortens_the_deadline() {
    let server = TestServer::start().await;
    server
        .script
        .set_default(Step::ok().after(Duration::from_secs(2)));
    let mut cfg = config();
    cfg.attempt_timeout = Duration::from_secs(1);
    let (stack, _) = ResilientChannel::builder(cfg).build(server.channel());
    let mut client = OrderServiceClient::new(stack);
    let mut request = create_order(Some("k"));
    request.set_timeout(Duration::from_millis(120));
    let started = Instant::now();
    let status = client.create_order(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let sent = timeout_of(server.script.seen()[0].grpc_timeout.as_deref().unwrap());
    assert!(sent <= Duration::from_millis(120), "{sent:?}");
}

#[tokio::test]
async fn n_plus_one_concurrent_calls_shed_exactly_one_at_once() {
    let server = TestServer::start().await;
    server
        .script
        .set_default(Step::ok().after(Duration::from_millis(300)));
    let mut cfg = config();
    cfg.attempt_timeout = Duration::from_secs(1);
    cfg.concurrency_limit = 2;
    cfg.retry.max_attempts = 1;
    let (stack, breaker) = ResilientChannel::builder(cfg).build(server.channel());
    let client = OrderServiceClient::new(stack);
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = client
                    .create_order(create_order(Some(&format!("k{i}"))))
                    .await;
                (result, started.elapsed())
            })
        })
        .collect();
    let mut shed = 0;
    for call in calls {
        let (result, elapsed) = call.await.unwrap();
        if let Err(status) = result {
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert_eq!(reason_of(&status).as_deref(), Some(reason::LOAD_SHED));
            assert!(
                elapsed < Duration::from_millis(150),
                "shed at once, not queued: {elapsed:?}"
            );
            shed += 1;
        }
    }
    assert_eq!(shed, 1);
    assert_eq!(server.script.calls(), 2);
    assert_eq!(
        breaker.stats().failures,
        0,
        "local shedding is not the server's fault"
    );
}

#[tokio::test]
async fn a_lost_response_is_retried_only_with_an_idempotency_key() {
    let server = TestServer::start().await;
    server
        .faults
        .set_from_str("CreateOrder:drop_response")
        .unwrap();
    let (stack, _) = ResilientChannel::builder(config()).build(server.channel());
    let stats = stack.retry_stats();
    let mut client = OrderServiceClient::new(stack);

    let status = client.create_order(create_order(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.metadata().get(RETRY_STOP_KEY).unwrap(),
        stop::NOT_IDEMPOTENT
    );
    assert_eq!(
        server.script.calls(),
        1,
        "the work may be done: never repeated without a key"
    );
    assert_eq!(stats.retries(), 0);

    let status = client
        .create_order(create_order(Some("k-9")))
        .await
        .unwrap_err();
    assert_eq!(
        status.metadata().get(RETRY_STOP_KEY).unwrap(),
        stop::MAX_ATTEMPTS
    );
    let keyed: Vec<_> = server.script.seen().into_iter().skip(1).collect();
    assert_eq!(keyed.len(), 3);
    assert!(keyed.iter().all(|s| s.key.as_deref() == Some("k-9")));
}

#[tokio::test]
async fn a_refused_connection_is_retried_even_without_a_key() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let (stack, breaker) = ResilientChannel::builder(config()).build(channel);
    let stats = stack.retry_stats();
    let mut client = OrderServiceClient::new(stack);
    let status = client.create_order(create_order(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(stats.retries(), 2, "never sent, so safe to resend");
    assert_eq!(
        breaker.stats().failures,
        3,
        "an unreachable server is a server failure"
    );
}

#[tokio::test]
async fn a_balanced_channel_spreads_calls_over_instances() {
    let (a, b) = (TestServer::start().await, TestServer::start().await);
    let (stack, _) = ResilientChannel::builder(config()).balance([a.endpoint(), b.endpoint()]);
    let mut client = OrderServiceClient::new(stack);
    for i in 0..10 {
        client
            .create_order(create_order(Some(&format!("k{i}"))))
            .await
            .unwrap();
    }
    assert_eq!(a.script.calls() + b.script.calls(), 10);
}

#[tokio::test]
async fn server_pushback_is_honoured_over_the_wire() {
    let server = TestServer::start().await;
    server
        .script
        .push([Step::fail(Code::ResourceExhausted).pushback("150")]);
    let (stack, _) = ResilientChannel::builder(config()).build(server.channel());
    let mut client = OrderServiceClient::new(stack);
    let started = Instant::now();
    client.create_order(create_order(Some("k"))).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(server.script.calls(), 2);

    server
        .script
        .push([Step::fail(Code::ResourceExhausted).pushback("-1")]);
    let status = client
        .create_order(create_order(Some("k")))
        .await
        .unwrap_err();
    assert_eq!(
        status.metadata().get(RETRY_STOP_KEY).unwrap(),
        stop::PUSHBACK
    );
    assert_eq!(server.script.calls(), 3);
}
