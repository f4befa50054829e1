use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;
use tower::Layer;
use tower_test::mock;

use super::*;
use crate::errors::{reason, reason_of};
use crate::metadata::{GRPC_TIMEOUT, decode_timeout};
use crate::test_support::{MockHandle, MockService, failure, ok, request, status};

fn spawn(timeout: Duration) -> (mock::Spawn<AttemptTimeout<MockService>>, MockHandle) {
    mock::spawn_with(|m| AttemptTimeoutLayer::new(timeout).layer(m))
}

#[tokio::test(start_paused = true)]
async fn an_attempt_times_out_with_a_retryable_reason() {
    let (mut svc, mut handle) = spawn(Duration::from_millis(300));
    assert!(svc.poll_ready().is_ready());
    let started = Instant::now();
    let fut = svc.call(request(None));
    let (seen, _never) = handle.next_request().await.unwrap();
    assert!(
        seen.headers().get(GRPC_TIMEOUT).is_none(),
        "no deadline, nothing to send"
    );
    let err = fut.await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    assert_eq!(status(&err).code(), Code::DeadlineExceeded);
    assert_eq!(
        reason_of(status(&err)).as_deref(),
        Some(reason::ATTEMPT_TIMEOUT)
    );
    assert!(crate::errors::is_retryable_code(status(&err).code()));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_caps_the_attempt_and_is_sent_as_grpc_timeout() {
    let (mut svc, mut handle) = spawn(Duration::from_millis(300));
    let deadline = CallDeadline::after(Duration::from_secs(2));
    tokio::time::advance(Duration::from_millis(1900)).await;
    let mut req = request(None);
    req.extensions_mut().insert(deadline);
    assert!(svc.poll_ready().is_ready());
    let started = Instant::now();
    let fut = svc.call(req);
    let (seen, _never) = handle.next_request().await.unwrap();
    assert_eq!(
        decode_timeout(&seen.headers()[GRPC_TIMEOUT]),
        Some(Duration::from_millis(100)),
        "the remaining overall budget, not the attempt timeout"
    );
    let err = fut.await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(
        reason_of(status(&err)).as_deref(),
        Some(reason::DEADLINE_EXCEEDED)
    );
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_is_refreshed_per_attempt() {
    let (mut svc, mut handle) = spawn(Duration::from_millis(300));
    let deadline = CallDeadline::after(Duration::from_secs(2));
    let mut seen_timeouts = Vec::new();
    for _ in 0..2 {
        let mut req = request(None);
        req.headers_mut()
            .insert(GRPC_TIMEOUT, "2S".parse().unwrap());
        req.extensions_mut().insert(deadline);
        assert!(svc.poll_ready().is_ready());
        let fut = svc.call(req);
        let (seen, respond) = handle.next_request().await.unwrap();
        seen_timeouts.push(decode_timeout(&seen.headers()[GRPC_TIMEOUT]).unwrap());
        respond.send_response(ok());
        fut.await.unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
    }
    assert_eq!(
        seen_timeouts,
        [Duration::from_secs(2), Duration::from_millis(1500)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_cancel_at_the_attempt_deadline_is_an_attempt_timeout() {
    let (mut svc, mut handle) = spawn(Duration::from_millis(50));
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request(None));
    let (_req, respond) = handle.next_request().await.unwrap();
    tokio::time::advance(Duration::from_millis(50)).await;
    respond.send_error(failure(Code::Cancelled));
    let err = fut.await.unwrap_err();
    assert_eq!(
        reason_of(status(&err)).as_deref(),
        Some(reason::ATTEMPT_TIMEOUT)
    );
}
