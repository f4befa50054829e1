//! Helpers shared by the unit tests.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tonic::{Code, Status};

use crate::BoxError;

pub(crate) const PATH: &str = "/lab.order.v1.OrderService/CreateOrder";

/// A unary request with a small body and, optionally, an idempotency key.
pub(crate) fn request(key: Option<&str>) -> Request<Body> {
    let mut req = Request::builder()
        .method("POST")
        .uri(format!("http://svc{PATH}"))
        .header("content-type", "application/grpc")
        .body(Body::new(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi"))))
        .unwrap();
    if let Some(key) = key {
        req.headers_mut()
            .insert(crate::metadata::IDEMPOTENCY_KEY, key.parse().unwrap());
    }
    req
}

pub(crate) fn ok() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    response
        .headers_mut()
        .insert("grpc-status", "0".parse().unwrap());
    response
}

pub(crate) fn failure(code: Code) -> BoxError {
    Box::new(Status::new(code, "scripted"))
}

pub(crate) fn status(err: &BoxError) -> &Status {
    err.downcast_ref::<Status>().expect("a Status")
}

pub(crate) async fn body_bytes(body: Body) -> Bytes {
    body.collect().await.unwrap().to_bytes()
}

/// The tower-test mock standing in for the inner service.
pub(crate) type MockService = tower_test::mock::Mock<Request<Body>, Response<Body>>;
/// Its control handle.
pub(crate) type MockHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
