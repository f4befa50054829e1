use http::{Request, Response};
use tonic::Code;
use tonic::body::Body;
use tower::Layer;
use tower_test::mock;

use super::*;
use crate::errors::{reason, reason_of, surely_unsent};
use crate::test_support::{ok, request, status};

#[tokio::test]
async fn the_call_beyond_the_limit_fails_at_once_and_is_never_sent() {
    let (mock, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let layered = LoadShedLayer::new(2).layer(mock);
    let mut clones: Vec<_> = (0..3).map(|_| mock::Spawn::new(layered.clone())).collect();

    let mut in_flight = Vec::new();
    for svc in &mut clones[..2] {
        assert!(svc.poll_ready().is_ready());
        in_flight.push(svc.call(request(None)));
    }
    assert_eq!(layered.in_flight(), 2);

    // The third: ready at once (never queued), then shed without reaching the inner service.
    assert!(clones[2].poll_ready().is_ready());
    let err = clones[2].call(request(None)).await.unwrap_err();
    assert_eq!(status(&err).code(), Code::ResourceExhausted);
    assert_eq!(reason_of(status(&err)).as_deref(), Some(reason::LOAD_SHED));
    assert!(surely_unsent(&err));

    let mut responders = Vec::new();
    for _ in 0..2 {
        responders.push(handle.next_request().await.unwrap().1);
    }
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(10), handle.next_request())
            .await
            .is_err(),
        "the shed call must not reach the inner service"
    );

    // A finished call frees its slot.
    responders.pop().unwrap().send_response(ok());
    in_flight.pop().unwrap().await.unwrap();
    assert_eq!(layered.in_flight(), 1);
    assert!(clones[2].poll_ready().is_ready());
    let fut = clones[2].call(request(None));
    handle.next_request().await.unwrap().1.send_response(ok());
    fut.await.unwrap();
}
