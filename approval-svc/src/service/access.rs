//! Who may call what on approval-svc (API.md "Security", the roles table), in one place.
//!
//! The role check runs in the [`AuthLayer`](lab_common::auth::AuthLayer) with [`policy`],
//! before any handler work: a refused call writes nothing, starts no attempt and takes no
//! lease. What needs the request body is decided here too, asked by the handlers: a `user`
//! acts only for itself ([`own_challenges_only`]), an approver is who its token says
//! ([`caller`]).

use lab_common::audit::Caller;
use lab_common::auth::{AuthError, principal};
use lab_common::metadata::ANONYMOUS_CLIENT;
use tonic::Request;
use uuid::Uuid;

const APPROVER: &str = "approver";
const OPERATOR: &str = "operator";
const USER: &str = "user";

/// The roles admitting each RPC.
pub fn policy(path: &str) -> &'static [&'static str] {
    if path.starts_with("/lab.approval.v1.OpsService/") {
        return &[OPERATOR];
    }
    match path.strip_prefix("/lab.approval.v1.ApprovalService/") {
        Some("SubmitChallenge" | "GetChallenge" | "ListChallenges") => &[APPROVER, USER],
        Some(
            "ApproveChallenge" | "RejectChallenge" | "RetryApproval" | "RevokeApproval"
            | "ListDeadLetters" | "RequeueDeadLetter",
        ) => &[APPROVER],
        _ => &[],
    }
}

/// The subject a caller is limited to when it is a `user` without `approver`: only its own
/// challenges (submit for itself, get and list its own). `None`: any challenge (an approver,
/// or open mode).
pub fn own_challenges_only<T>(request: &Request<T>) -> Option<String> {
    principal(request)
        .filter(|caller| !caller.has_role(APPROVER))
        .map(|caller| caller.subject.clone())
}

/// Refuses a `user` submitting for someone else.
pub fn check_submitter(own: Option<&str>, user_id: Uuid) -> Result<(), AuthError> {
    match own {
        Some(own) if own != user_id.to_string() => Err(AuthError::NotOwner(format!(
            "a user submits challenges only for itself (user_id {own})"
        ))),
        _ => Ok(()),
    }
}

/// Who makes the call, for its audit event and as the approver a decision records: the
/// token's subject when authentication is on (the request's `approver` field is then ignored),
/// else the request's `approver` where it has one, else [`ANONYMOUS_CLIENT`]. Read before the body is
/// taken.
pub fn caller<T>(request: &Request<T>, approver: Option<&str>) -> Caller {
    Caller::of(request, || approver.unwrap_or(ANONYMOUS_CLIENT).to_owned())
}
