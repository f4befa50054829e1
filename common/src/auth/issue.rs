//! Signing keys and tokens for `lab auth init` / `lab auth token` and for tests: an Ed25519
//! key as PKCS#8 PEM, its public half as a JWKS with a `kid`, and EdDSA-signed JWTs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::Serialize;

/// A new signing key: its private half as PKCS#8 PEM and its public half as a JWKS document.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// `-----BEGIN PRIVATE KEY-----` PEM (PKCS#8), for `lab auth token --key`.
    pub private_pem: String,
    /// The JWKS document (one key, with `kid`), for `--auth-keys`.
    pub jwks: String,
    /// The key's id.
    pub kid: String,
}

/// Why a key could not be made or read, or a token signed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IssueError(String);

/// Makes a fresh Ed25519 key.
pub fn new_key() -> Result<NewKey, IssueError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| IssueError("cannot generate an Ed25519 key".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| IssueError("generated key does not parse".into()))?;
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let kid = kid(pair.public_key().as_ref());
    let jwks = serde_json::json!({
        "keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": x}]
    });
    Ok(NewKey {
        private_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
        jwks: serde_json::to_string_pretty(&jwks).unwrap_or_default(),
        kid,
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// What a token says.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    /// `sub`.
    pub subject: String,
    /// `roles`.
    pub roles: Vec<String>,
    /// Lifetime from now (`exp` = now + ttl).
    pub ttl: Duration,
    /// `iss`, when given.
    pub issuer: Option<String>,
    /// `aud`, when given.
    pub audience: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    roles: &'a [String],
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs `spec` with the Ed25519 key in `private_pem` (PKCS#8), naming `kid` in the header
/// when given.
pub fn sign(private_pem: &[u8], kid: Option<&str>, spec: &TokenSpec) -> Result<String, IssueError> {
    let key = EncodingKey::from_ed_pem(private_pem)
        .map_err(|error| IssueError(format!("not an Ed25519 PKCS#8 PEM key: {error}")))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sub: &spec.subject,
        roles: &spec.roles,
        iat: now,
        exp: now + spec.ttl.as_secs(),
        iss: spec.issuer.as_deref(),
        aud: spec.audience.as_deref(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    encode(&header, &claims, &key).map_err(|error| IssueError(error.to_string()))
}

/// The `kid` of the Ed25519 key in `private_pem`, as [`new_key`] derived it (so a token names
/// the key without being told).
pub fn kid_of(private_pem: &[u8]) -> Result<String, IssueError> {
    let text = std::str::from_utf8(private_pem).map_err(|_| IssueError("not PEM".into()))?;
    let body: String = text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = STANDARD
        .decode(body.trim())
        .map_err(|_| IssueError("not PEM".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|_| IssueError("not an Ed25519 PKCS#8 key".into()))?;
    Ok(kid(pair.public_key().as_ref()))
}

/// A key's id: the start of its public key's SHA-256, so the same key always has the same id.
fn kid(public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12])
}
