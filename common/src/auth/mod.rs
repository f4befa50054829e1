//! Who is calling, and may they: bearer JWTs verified against a JWKS file, roles checked by
//! each service's policy, one tower layer for both services (modelled on tower-http's
//! `AsyncRequireAuthorization`, whose refusal happens before the inner service is called).
//!
//! - [`AuthArgs`]: `--auth-keys`, `--auth-issuer`, `--auth-audience`, `--allow-unauthenticated`.
//! - [`AuthLayer`]: refuses with `UNAUTHENTICATED` / `PERMISSION_DENIED` (reasons in [`error`]),
//!   puts the [`Principal`] in the request extensions. Health and reflection stay open.
//! - [`Verifier`]: the token checks; the key file is re-read when it changes ([`watched`]).
//! - [`protected_mode`]: without keys, no listening beyond loopback unless told to.
//! - [`issue`]: keys and tokens for `lab auth` and tests.

pub mod error;
mod future;
pub mod issue;
mod layer;
mod verify;
pub mod watched;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use error::AuthError;
pub use future::ResponseFuture;
pub use layer::{Auth, AuthLayer};
pub use verify::{KeySet, LEEWAY_SECS, MAX_TOKEN_BYTES, Verifier, parse_jwks};
pub use watched::{WatchError, Watched};

/// A caller whose token verified: its `sub` and `roles`. In the request extensions of every
/// admitted call when authentication is on; absent in open mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: String,
    /// The token's `roles`.
    pub roles: Vec<String>,
}

impl Principal {
    /// Whether the token grants `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }
}

/// The verified caller of `request`, when authentication is on.
pub fn principal<T>(request: &tonic::Request<T>) -> Option<&Principal> {
    request.extensions().get::<Principal>()
}

/// A service's roles table: the roles of which any one admits a call to the RPC at `path`
/// (`/package.Service/Method`). An empty slice admits nobody (an RPC the table does not know).
pub type Policy = fn(path: &str) -> &'static [&'static str];

/// Health and reflection answer anybody: load balancers and tools probe them without tokens.
pub fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// The security flags both services take (API.md "Security").
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// JWKS file (RFC 7517) of the keys that sign bearer tokens (EdDSA/Ed25519 or ES256). Set:
    /// every RPC except health and reflection needs `authorization: Bearer <JWT>`. Re-read
    /// when it changes (checked every second).
    #[arg(long = "auth-keys", env = "AUTH_KEYS")]
    pub auth_keys: Option<PathBuf>,

    /// Required `iss` of bearer tokens.
    #[arg(long = "auth-issuer", env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,

    /// Required `aud` of bearer tokens.
    #[arg(long = "auth-audience", env = "AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,

    /// Serve without tokens on any address. Without it and without `--auth-keys` the service
    /// refuses a non-loopback listen address (protected mode) and warns on loopback.
    #[arg(long = "allow-unauthenticated", env = "ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
}

impl AuthArgs {
    /// The verifier these flags ask for (`None`: open mode), after the protected-mode check of
    /// `listen`.
    pub async fn verifier(&self, listen: SocketAddr) -> Result<Option<Verifier>, AuthSetupError> {
        protected_mode(listen, self)?;
        match &self.auth_keys {
            Some(path) => Ok(Some(
                Verifier::open(
                    path,
                    self.auth_issuer.as_deref(),
                    self.auth_audience.as_deref(),
                )
                .await?,
            )),
            None => Ok(None),
        }
    }
}

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// Protected mode refused the listen address.
    #[error(
        "refusing to listen on {0} without authentication: give --auth-keys FILE (a JWKS) to \
         require bearer tokens, or --allow-unauthenticated to serve without them"
    )]
    ProtectedMode(SocketAddr),
    /// The key file could not be loaded.
    #[error("cannot load --auth-keys: {0}")]
    Keys(#[from] WatchError),
}

/// Protected mode (after Redis's): with no keys, a non-loopback `listen` is refused unless
/// `--allow-unauthenticated`; loopback is served with a warning (logged once, at start).
pub fn protected_mode(listen: SocketAddr, args: &AuthArgs) -> Result<(), AuthSetupError> {
    if args.auth_keys.is_some() {
        return Ok(());
    }
    if args.allow_unauthenticated {
        tracing::warn!(%listen, "authentication off (--allow-unauthenticated): anyone who reaches the port may call every RPC");
        return Ok(());
    }
    if listen.ip().is_loopback() {
        tracing::warn!(%listen, "authentication off: serving loopback only; give --auth-keys to require tokens");
        return Ok(());
    }
    Err(AuthSetupError::ProtectedMode(listen))
}

#[cfg(test)]
mod tests;
