use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;
use tower::Layer;
use tower_test::mock;

use super::*;
use crate::errors::{reason, reason_of};
use crate::metadata::{GRPC_TIMEOUT, encode_timeout};
use crate::test_support::{MockHandle, MockService, failure, ok, request, status};

fn spawn(budget: Duration) -> (mock::Spawn<Deadline<MockService>>, MockHandle) {
    mock::spawn_with(|m| DeadlineLayer::new(budget).layer(m))
}

#[tokio::test(start_paused = true)]
async fn budget_is_the_smaller_of_config_and_incoming_grpc_timeout() {
    for (config, incoming, expected) in [
        (
            Duration::from_secs(2),
            Some(Duration::from_millis(500)),
            Duration::from_millis(500),
        ),
        (
            Duration::from_secs(1),
            Some(Duration::from_secs(5)),
            Duration::from_secs(1),
        ),
        (Duration::from_millis(700), None, Duration::from_millis(700)),
    ] {
        let (mut svc, mut handle) = spawn(config);
        let mut req = request(None);
        if let Some(t) = incoming {
            req.headers_mut().insert(GRPC_TIMEOUT, encode_timeout(t));
        }
        assert!(svc.poll_ready().is_ready());
        let started = Instant::now();
        let fut = svc.call(req);
        let (seen, respond) = handle.next_request().await.unwrap();
        let deadline = seen.extensions().get::<CallDeadline>().copied().unwrap();
        assert_eq!(deadline.budget(), expected);
        assert_eq!(deadline.at(), started + expected);
        assert_eq!(seen.headers()[GRPC_TIMEOUT], encode_timeout(expected));
        respond.send_response(ok());
        fut.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_fails_deadline_exceeded_exactly_at_the_deadline() {
    let (mut svc, mut handle) = spawn(Duration::from_millis(250));
    assert!(svc.poll_ready().is_ready());
    let started = Instant::now();
    let fut = svc.call(request(None));
    let (_req, _respond_never) = handle.next_request().await.unwrap();
    let err = fut.await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    assert_eq!(status(&err).code(), Code::DeadlineExceeded);
    assert_eq!(
        reason_of(status(&err)).as_deref(),
        Some(reason::DEADLINE_EXCEEDED)
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_cancel_at_the_deadline_reads_as_deadline_exceeded() {
    let (mut svc, mut handle) = spawn(Duration::from_millis(100));
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request(None));
    let (_req, respond) = handle.next_request().await.unwrap();
    tokio::time::advance(Duration::from_millis(100)).await;
    respond.send_error(failure(Code::Cancelled));
    let err = fut.await.unwrap_err();
    assert_eq!(
        reason_of(status(&err)).as_deref(),
        Some(reason::DEADLINE_EXCEEDED)
    );
}

#[tokio::test(start_paused = true)]
async fn errors_before_the_deadline_pass_through_unchanged() {
    let (mut svc, mut handle) = spawn(Duration::from_secs(1));
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request(None));
    let (_req, respond) = handle.next_request().await.unwrap();
    respond.send_error(failure(Code::Cancelled));
    assert_eq!(status(&fut.await.unwrap_err()).code(), Code::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn an_outer_deadline_can_only_shorten_the_budget() {
    let (mut svc, mut handle) = spawn(Duration::from_secs(2));
    let mut req = request(None);
    let outer = CallDeadline::after(Duration::from_millis(300));
    req.extensions_mut().insert(outer);
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(req);
    let (seen, respond) = handle.next_request().await.unwrap();
    assert_eq!(
        seen.extensions().get::<CallDeadline>().unwrap().at(),
        outer.at()
    );
    respond.send_response(ok());
    fut.await.unwrap();
}
