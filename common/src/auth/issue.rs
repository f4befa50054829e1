//! Signing keys and tokens for `lab auth init` / `lab auth token` and for tests: an Ed25519
//! key as PKCS#8 PEM, its public half as a JWKS with a `kid`, and EdDSA-signed JWTs.

use std::path::Path;
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
    /// Lifetime from `iat` (`exp` = iat + ttl).
    pub ttl: Duration,
    /// `iss`, when given.
    pub issuer: Option<String>,
    /// `aud`, when given.
    pub audience: Option<String>,
    /// `iat` in seconds since the epoch; `None` is now. An earlier one backdates the token
    /// (an already expired token, to test a clock or a refusal).
    pub issued_at: Option<u64>,
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

/// Signs tokens with an Ed25519 key, naming its `kid` (as [`new_key`] derived it).
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// The signer of the Ed25519 PKCS#8 PEM key `private_pem`.
    pub fn from_pem(private_pem: &[u8]) -> Result<Self, IssueError> {
        let key = EncodingKey::from_ed_pem(private_pem)
            .map_err(|error| IssueError(format!("not an Ed25519 PKCS#8 PEM key: {error}")))?;
        Ok(Self {
            key,
            kid: kid_of(private_pem)?,
        })
    }

    /// The key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A token saying `spec`.
    pub fn token(&self, spec: &TokenSpec) -> Result<String, IssueError> {
        let iat = spec.issued_at.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        });
        let claims = Claims {
            sub: &spec.subject,
            roles: &spec.roles,
            iat,
            exp: iat + spec.ttl.as_secs(),
            iss: spec.issuer.as_deref(),
            aud: spec.audience.as_deref(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        encode(&header, &claims, &self.key).map_err(|error| IssueError(error.to_string()))
    }
}

/// Writes a new key into `dir` (created if missing): `private.pem` (mode 0600) and
/// `jwks.json`. Refuses to replace an existing `private.pem`: tokens signed with it would stop
/// verifying.
pub fn write_key(dir: &Path) -> Result<(NewKey, Signer), IssueError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed =
        |path: &Path, error: std::io::Error| IssueError(format!("{}: {error}", path.display()));
    let key = new_key()?;
    std::fs::create_dir_all(dir).map_err(|error| failed(dir, error))?;
    let private = dir.join("private.pem");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .and_then(|mut file| file.write_all(key.private_pem.as_bytes()))
        .map_err(|error| failed(&private, error))?;
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, &key.jwks).map_err(|error| failed(&jwks, error))?;
    let signer = Signer::from_pem(key.private_pem.as_bytes())?;
    Ok((key, signer))
}

/// The `kid` of the Ed25519 key in `private_pem`, as [`new_key`] derived it.
fn kid_of(private_pem: &[u8]) -> Result<String, IssueError> {
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

/// A new key in a private temporary directory, removed when dropped: `lab up`'s dev key, and
/// tests'.
#[derive(Debug)]
pub struct TempKey {
    dir: tempfile::TempDir,
    signer: Signer,
}

impl TempKey {
    /// Makes the directory and the key ([`write_key`]).
    pub fn new() -> Result<Self, IssueError> {
        let dir = tempfile::Builder::new()
            .prefix("lab-auth-")
            .tempdir()
            .map_err(|error| IssueError(format!("temporary directory: {error}")))?;
        let (_, signer) = write_key(dir.path())?;
        Ok(Self { dir, signer })
    }

    /// The directory (`private.pem`, `jwks.json`; room for token files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The JWKS file, for `--auth-keys`.
    pub fn jwks(&self) -> std::path::PathBuf {
        self.dir.path().join("jwks.json")
    }

    /// Signs with the key.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
}
