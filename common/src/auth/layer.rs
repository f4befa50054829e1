//! The tower layer and service: authenticate, authorize by the service's policy, hand the
//! principal to the handler.

use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};

use super::error::AuthError;
use super::future::ResponseFuture;
use super::{Policy, Verifier, is_open};
use crate::metadata::CLIENT_ID;

/// Applies [`Auth`] to a server's services. Without a verifier (open mode) every call passes
/// untouched.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: Option<Verifier>,
    policy: Policy,
}

impl AuthLayer {
    /// Checks every call (but health and reflection) with `verifier`, then `policy`.
    pub fn new(verifier: Option<Verifier>, policy: Policy) -> Self {
        Self { verifier, policy }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            verifier: self.verifier.clone(),
            policy: self.policy,
        }
    }
}

/// Refuses a call without a valid bearer token (`UNAUTHENTICATED`) or without a role its RPC
/// admits (`PERMISSION_DENIED`) before the handler runs, so a refused call writes nothing. An
/// admitted call carries its [`Principal`](super::Principal) in the request extensions, and
/// its `client-id` header is replaced by the principal's subject: the idempotency scope is
/// then who the caller proved to be, never what it claims.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    verifier: Option<Verifier>,
    policy: Policy,
}

impl<S> Auth<S> {
    fn admit<B>(&self, request: &mut Request<B>) -> Result<(), AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(());
        };
        let path = request.uri().path();
        if is_open(path) {
            return Ok(());
        }
        let principal = verifier.verify(request.headers().get(http::header::AUTHORIZATION))?;
        let roles = (self.policy)(path);
        if !roles.iter().any(|role| principal.has_role(role)) {
            return Err(AuthError::RoleRequired {
                rpc: path.to_owned(),
                roles: roles.join(","),
            });
        }
        // The subject passed the `client-id` contract in `verify`, so it is a valid value.
        if let Ok(scope) = HeaderValue::from_str(&principal.subject) {
            request.headers_mut().insert(CLIENT_ID, scope);
        }
        request.extensions_mut().insert(principal);
        Ok(())
    }
}

impl<S, B, ResB> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResB::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.admit(&mut request) {
            Ok(()) => ResponseFuture::admitted(self.inner.call(request)),
            Err(refusal) => {
                tracing::info!(rpc = %request.uri().path(), reason = refusal.reason(), "call refused");
                ResponseFuture::refused(tonic::Status::from(refusal).into_http())
            }
        }
    }
}
