use std::io::Write;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use tonic::Code;

use super::issue::{Signer, TokenSpec, new_key, write_key};
use super::*;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    ed_pem: String,
    ed_kid: String,
    ec_der: Vec<u8>,
}

/// A JWKS file holding one Ed25519 key and one P-256 key (kid `ec-1`).
fn fixture() -> Fixture {
    let ed = new_key().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let mut jwks: Value = serde_json::from_str(&ed.jwks).unwrap();
    jwks["keys"].as_array_mut().unwrap().push(json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "ec-1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    Fixture {
        _dir: dir,
        path,
        ed_pem: ed.private_pem,
        ed_kid: ed.kid,
        ec_der: ec.as_ref().to_vec(),
    }
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "roles": ["user"], "iss": "lab", "aud": "shop", "iat": now(), "exp": now() + 600})
}

impl Fixture {
    fn ed(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.ed_kid.clone());
        let key = EncodingKey::from_ed_pem(self.ed_pem.as_bytes()).unwrap();
        encode(&header, claims, &key).unwrap()
    }

    fn es(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec-1".into());
        encode(&header, claims, &EncodingKey::from_ec_der(&self.ec_der)).unwrap()
    }

    async fn verifier(&self) -> Verifier {
        Verifier::open(&self.path, Some("lab"), Some("shop"))
            .await
            .unwrap()
    }
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

fn check(verifier: &Verifier, token: &str) -> Result<Principal, AuthError> {
    verifier.verify(Some(&bearer(token)))
}

#[tokio::test]
async fn eddsa_and_es256_tokens_verify_to_their_principal() {
    let fixture = fixture();
    let verifier = fixture.verifier().await;
    for token in [fixture.ed(&claims("alice")), fixture.es(&claims("alice"))] {
        let principal = check(&verifier, &token).unwrap();
        assert_eq!(principal.subject, "alice");
        assert!(principal.has_role("user") && !principal.has_role("approver"));
    }
    // The scheme is case-insensitive (RFC 6750).
    let lower = HeaderValue::from_str(&format!("bearer {}", fixture.ed(&claims("a")))).unwrap();
    assert!(verifier.verify(Some(&lower)).is_ok());
}

#[tokio::test]
async fn each_bad_token_is_refused_with_its_reason() {
    let fixture = fixture();
    let verifier = fixture.verifier().await;
    let good = claims("alice");
    let with = |key: &str, value: Value| {
        let mut claims = good.clone();
        claims[key] = value;
        claims
    };
    let other = fixture_with_kid(&fixture.ed_kid);
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let public_x = {
        let jwks: Value = serde_json::from_slice(&std::fs::read(&fixture.path).unwrap()).unwrap();
        jwks["keys"][0]["x"].as_str().unwrap().to_owned()
    };
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(fixture.ed_kid.clone());
    let hs256 = encode(
        &hs_header,
        &good,
        &EncodingKey::from_secret(public_x.as_bytes()),
    )
    .unwrap();
    let mut unknown = Header::new(Algorithm::EdDSA);
    unknown.kid = Some("gone".into());
    let unknown_kid = encode(
        &unknown,
        &good,
        &EncodingKey::from_ed_pem(fixture.ed_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let cases: Vec<(&str, Result<Principal, AuthError>, &str)> = vec![
        ("missing", verifier.verify(None), error::TOKEN_MISSING),
        (
            "basic",
            verifier.verify(Some(&HeaderValue::from_static("Basic YWxpY2U6cHc="))),
            error::TOKEN_MALFORMED,
        ),
        (
            "no token",
            verifier.verify(Some(&HeaderValue::from_static("Bearer "))),
            error::TOKEN_MALFORMED,
        ),
        (
            "oversized",
            check(&verifier, &"a".repeat(MAX_TOKEN_BYTES + 1)),
            error::TOKEN_MALFORMED,
        ),
        (
            "garbage",
            check(&verifier, "not.a.jwt"),
            error::TOKEN_MALFORMED,
        ),
        ("alg none", check(&verifier, &none), error::TOKEN_MALFORMED),
        (
            "hs256 with the public key",
            check(&verifier, &hs256),
            error::TOKEN_INVALID,
        ),
        (
            "unknown kid",
            check(&verifier, &unknown_kid),
            error::TOKEN_UNKNOWN_KEY,
        ),
        (
            "bad signature",
            check(&verifier, &other.ed(&good)),
            error::TOKEN_INVALID,
        ),
        (
            "expired",
            check(&verifier, &fixture.ed(&with("exp", json!(now() - 120)))),
            error::TOKEN_EXPIRED,
        ),
        (
            "not yet valid",
            check(&verifier, &fixture.ed(&with("nbf", json!(now() + 120)))),
            error::TOKEN_NOT_YET_VALID,
        ),
        (
            "wrong issuer",
            check(&verifier, &fixture.es(&with("iss", json!("mallory")))),
            error::TOKEN_WRONG_ISSUER,
        ),
        (
            "wrong audience",
            check(&verifier, &fixture.ed(&with("aud", json!("elsewhere")))),
            error::TOKEN_WRONG_AUDIENCE,
        ),
        (
            "no exp",
            check(
                &verifier,
                &fixture.ed(&{
                    let mut claims = good.clone();
                    claims.as_object_mut().unwrap().remove("exp");
                    claims
                }),
            ),
            error::TOKEN_INVALID,
        ),
        (
            "sub not printable",
            check(&verifier, &fixture.ed(&with("sub", json!("tab\there")))),
            error::TOKEN_INVALID,
        ),
    ];
    for (name, outcome, reason) in cases {
        let refusal = outcome.expect_err(name);
        assert_eq!(refusal.reason(), reason, "{name}: {refusal}");
        let status = tonic::Status::from(refusal);
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
        assert_eq!(
            crate::status::reason(&status).as_deref(),
            Some(reason),
            "{name}"
        );
    }
    // Within the leeway an expiry is tolerated (clock skew).
    assert!(check(&verifier, &fixture.ed(&with("exp", json!(now() - 10)))).is_ok());
}

/// A fixture whose Ed25519 key differs but claims `kid`: a forged token naming a real key.
fn fixture_with_kid(kid: &str) -> Fixture {
    let mut other = fixture();
    other.ed_kid = kid.to_owned();
    other
}

#[tokio::test]
async fn thousands_of_malformed_tokens_are_refused_without_a_panic() {
    let fixture = fixture();
    let verifier = fixture.verifier().await;
    let valid = fixture.ed(&claims("alice"));
    let mut rng = StdRng::seed_from_u64(12);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\"";
    for round in 0..5_000 {
        let mut bytes = valid.clone().into_bytes();
        match round % 5 {
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = alphabet[rng.random_range(0..alphabet.len())];
                }
            }
            1 => bytes.truncate(rng.random_range(0..bytes.len())),
            2 => {
                let len = rng.random_range(0..200);
                bytes = (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect();
            }
            3 => {
                // Segments swapped or repeated.
                let parts: Vec<&str> = valid.split('.').collect();
                let pick = |rng: &mut StdRng| parts[rng.random_range(0..parts.len())];
                bytes = format!("{}.{}.{}", pick(&mut rng), pick(&mut rng), pick(&mut rng))
                    .into_bytes();
            }
            _ => {
                let segment = URL_SAFE_NO_PAD.encode(
                    (0..rng.random_range(0..64))
                        .map(|_| rng.random::<u8>())
                        .collect::<Vec<_>>(),
                );
                bytes = format!("{segment}.{segment}.{segment}").into_bytes();
            }
        }
        let token = String::from_utf8(bytes).unwrap();
        if token == valid {
            continue;
        }
        let header = match HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(header) => header,
            Err(_) => continue,
        };
        match verifier.verify(Some(&header)) {
            // A flipped base64 padding bit can leave the decoded token the same: still the
            // genuine signature over the genuine claims.
            Ok(principal) => assert_eq!(principal.subject, "alice", "round {round}: {token}"),
            Err(refusal) => assert_eq!(refusal.code(), Code::Unauthenticated, "round {round}"),
        }
    }
}

#[tokio::test]
async fn a_rotated_key_file_is_picked_up_and_a_broken_one_ignored() {
    let first = fixture();
    let second = fixture();
    let verifier = first.verifier().await;
    assert!(check(&verifier, &first.ed(&claims("a"))).is_ok());
    // A half-written file keeps the old keys.
    std::fs::File::create(&first.path)
        .unwrap()
        .write_all(b"{\"keys\": [")
        .unwrap();
    tokio::time::sleep(watched::POLL * 2).await;
    assert!(check(&verifier, &first.ed(&claims("a"))).is_ok());
    std::fs::copy(&second.path, &first.path).unwrap();
    let deadline = tokio::time::Instant::now() + watched::POLL * 4;
    while check(&verifier, &second.ed(&claims("a"))).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new key never picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refusal = check(&verifier, &first.ed(&claims("a"))).unwrap_err();
    assert_eq!(refusal.reason(), error::TOKEN_UNKNOWN_KEY);
}

#[test]
fn protected_mode_refuses_beyond_loopback_unless_told() {
    let open = AuthArgs::default();
    let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
    let refusal = protected_mode(any, &open).unwrap_err().to_string();
    assert!(
        refusal.contains("--auth-keys") && refusal.contains("--allow-unauthenticated"),
        "{refusal}"
    );
    assert!(protected_mode("127.0.0.1:0".parse().unwrap(), &open).is_ok());
    assert!(protected_mode("[::1]:0".parse().unwrap(), &open).is_ok());
    let allowed = AuthArgs {
        allow_unauthenticated: true,
        ..AuthArgs::default()
    };
    assert!(protected_mode(any, &allowed).is_ok());
    let keyed = AuthArgs {
        auth_keys: Some("/keys.json".into()),
        ..AuthArgs::default()
    };
    assert!(protected_mode(any, &keyed).is_ok());
}

#[test]
fn issued_tokens_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, signer) = write_key(dir.path()).unwrap();
    assert_eq!(signer.kid(), key.kid);
    assert!(
        write_key(dir.path()).is_err(),
        "an existing key is never replaced"
    );
    let again = Signer::from_pem(&std::fs::read(dir.path().join("private.pem")).unwrap()).unwrap();
    assert_eq!(again.kid(), key.kid);
    let token = signer
        .token(&TokenSpec {
            subject: "ops".into(),
            roles: vec!["operator".into()],
            ttl: Duration::from_secs(60),
            ..TokenSpec::default()
        })
        .unwrap();
    let set = parse_jwks(&std::fs::read(dir.path().join("jwks.json")).unwrap()).unwrap();
    assert_eq!(set.kids(), vec![key.kid.clone()]);
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid,
        Some(key.kid)
    );
}
