//! Server-side gRPC metrics: a count and a latency histogram per RPC and status code, under the
//! names go-grpc-prometheus made standard, so existing dashboards and alerts apply:
//!
//! - `grpc_server_handled_total{grpc_service, grpc_method, grpc_code}` (counter)
//! - `grpc_server_handling_seconds{grpc_service, grpc_method, grpc_code}` (histogram)
//!
//! The code is read from the response headers, where tonic puts the status of a failed unary
//! call (a "trailers-only" response); a response without one finished its headers successfully
//! and is counted as `OK`. Paths outside the configured services are counted as
//! `grpc_service="unknown"` so a client cannot blow up the label set.
//!
//! [`preinitialise`] exports every method's series before its first call, so a rate or an
//! alert on a code (`grpc_code="Internal"`) sees its first increment instead of a series
//! appearing from nowhere.

mod future;
mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message;
use tower::Service;

pub use future::ResponseFuture;
pub use layer::GrpcMetricsLayer;

/// Counter of handled calls.
pub const HANDLED_TOTAL: &str = "grpc_server_handled_total";
/// Histogram of call latency in seconds.
pub const HANDLING_SECONDS: &str = "grpc_server_handling_seconds";

/// Describes both families (HELP text, unit). Idempotent; kept by the recorder installed at the
/// time, hence called where the families are first built.
pub(crate) fn describe() {
    metrics::describe_counter!(
        HANDLED_TOTAL,
        "gRPC calls completed by the server, by service, method and status code."
    );
    metrics::describe_histogram!(
        HANDLING_SECONDS,
        metrics::Unit::Seconds,
        "Time the server took to answer a gRPC call (to its response headers), by service, \
         method and status code."
    );
}

/// Exports, before any call, the series of every method of `services` (full names) declared
/// in `file_descriptor_sets` (encoded `FileDescriptorSet`s, as `tonic-build` embeds them):
/// [`HANDLED_TOTAL`] at 0 for every status code, and an empty [`HANDLING_SECONDS`] for `OK`
/// (a histogram per code would multiply the page by 17 for series that stay empty).
pub fn preinitialise(
    file_descriptor_sets: &[&[u8]],
    services: &[&str],
) -> Result<(), prost::DecodeError> {
    describe();
    for encoded in file_descriptor_sets {
        let set = prost_types::FileDescriptorSet::decode(*encoded)?;
        for file in set.file {
            for service in &file.service {
                let full_name = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                if !services.contains(&full_name.as_str()) {
                    continue;
                }
                for method in &service.method {
                    let labels = |code: tonic::Code| {
                        [
                            ("grpc_service", full_name.clone()),
                            ("grpc_method", method.name().to_owned()),
                            ("grpc_code", code_name(code).to_owned()),
                        ]
                    };
                    for code in (0..=16).map(tonic::Code::from_i32) {
                        // Not `absolute(0)`: in tests several servers share the process's counts.
                        metrics::counter!(HANDLED_TOTAL, &labels(code)).increment(0);
                    }
                    let _ = metrics::histogram!(HANDLING_SECONDS, &labels(tonic::Code::Ok));
                }
            }
        }
    }
    Ok(())
}

/// Records [`HANDLED_TOTAL`] and [`HANDLING_SECONDS`] for every call to the inner service.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    known_services: Arc<[&'static str]>,
}

impl<S> GrpcMetrics<S> {
    /// Wraps `inner`, labelling calls of `known_services` by name.
    pub fn new(inner: S, known_services: Arc<[&'static str]>) -> Self {
        Self {
            inner,
            known_services,
        }
    }

    fn labels(&self, path: &str) -> (String, String) {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let service = parts.next().unwrap_or_default();
        let method = parts.next().unwrap_or_default();
        let known = self.known_services.contains(&service)
            && !method.is_empty()
            && method.len() <= 64
            && method.bytes().all(|b| b.is_ascii_alphanumeric());
        if known {
            (service.to_owned(), method.to_owned())
        } else {
            ("unknown".to_owned(), "unknown".to_owned())
        }
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = self.labels(request.uri().path());
        ResponseFuture::new(self.inner.call(request), service, method)
    }
}

/// The canonical name of a gRPC status code as grpc-go prints it (`FailedPrecondition`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_collapse_to_one_label() {
        let metrics = GrpcMetrics::new((), Arc::from(["lab.order.v1.OrderService"]));
        assert_eq!(
            metrics.labels("/lab.order.v1.OrderService/CreateOrder"),
            ("lab.order.v1.OrderService".into(), "CreateOrder".into())
        );
        for path in [
            "/evil/x",
            "/lab.order.v1.OrderService/",
            "/lab.order.v1.OrderService/a-b",
            "/",
        ] {
            assert_eq!(metrics.labels(path), ("unknown".into(), "unknown".into()));
        }
    }
}
