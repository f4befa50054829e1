//! Bearer token verification: the `authorization` header's form, then the JWT against the
//! keys of the watched JWKS file, its issuer, audience and validity window.

use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::Principal;
use super::error::{AuthError, from_jwt};
use super::watched::{POLL, WatchError, Watched};
use crate::metadata::is_valid_key;

/// Longest accepted token. Ours are a few hundred bytes; the cap keeps a client from making
/// the server base64-decode and parse megabytes per call.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// One verification key of the set: EdDSA (Ed25519) or ES256 (P-256) only, so a key can never
/// be used as an HMAC secret whatever the token's header says.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The usable keys of a JWKS file.
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// The key ids in the set (for logs and tests).
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().filter_map(|key| key.kid.clone()).collect()
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids())
            .finish()
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWKS document. Keys of other types or curves are skipped with a warning (a set
/// shared with other systems may hold them); a set with no usable key is an error.
pub fn parse_jwks(bytes: &[u8]) -> Result<KeySet, String> {
    let raw: RawSet =
        serde_json::from_slice(bytes).map_err(|error| format!("not a JWKS document: {error}"))?;
    let mut keys = Vec::new();
    for value in raw.keys {
        match usable(value) {
            Ok(key) => keys.push(key),
            Err(why) => tracing::warn!(%why, "JWKS key skipped"),
        }
    }
    if keys.is_empty() {
        return Err("no usable key (EdDSA/Ed25519 or ES256/P-256)".into());
    }
    Ok(KeySet { keys })
}

fn usable(value: serde_json::Value) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|error| error.to_string())?;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return Err("only OKP/Ed25519 and EC/P-256 keys are accepted".into()),
    };
    let declared_matches = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::EdDSA) => algorithm == Algorithm::EdDSA,
        Some(KeyAlgorithm::ES256) => algorithm == Algorithm::ES256,
        Some(_) => false,
    };
    if !declared_matches {
        return Err(format!("its `alg` does not fit its {algorithm:?} key"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|error| error.to_string())?;
    Ok(Key {
        kid: jwk.common.key_id,
        algorithm,
        key,
    })
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// Verifies bearer tokens against a watched key set, issuer and audience.
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: Watched<KeySet>,
    issuer: Option<Arc<str>>,
    audience: Option<Arc<str>>,
}

impl Verifier {
    /// Loads the JWKS at `path` (re-read every second from then on) and requires `issuer` and
    /// `audience` when given.
    pub async fn open(
        path: &Path,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Self, WatchError> {
        let keys = Watched::open(path, parse_jwks, POLL).await?;
        tracing::info!(keys = ?keys.current(), "bearer-token authentication on");
        Ok(Self {
            keys,
            issuer: issuer.map(Arc::from),
            audience: audience.map(Arc::from),
        })
    }

    /// The key set in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.current()
    }

    /// The principal of the `authorization` header's token, or why there is none.
    pub fn verify(&self, header: Option<&HeaderValue>) -> Result<Principal, AuthError> {
        let token = bearer(header)?;
        let header = decode_header(token).map_err(|_| AuthError::Malformed("not a JWT"))?;
        let keys = self.keys.current();
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) => {
                let found: Vec<&Key> = keys
                    .keys
                    .iter()
                    .filter(|key| key.kid.as_deref() == Some(kid))
                    .collect();
                if found.is_empty() {
                    return Err(AuthError::UnknownKey);
                }
                found
            }
            None => keys.keys.iter().collect(),
        };
        let mut refusal = AuthError::Invalid("algorithm not accepted for this key".into());
        for key in candidates
            .into_iter()
            .filter(|key| key.algorithm == header.alg)
        {
            match decode::<Claims>(token, &key.key, &self.validation(key.algorithm)) {
                Ok(data) => return principal(data.claims),
                Err(error) => refusal = from_jwt(&error),
            }
        }
        Err(refusal)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer.as_ref()]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience.as_ref()]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// The token of `authorization: Bearer <token>` (scheme case-insensitive, RFC 6750).
fn bearer(header: Option<&HeaderValue>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    if header.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
        return Err(AuthError::Malformed("longer than 8 KiB"));
    }
    let text = header
        .to_str()
        .map_err(|_| AuthError::Malformed("not visible ASCII"))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or(AuthError::Malformed("expected `Bearer <JWT>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(AuthError::Malformed("expected `Bearer <JWT>`"));
    }
    Ok(token)
}

fn principal(claims: Claims) -> Result<Principal, AuthError> {
    // The subject becomes the idempotency scope (`client-id`), whose contract this is.
    if !is_valid_key(&claims.sub) {
        return Err(AuthError::Invalid(
            "`sub` must be 1-255 printable ASCII characters".into(),
        ));
    }
    Ok(Principal {
        subject: claims.sub,
        roles: claims.roles,
    })
}
