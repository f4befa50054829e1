use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::Frame;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::Layer;
use tower_test::mock;

use super::*;
use crate::errors::{reason_of, surely_unsent, with_reason};
use crate::test_support::{MockHandle, MockService, body_bytes, request, status};

fn spawn() -> (mock::Spawn<Unary<MockService>>, MockHandle) {
    mock::spawn_with(|m| UnaryLayer::new(1024).layer(m))
}

fn with_trailers(data: &'static [u8], trailers: HeaderMap) -> Response<Body> {
    let frames: Vec<Result<Frame<Bytes>, Status>> = vec![
        Ok(Frame::data(Bytes::from_static(data))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::new(Body::new(http_body_util::StreamBody::new(
        tokio_stream::iter(frames),
    )))
}

async fn run(
    response: Result<Response<Body>, crate::BoxError>,
) -> Result<Response<Body>, crate::BoxError> {
    let (mut svc, mut handle) = spawn();
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request(None));
    let (_req, respond) = handle.next_request().await.unwrap();
    match response {
        Ok(r) => respond.send_response(r),
        Err(e) => respond.send_error(e),
    }
    fut.await
}

#[tokio::test]
async fn trailers_only_errors_become_err_with_details() {
    let sent = with_reason(Code::NotFound, "PRODUCT_NOT_FOUND", "no such product", []);
    let response: Response<Body> = sent.into_http();
    let err = run(Ok(response)).await.unwrap_err();
    assert_eq!(status(&err).code(), Code::NotFound);
    assert_eq!(status(&err).message(), "no such product");
    assert_eq!(
        reason_of(status(&err)).as_deref(),
        Some("PRODUCT_NOT_FOUND")
    );
}

#[tokio::test]
async fn errors_in_trailers_become_err_with_metadata() {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "14".parse().unwrap());
    trailers.insert("grpc-retry-pushback-ms", "20".parse().unwrap());
    let err = run(Ok(with_trailers(b"", trailers))).await.unwrap_err();
    assert_eq!(status(&err).code(), Code::Unavailable);
    assert_eq!(
        status(&err)
            .metadata()
            .get("grpc-retry-pushback-ms")
            .unwrap(),
        "20"
    );
}

#[tokio::test]
async fn ok_responses_keep_body_and_trailers() {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let response = run(Ok(with_trailers(b"payload", trailers.clone())))
        .await
        .unwrap();
    let collected = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    assert_eq!(collected.trailers(), Some(&trailers));
    assert_eq!(&collected.to_bytes()[..], b"payload");
}

#[tokio::test]
async fn large_ok_responses_pass_through_unbuffered() {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let big: &'static [u8] = Box::leak(vec![7u8; 4096].into_boxed_slice());
    let response = run(Ok(with_trailers(big, trailers))).await.unwrap();
    assert_eq!(body_bytes(response.into_body()).await.len(), 4096);
}

#[tokio::test]
async fn http_errors_without_grpc_status_map_per_spec() {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    let err = run(Ok(response)).await.unwrap_err();
    assert_eq!(status(&err).code(), Code::Unavailable);
}

#[tokio::test]
async fn transport_errors_become_statuses_keeping_their_source() {
    let err = run(Err(Box::new(tonic::ConnectError(
        "connection refused".into(),
    ))))
    .await
    .unwrap_err();
    assert_eq!(status(&err).code(), Code::Unavailable);
    assert!(surely_unsent(&err));
}
