//! Why a call was refused by the [`Auth`](super::Auth) layer, and the status each refusal is
//! answered with (`UNAUTHENTICATED` or `PERMISSION_DENIED`, `ErrorInfo` domain `lab`).

use tonic::{Code, Status};

use crate::status::with_reason;

/// `ErrorInfo.reason`: no `authorization` header.
pub const TOKEN_MISSING: &str = "TOKEN_MISSING";
/// `ErrorInfo.reason`: the header is not `Bearer <JWT>`, the token is oversized, or it is not a
/// JWT at all.
pub const TOKEN_MALFORMED: &str = "TOKEN_MALFORMED";
/// `ErrorInfo.reason`: a well-formed token whose signature, algorithm or claims do not verify.
pub const TOKEN_INVALID: &str = "TOKEN_INVALID";
/// `ErrorInfo.reason`: the token names a `kid` the key set does not have.
pub const TOKEN_UNKNOWN_KEY: &str = "TOKEN_UNKNOWN_KEY";
/// `ErrorInfo.reason`: `exp` is past (beyond the leeway).
pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";
/// `ErrorInfo.reason`: `nbf` is ahead (beyond the leeway).
pub const TOKEN_NOT_YET_VALID: &str = "TOKEN_NOT_YET_VALID";
/// `ErrorInfo.reason`: `iss` is not the configured issuer.
pub const TOKEN_WRONG_ISSUER: &str = "TOKEN_WRONG_ISSUER";
/// `ErrorInfo.reason`: `aud` does not name the configured audience.
pub const TOKEN_WRONG_AUDIENCE: &str = "TOKEN_WRONG_AUDIENCE";
/// `ErrorInfo.reason` (`PERMISSION_DENIED`): the principal has none of the roles the RPC needs.
pub const ROLE_REQUIRED: &str = "ROLE_REQUIRED";
/// `ErrorInfo.reason` (`PERMISSION_DENIED`): the principal may call the RPC, but only for what
/// it owns (a `user` for its own `user_id`, a `shop-client` for its own orders).
pub const NOT_OWNER: &str = "NOT_OWNER";

/// A refused call. Client mistakes only: nothing here is ever INTERNAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header.
    #[error("authentication required: send `authorization: Bearer <JWT>`")]
    Missing,
    /// Not `Bearer <JWT>`, too long, or not a JWT.
    #[error("malformed bearer token: {0}")]
    Malformed(&'static str),
    /// The signature, algorithm or a claim does not verify.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The `kid` is not (or no longer) in the key set.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// `exp` is past.
    #[error("token expired")]
    Expired,
    /// `nbf` is ahead.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is wrong.
    #[error("token issued by an unexpected issuer")]
    WrongIssuer,
    /// `aud` is wrong.
    #[error("token issued for another audience")]
    WrongAudience,
    /// The principal lacks every role the RPC admits (`roles` empty: an RPC no role may call).
    #[error("{rpc} needs one of the roles [{roles}]")]
    RoleRequired {
        /// The RPC's path.
        rpc: String,
        /// The roles that admit it, comma-separated.
        roles: String,
    },
    /// The principal asked for something it does not own.
    #[error("{0}")]
    NotOwner(String),
}

impl AuthError {
    /// The `ErrorInfo.reason` of this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => TOKEN_MISSING,
            Self::Malformed(_) => TOKEN_MALFORMED,
            Self::Invalid(_) => TOKEN_INVALID,
            Self::UnknownKey => TOKEN_UNKNOWN_KEY,
            Self::Expired => TOKEN_EXPIRED,
            Self::NotYetValid => TOKEN_NOT_YET_VALID,
            Self::WrongIssuer => TOKEN_WRONG_ISSUER,
            Self::WrongAudience => TOKEN_WRONG_AUDIENCE,
            Self::RoleRequired { .. } => ROLE_REQUIRED,
            Self::NotOwner(_) => NOT_OWNER,
        }
    }

    /// The gRPC code: who you are is UNAUTHENTICATED, what you may do is PERMISSION_DENIED.
    pub fn code(&self) -> Code {
        match self {
            Self::RoleRequired { .. } | Self::NotOwner(_) => Code::PermissionDenied,
            _ => Code::Unauthenticated,
        }
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        let metadata = match &error {
            AuthError::RoleRequired { roles, .. } => vec![("roles", roles.clone())],
            _ => Vec::new(),
        };
        with_reason(error.code(), error.reason(), error.to_string(), metadata)
    }
}

/// Maps a `jsonwebtoken` failure to the refusal a client can act on; the library's own text
/// stays in the message only where it names no key material.
pub(super) fn from_jwt(error: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match error.kind() {
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidIssuer => AuthError::WrongIssuer,
        K::InvalidAudience => AuthError::WrongAudience,
        K::InvalidSignature => AuthError::Invalid("bad signature".into()),
        K::InvalidAlgorithm | K::InvalidAlgorithmName => {
            AuthError::Invalid("algorithm not accepted for this key".into())
        }
        K::MissingRequiredClaim(claim) => AuthError::Invalid(format!("missing claim `{claim}`")),
        K::Json(_) => AuthError::Invalid("claims are not the expected JSON".into()),
        K::InvalidToken | K::Base64(_) | K::Utf8(_) => AuthError::Malformed("not a JWT"),
        _ => AuthError::Invalid("does not verify".into()),
    }
}
