//! What every tonic server of this project needs around its services: a bound listener that
//! reports its address, reflection, and request ids with a tracing span per call (the shutdown
//! signal is in [`crate::shutdown`]).

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures, GrpcFailureClass, SharedClassifier};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, DefaultOnResponse, MakeSpan, OnFailure,
    TraceLayer,
};
use tracing::{Level, Span};

use crate::metadata::REQUEST_ID;
use crate::tls::{Incoming, Security, ServerTls};

/// A bound listener, ready to be served; port 0 picks a free port.
#[derive(Debug)]
pub struct BoundListener {
    /// The accepted connections (plain, or TLS after the handshake), for
    /// `serve_with_incoming_shutdown`.
    pub incoming: Incoming,
    /// Plaintext, TLS or mutual TLS.
    pub security: Security,
    /// The address actually bound.
    pub local_addr: SocketAddr,
}

/// How long an accepted connection may be idle before TCP keepalive probes whether its peer
/// is still there (a crashed client or a silently dropped NAT entry).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Binds `addr` for plaintext; the chosen address is in the result (for port 0).
pub async fn bind(addr: SocketAddr) -> std::io::Result<BoundListener> {
    bind_tls(addr, None).await
}

/// Binds `addr`, serving TLS when `tls` is given; the chosen address is in the result (for
/// port 0).
///
/// Accepted connections get `TCP_NODELAY`: a gRPC answer is written as several small frames,
/// and with Nagle's algorithm the last of them waits for the client's delayed ACK (40 ms on
/// Linux), which `serve_with_incoming` does not prevent on its own.
pub async fn bind_tls(addr: SocketAddr, tls: Option<&ServerTls>) -> std::io::Result<BoundListener> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let tcp = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    Ok(BoundListener {
        security: Security::of(tls),
        incoming: Incoming::new(tcp, tls),
        local_addr,
    })
}

/// gRPC server reflection, v1 and v1alpha (grpcurl and most tools still ask v1alpha), over the
/// given encoded file descriptor sets.
pub fn reflection(
    descriptor_sets: &[&'static [u8]],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        descriptor_sets.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// Makes request ids: UUID v7, so ids sort by time in log searches.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        uuid::Uuid::now_v7()
            .to_string()
            .parse()
            .ok()
            .map(RequestId::new)
    }
}

/// Opens one span per call named after the RPC, carrying the request id, so every log line of
/// the call can be found by it.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMakeSpan;

impl<B> MakeSpan<B> for GrpcMakeSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-");
        tracing::info_span!("rpc", path = %request.uri().path(), request_id = %request_id)
    }
}

/// Logs a failed call at a level that matches whose problem it is: the server's (INTERNAL,
/// UNAVAILABLE, UNKNOWN, DATA_LOSS, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, a broken stream) at
/// WARN; the caller's or the business's (NOT_FOUND, INVALID_ARGUMENT, OUT_OF_STOCK as
/// FAILED_PRECONDITION…) at DEBUG. A sale that runs out of stock answers thousands of calls a
/// second with FAILED_PRECONDITION; those are counted in `grpc_server_handled_total`, not logged.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcOnFailure;

impl GrpcOnFailure {
    fn is_server_side(code: Option<GrpcCode>) -> bool {
        matches!(
            code,
            None | Some(
                GrpcCode::Internal
                    | GrpcCode::Unavailable
                    | GrpcCode::Unknown
                    | GrpcCode::DataLoss
                    | GrpcCode::DeadlineExceeded
                    | GrpcCode::ResourceExhausted
            )
        )
    }
}

impl OnFailure<GrpcFailureClass> for GrpcOnFailure {
    fn on_failure(&mut self, failure: GrpcFailureClass, latency: Duration, span: &Span) {
        let latency_ms = latency.as_secs_f64() * 1e3;
        match failure {
            GrpcFailureClass::Status(status) if !Self::is_server_side(status.code()) => {
                tracing::debug!(parent: span, code = status.code_raw(), latency_ms, "call refused");
            }
            GrpcFailureClass::Status(status) => {
                tracing::warn!(
                    parent: span,
                    code = status.code_raw(),
                    message = status.message().unwrap_or(""),
                    latency_ms,
                    "call failed"
                );
            }
            // A broken stream or body (`Error`), or a class added by a later tower-http.
            other => {
                tracing::warn!(parent: span, failure = %other, latency_ms, "call failed");
            }
        }
    }
}

/// The tower-http trace layer as configured here.
pub type GrpcTraceLayer = TraceLayer<
    SharedClassifier<GrpcErrorsAsFailures>,
    GrpcMakeSpan,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    GrpcOnFailure,
>;

/// The server-side observability stack: set `x-request-id` (keep the caller's or make one),
/// trace the call in a span with that id, and echo the id in the response.
pub type ObservabilityLayer = Stack<
    PropagateRequestIdLayer,
    Stack<GrpcTraceLayer, Stack<SetRequestIdLayer<MakeRequestUuidV7>, Identity>>,
>;

/// Builds [`ObservabilityLayer`]; add it with `Server::builder().layer(...)`.
pub fn observability() -> ObservabilityLayer {
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuidV7))
        .layer(
            TraceLayer::new_for_grpc()
                .make_span_with(GrpcMakeSpan)
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(GrpcOnFailure),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .into_inner()
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;
    use tower_http::classify::GrpcCode;

    use super::{GrpcOnFailure, bind};

    #[tokio::test]
    async fn accepted_connections_send_without_nagle_delay() {
        let mut listener = bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr)
            .await
            .unwrap();
        let accepted = listener.incoming.next().await.unwrap().unwrap();
        assert!(accepted.tcp().nodelay().unwrap(), "TCP_NODELAY is set");
    }

    #[test]
    fn only_server_side_failures_are_warnings() {
        for code in [
            GrpcCode::Internal,
            GrpcCode::Unavailable,
            GrpcCode::Unknown,
            GrpcCode::DeadlineExceeded,
        ] {
            assert!(GrpcOnFailure::is_server_side(Some(code)), "{code:?}");
        }
        assert!(
            GrpcOnFailure::is_server_side(None),
            "an unknown code number"
        );
        for code in [
            GrpcCode::FailedPrecondition,
            GrpcCode::NotFound,
            GrpcCode::InvalidArgument,
            GrpcCode::AlreadyExists,
            GrpcCode::Aborted,
            GrpcCode::Cancelled,
        ] {
            assert!(!GrpcOnFailure::is_server_side(Some(code)), "{code:?}");
        }
    }
}
