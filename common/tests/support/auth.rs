//! Credentials for the services' authentication tests, shared by order-svc's and
//! approval-svc's API tests (each includes this file with `#[path]`): a signing key, tokens for
//! it, and every kind of bad credential with the refusal it must get.

use std::time::Duration;

use lab_common::auth::issue::{TempKey, TokenSpec};
use tonic::{Code, Request};

/// The audience the tests' services require.
pub(super) const AUDIENCE: &str = "lab";

/// A key the services trust (its `jwks()` is their `--auth-keys`) and its tokens.
pub(super) struct Credentials(pub TempKey);

impl Credentials {
    /// A new key.
    pub(super) fn new() -> Self {
        Self(TempKey::new().unwrap())
    }

    /// What a good token for `subject` with `roles` says.
    pub(super) fn spec(subject: &str, roles: &[&str]) -> TokenSpec {
        TokenSpec {
            subject: subject.into(),
            roles: roles.iter().map(|role| role.to_string()).collect(),
            ttl: Duration::from_secs(600),
            audience: Some(AUDIENCE.into()),
            ..TokenSpec::default()
        }
    }

    /// The `authorization` value of `spec`.
    pub(super) fn bearer_of(&self, spec: &TokenSpec) -> String {
        format!("Bearer {}", self.0.signer().token(spec).unwrap())
    }

    /// The `authorization` value of a good token.
    pub(super) fn bearer(&self, subject: &str, roles: &[&str]) -> String {
        self.bearer_of(&Self::spec(subject, roles))
    }

    /// Every bad credential, each with the code and reason it must be refused with: `roles`
    /// admit every RPC of the service (so only the flaw refuses), `useless` admit none.
    pub(super) fn bad(&self, roles: &[&str], useless: &[&str]) -> Vec<Bad> {
        let good = self.bearer("someone", roles);
        let forged = {
            let (signed, _) = good.rsplit_once('.').unwrap();
            let other = Credentials::new().bearer("someone", roles);
            format!("{signed}.{}", other.rsplit_once('.').unwrap().1)
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let expired = self.bearer_of(&TokenSpec {
            issued_at: Some(now - 7200),
            ..Self::spec("someone", roles)
        });
        let elsewhere = self.bearer_of(&TokenSpec {
            audience: Some("elsewhere".into()),
            ..Self::spec("someone", roles)
        });
        let unauthenticated = |name, header: Option<String>, reason| Bad {
            name,
            header,
            code: Code::Unauthenticated,
            reason,
        };
        vec![
            unauthenticated("no token", None, "TOKEN_MISSING"),
            unauthenticated("garbage", Some("Bearer x.y.z".into()), "TOKEN_MALFORMED"),
            unauthenticated("bad signature", Some(forged), "TOKEN_INVALID"),
            unauthenticated("expired", Some(expired), "TOKEN_EXPIRED"),
            unauthenticated("wrong audience", Some(elsewhere), "TOKEN_WRONG_AUDIENCE"),
            Bad {
                name: "wrong role",
                header: Some(self.bearer("someone", useless)),
                code: Code::PermissionDenied,
                reason: "ROLE_REQUIRED",
            },
        ]
    }
}

/// A bad credential and its refusal.
pub(super) struct Bad {
    /// What is wrong with it.
    pub name: &'static str,
    /// The `authorization` value, if any.
    pub header: Option<String>,
    /// The code it gets.
    pub code: Code,
    /// The `ErrorInfo` reason it gets.
    pub reason: &'static str,
}

impl Bad {
    /// Asserts `outcome` is this refusal.
    pub(super) fn assert_refused<T: std::fmt::Debug>(
        &self,
        rpc: &str,
        outcome: Result<T, tonic::Status>,
    ) {
        let status = outcome.expect_err(&format!("{rpc} with {}", self.name));
        assert_eq!(
            status.code(),
            self.code,
            "{rpc} with {}: {status:?}",
            self.name
        );
        assert_eq!(
            lab_common::status::reason(&status).as_deref(),
            Some(self.reason),
            "{rpc} with {}",
            self.name
        );
    }
}

/// `request` with `authorization: <header>` when given.
pub(super) fn with_auth<T>(mut request: Request<T>, header: Option<&str>) -> Request<T> {
    if let Some(header) = header {
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
    }
    request
}
