//! The client side of order-svc: the resilient channel, the two calls the saga makes, and the
//! classification of their failures into [`FailureReason`]s.

use std::time::Duration;

use lab_common::auth::{WatchError, Watched, watched};
use lab_common::metadata::{
    APPROVAL_CLIENT_ID, CLIENT_ID, GRPC_PREVIOUS_RPC_ATTEMPTS, IDEMPOTENCY_KEY,
};
use lab_common::reason::Reason;
use lab_proto::order::v1 as order_pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use resilience::{
    Balanced, BreakerHandle, Discovery, EndpointsHandle, ResilienceConfig, ResilientChannel,
};

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::domain::{Challenge, FailureReason};

/// Why the order-svc client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS settings (`--order-svc-ca/-cert/-key`) cannot make a connector.
    #[error("TLS to order-svc: {0}")]
    Tls(String),
    /// No endpoint was configured.
    #[error("no order-svc URL configured")]
    NoEndpoint,
    /// An endpoint URL is malformed.
    #[error("invalid order-svc URL {url:?}: {why}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        why: String,
    },
}

impl From<resilience::endpoints::DiscoveryError> for ClientError {
    fn from(error: resilience::endpoints::DiscoveryError) -> Self {
        use resilience::endpoints::DiscoveryError as E;
        match error {
            E::NoEndpoint => Self::NoEndpoint,
            E::InvalidUrl { url, why } => Self::InvalidUrl { url, why },
            E::ZeroInterval => Self::InvalidUrl {
                url: String::new(),
                why: error_text(&E::ZeroInterval),
            },
            E::Tls(why) => Self::Tls(why),
        }
    }
}

fn error_text(error: &dyn std::fmt::Display) -> String {
    error.to_string()
}

/// A fixed list of order-svc endpoints (no name re-resolution), e.g. for tests.
#[derive(Debug, Clone)]
pub struct OrderEndpoints(Vec<Endpoint>);

/// Parses a fixed list of order-svc endpoints; connections are made lazily (the service starts
/// while order-svc is down). [`OrderGateway::discover`] is what the service uses.
pub fn channel(urls: &[String], connect_timeout: Duration) -> Result<OrderEndpoints, ClientError> {
    let endpoints = urls
        .iter()
        .map(|url| {
            Endpoint::from_shared(url.clone())
                .map(|endpoint| endpoint.connect_timeout(connect_timeout).tcp_nodelay(true))
                .map_err(|source| ClientError::InvalidUrl {
                    url: url.clone(),
                    why: source.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err(ClientError::NoEndpoint);
    }
    Ok(OrderEndpoints(endpoints))
}

/// The generated client over the resilience stack (deadline, budgeted retries with the same
/// idempotency key, a circuit breaker that opens when no endpoint is admitted, load shedding,
/// and per endpoint: failure detection, per-attempt timeout; p2c balancing among them).
pub type OrderClient = OrderServiceClient<ResilientChannel<Balanced>>;

/// approval-svc's way to order-svc: the saga's two calls, and [`OrderGateway::call`] for any
/// other, each bounded by the budget it is given.
#[derive(Debug, Clone)]
pub struct OrderGateway {
    client: OrderClient,
    endpoints: Option<EndpointsHandle>,
    token: Option<Watched<AsciiMetadataValue>>,
}

/// `Bearer <token>` from a token file's content (trimmed), as `authorization` metadata.
fn bearer(bytes: &[u8]) -> Result<AsciiMetadataValue, String> {
    let token = std::str::from_utf8(bytes)
        .map_err(|_| "not UTF-8".to_owned())?
        .trim();
    if token.is_empty() {
        return Err("empty".into());
    }
    AsciiMetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| "not a token (visible ASCII only)".into())
}

impl OrderGateway {
    /// The resilience stack configured by `config` over a fixed list of endpoints; also
    /// returns the handle of the stack's circuit breaker. Needs a tokio runtime.
    pub fn new(endpoints: OrderEndpoints, config: ResilienceConfig) -> (Self, BreakerHandle) {
        let (stack, breaker) = ResilientChannel::builder(config).balance(endpoints.0);
        (Self::over(stack), breaker)
    }

    /// The resilience stack over the endpoints `urls` name: addresses, or names resolved now
    /// and every `resolve_interval` (each address one endpoint with its own health); with
    /// `tls`, TLS to the `https://` ones.
    pub async fn discover(
        urls: &[String],
        resolve_interval: Duration,
        connect_timeout: Duration,
        tls: Option<ClientTlsConfig>,
        config: ResilienceConfig,
    ) -> Result<(Self, BreakerHandle), ClientError> {
        let mut discovery = Discovery::new(urls, resolve_interval, connect_timeout)?;
        if let Some(tls) = tls {
            discovery = discovery.with_tls(tls)?;
        }
        let (stack, breaker) = ResilientChannel::builder(config).discover(discovery).await;
        Ok((Self::over(stack), breaker))
    }

    fn over(stack: ResilientChannel<Balanced>) -> Self {
        Self {
            endpoints: stack.endpoints(),
            client: OrderServiceClient::new(stack),
            token: None,
        }
    }

    /// Presents the bearer token in `path` on every call (re-read when the file changes, so
    /// a rotated token is used without a restart).
    pub async fn with_token(mut self, path: &std::path::Path) -> Result<Self, WatchError> {
        self.token = Some(Watched::open(path, bearer, watched::POLL).await?);
        Ok(self)
    }

    /// The per-endpoint view (OpsService/GetCircuitBreaker).
    pub fn endpoints(&self) -> Option<EndpointsHandle> {
        self.endpoints.clone()
    }

    /// Creates the challenge's order with its idempotency key; a repeat replays the order.
    pub async fn create_order(
        &self,
        challenge: &Challenge,
        budget: Duration,
    ) -> Result<order_pb::Order, Status> {
        let key = challenge
            .idempotency_key
            .as_deref()
            .ok_or_else(|| Status::internal("challenge has no idempotency key"))?;
        let mut request = tonic::Request::new(order_pb::CreateOrderRequest {
            product_id: challenge.product_id.to_string(),
            quantity: challenge.quantity,
            customer_id: challenge.user_id.to_string(),
        });
        let key = MetadataValue::try_from(key)
            .map_err(|_| Status::internal("idempotency key is not valid metadata"))?;
        request.metadata_mut().insert(IDEMPOTENCY_KEY, key);
        if let Some(sent_before) = earlier_attempts(challenge) {
            // A re-drive of a key an earlier attempt may have sent: order-svc then answers from
            // the database (replaying the order if it exists), never from a sold-out flag.
            request
                .metadata_mut()
                .insert(GRPC_PREVIOUS_RPC_ATTEMPTS, MetadataValue::from(sent_before));
        }
        let response = self
            .call(request, budget, |mut client, request| async move {
                client.create_order(request).await
            })
            .await?;
        response
            .order
            .ok_or_else(|| Status::internal("order-svc answered without an order"))
    }

    /// Cancels an order; idempotent on order-svc's side, so repeating it is harmless.
    pub async fn cancel_order(
        &self,
        order_id: Uuid,
        reason: &str,
        budget: Duration,
    ) -> Result<order_pb::Order, Status> {
        let request = tonic::Request::new(order_pb::CancelOrderRequest {
            order_id: order_id.to_string(),
            reason: reason.to_owned(),
        });
        let response = self
            .call(request, budget, |mut client, request| async move {
                client.cancel_order(request).await
            })
            .await?;
        response
            .order
            .ok_or_else(|| Status::internal("order-svc answered without an order"))
    }

    /// Sends `request` with `client-id`, the bearer token when configured, and the budget as `grpc-timeout`, and enforces the
    /// budget here too, so the caller's deadline holds whatever the stack below does. Every
    /// call approval-svc makes to order-svc goes through here (the saga's two above, the
    /// consistency checker's), over the same breaker and budgets.
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        mut request: tonic::Request<Req>,
        budget: Duration,
        send: F,
    ) -> Result<Resp, Status>
    where
        F: FnOnce(OrderClient, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        if budget.is_zero() {
            return Err(Status::deadline_exceeded(
                "no time left for the order-svc call",
            ));
        }
        request
            .metadata_mut()
            .insert(CLIENT_ID, MetadataValue::from_static(APPROVAL_CLIENT_ID));
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.current().as_ref().clone());
        }
        request.set_timeout(budget);
        match tokio::time::timeout(budget, send(self.client.clone(), request)).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(
                "order-svc did not answer in time",
            )),
        }
    }
}

/// How many earlier attempts of the challenge may have sent its key, when any did: the value of
/// `grpc-previous-rpc-attempts` on a re-drive. `attempts` counts the attempt under way too.
/// (After ORDER_CANCELLED the key is new, so this over-counts; that only costs order-svc's
/// sold-out fast path and makes a non-business refusal transient, never a wrong outcome.)
pub fn earlier_attempts(challenge: &Challenge) -> Option<i32> {
    (challenge.attempts > 1).then(|| challenge.attempts - 1)
}

/// Maps an order-svc failure to the reason recorded on the challenge. `key_sent_before`: an
/// earlier attempt of the challenge (an earlier call) may have sent its key.
///
/// Once the order may exist, only an answer that proves it does not may end the approval:
/// OUT_OF_STOCK and PRODUCT_NOT_FOUND do (order-svc decides them after looking the key up, and
/// a re-sent key never meets its sold-out flag), anything else does not and stays transient, so
/// a retry with the same key settles it. Within one call the stack's own marker is stricter
/// still: after a possibly delivered attempt every refusal is transient.
pub fn classify(status: &Status, key_sent_before: bool) -> FailureReason {
    let reason = classify_answer(status);
    if outcome_unknown(reason, status, key_sent_before) {
        return FailureReason::OrderServiceUnavailable;
    }
    reason
}

/// Whether a definitive-looking `reason` must be taken as "outcome unknown" (see [`classify`]).
fn outcome_unknown(reason: FailureReason, status: &Status, key_sent_before: bool) -> bool {
    !reason.is_transient()
        && (resilience::errors::earlier_attempt_maybe_delivered(status)
            || (key_sent_before && reason == FailureReason::RejectedByOrderService))
}

/// Whether the failed call never left this process (refused by the local breaker or load
/// shedding on its only attempt): it changed nothing in order-svc and tells nothing about it.
pub fn never_sent(status: &Status) -> bool {
    resilience::errors::never_left_the_process(status)
}

/// Whether order-svc answered that the product has nothing left: OUT_OF_STOCK with
/// `available` 0 in its `ErrorInfo`, which refuses any quantity (one that says some units are
/// left refused only a larger quantity).
pub fn nothing_left(status: &Status) -> bool {
    status.get_details_error_info().is_some_and(|info| {
        Reason::parse(&info.reason) == Some(Reason::OutOfStock)
            && info.metadata.get("available").map(String::as_str) == Some("0")
    })
}

/// The reason the last answer alone would give.
fn classify_answer(status: &Status) -> FailureReason {
    let reason = lab_common::status::reason(status);
    match (status.code(), reason.as_deref().and_then(Reason::parse)) {
        (_, Some(Reason::CircuitOpen)) => FailureReason::CircuitOpen,
        (_, Some(Reason::OutOfStock)) => FailureReason::OutOfStock,
        (_, Some(Reason::ProductNotFound)) => FailureReason::ProductNotFound,
        (Code::NotFound, _) => FailureReason::ProductNotFound,
        (Code::Unavailable | Code::ResourceExhausted, _) => FailureReason::OrderServiceUnavailable,
        // ABORTED: a concurrent call with the same key is settling, and UNKNOWN: the transport
        // broke mid-call. Either way the order may exist, so the outcome is unknown and only a
        // retry with the same key (which replays it) can settle it: transient, never definitive.
        (Code::Aborted | Code::Unknown, _) => FailureReason::OrderServiceUnavailable,
        (Code::DeadlineExceeded | Code::Cancelled, _) => FailureReason::DeadlineExceeded,
        // approval-svc's own token was refused (expired, rotated away, role missing): a fault of
        // this deployment, not of the request, and order-svc wrote nothing. Retried, so the
        // approvals go through once the token file is renewed.
        (Code::Unauthenticated | Code::PermissionDenied, _) => {
            FailureReason::OrderServiceUnavailable
        }
        _ => FailureReason::RejectedByOrderService,
    }
}

/// The message recorded with a failure: the code and order-svc's own message, cut short, after
/// "outcome unknown" when [`classify`] took a refusal as transient.
pub fn failure_message(status: &Status, key_sent_before: bool) -> String {
    let unknown = if outcome_unknown(classify_answer(status), status, key_sent_before) {
        "outcome unknown (an earlier attempt may have created the order); last answer "
    } else {
        ""
    };
    let mut message = format!("{unknown}{:?}: {}", status.code(), status.message());
    if message.len() > 500 {
        let mut end = 500;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_common::status::with_reason;

    #[test]
    fn after_an_earlier_call_sent_the_key_only_business_refusals_are_definitive() {
        let cases = [
            (
                with_reason(Code::FailedPrecondition, Reason::OutOfStock, "x", []),
                FailureReason::OutOfStock,
            ),
            (
                with_reason(Code::NotFound, Reason::ProductNotFound, "x", []),
                FailureReason::ProductNotFound,
            ),
            (
                Status::internal("x"),
                FailureReason::OrderServiceUnavailable,
            ),
            (
                Status::invalid_argument("x"),
                FailureReason::OrderServiceUnavailable,
            ),
            (
                Status::unavailable("x"),
                FailureReason::OrderServiceUnavailable,
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(classify(&status, true), expected, "{status:?}");
        }
        assert!(failure_message(&Status::internal("x"), true).starts_with("outcome unknown"));
        assert!(!failure_message(&Status::internal("x"), false).starts_with("outcome unknown"));
    }

    #[test]
    fn order_failures_map_to_precise_reasons() {
        let cases = [
            (
                with_reason(Code::FailedPrecondition, Reason::OutOfStock, "x", []),
                FailureReason::OutOfStock,
            ),
            (
                with_reason(Code::NotFound, Reason::ProductNotFound, "x", []),
                FailureReason::ProductNotFound,
            ),
            (Status::not_found("x"), FailureReason::ProductNotFound),
            (
                with_reason(Code::Unavailable, Reason::CircuitOpen, "x", []),
                FailureReason::CircuitOpen,
            ),
            (
                Status::unavailable("x"),
                FailureReason::OrderServiceUnavailable,
            ),
            (
                Status::resource_exhausted("x"),
                FailureReason::OrderServiceUnavailable,
            ),
            (Status::aborted("x"), FailureReason::OrderServiceUnavailable),
            (
                Status::deadline_exceeded("x"),
                FailureReason::DeadlineExceeded,
            ),
            (Status::cancelled("x"), FailureReason::DeadlineExceeded),
            (
                with_reason(
                    Code::FailedPrecondition,
                    Reason::IdempotencyKeyReused,
                    "x",
                    [],
                ),
                FailureReason::RejectedByOrderService,
            ),
            (
                Status::invalid_argument("x"),
                FailureReason::RejectedByOrderService,
            ),
            (Status::internal("x"), FailureReason::RejectedByOrderService),
            // Our own credentials refused: retried once the token is renewed.
            (
                with_reason(Code::Unauthenticated, "TOKEN_EXPIRED", "x", []),
                FailureReason::OrderServiceUnavailable,
            ),
            (
                with_reason(Code::PermissionDenied, "ROLE_REQUIRED", "x", []),
                FailureReason::OrderServiceUnavailable,
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(classify(&status, false), expected, "{status:?}");
        }
    }

    #[test]
    fn only_the_local_breaker_makes_a_call_that_never_left() {
        let local = resilience::errors::circuit_open("order-svc");
        assert_eq!(classify(&local, false), FailureReason::CircuitOpen);
        assert!(never_sent(&local));
        // The same reason sent by a server: the call reached it, so it counts as an attempt.
        let remote = with_reason(Code::Unavailable, Reason::CircuitOpen, "x", []);
        assert_eq!(classify(&remote, false), FailureReason::CircuitOpen);
        assert!(!never_sent(&remote));
        assert!(!never_sent(&Status::internal("x")));
    }

    #[test]
    fn messages_are_bounded() {
        let message = failure_message(&Status::internal("é".repeat(1000)), false);
        assert!(message.len() <= 500);
    }

    #[test]
    fn one_or_many_endpoints() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let timeout = Duration::from_millis(100);
        assert!(matches!(
            channel(&[], timeout),
            Err(ClientError::NoEndpoint)
        ));
        assert!(channel(&["http://127.0.0.1:1".into()], timeout).is_ok());
        assert!(
            channel(
                &["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
                timeout
            )
            .is_ok()
        );
        assert!(matches!(
            channel(&["not a url".into()], timeout),
            Err(ClientError::InvalidUrl { .. })
        ));
    }
}
