//! Request validation: every request is checked completely before anything is read or written,
//! and all violations come back together as `BadRequest` field violations.

use lab_common::paging::PageRequest;
use lab_common::validate::Violations;
use lab_proto::approval::v1 as pb;
use uuid::Uuid;

use crate::domain::{NewChallenge, Status};
use crate::error::ApprovalError;

/// Longest title, approver name.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest reject or revoke reason.
pub const MAX_REASON_CHARS: usize = 500;

/// SubmitChallenge.
pub fn submit(
    request: &pb::SubmitChallengeRequest,
    max_quantity: i32,
) -> Result<NewChallenge, ApprovalError> {
    let mut violations = Violations::default();
    let user_id = violations.uuid("user_id", &request.user_id);
    let product_id = violations.uuid("product_id", &request.product_id);
    violations.range("quantity", request.quantity, 1, max_quantity);
    let title = violations.text("title", &request.title, 1, MAX_NAME_CHARS);
    match (user_id, product_id) {
        (Some(user_id), Some(product_id)) if violations.is_empty() => Ok(NewChallenge {
            user_id,
            product_id,
            quantity: request.quantity,
            title,
        }),
        _ => Err(violations.into()),
    }
}

/// A request naming one challenge and nothing else.
pub fn challenge_id(value: &str) -> Result<Uuid, ApprovalError> {
    let mut violations = Violations::default();
    let id = violations.uuid("challenge_id", value);
    finish(id, violations)
}

/// ApproveChallenge: the id and the approver.
pub fn approve(request: &pb::ApproveChallengeRequest) -> Result<(Uuid, String), ApprovalError> {
    let mut violations = Violations::default();
    let id = violations.uuid("challenge_id", &request.challenge_id);
    let approver = violations.text("approver", &request.approver, 1, MAX_NAME_CHARS);
    finish(id, violations).map(|id| (id, approver))
}

/// RejectChallenge: the id, the approver and an optional reason.
pub fn reject(
    request: &pb::RejectChallengeRequest,
) -> Result<(Uuid, String, String), ApprovalError> {
    let mut violations = Violations::default();
    let id = violations.uuid("challenge_id", &request.challenge_id);
    let approver = violations.text("approver", &request.approver, 1, MAX_NAME_CHARS);
    let reason = violations.text("reason", &request.reason, 0, MAX_REASON_CHARS);
    finish(id, violations).map(|id| (id, approver, reason))
}

/// RevokeApproval: the id and an optional reason.
pub fn revoke(request: &pb::RevokeApprovalRequest) -> Result<(Uuid, String), ApprovalError> {
    let mut violations = Violations::default();
    let id = violations.uuid("challenge_id", &request.challenge_id);
    let reason = violations.text("reason", &request.reason, 0, MAX_REASON_CHARS);
    finish(id, violations).map(|id| (id, reason))
}

/// ListChallenges: an optional status filter and the page.
pub fn list(
    request: &pb::ListChallengesRequest,
) -> Result<(Option<Status>, PageRequest), ApprovalError> {
    let mut violations = Violations::default();
    let status = pb::ChallengeStatus::try_from(request.status).ok();
    violations.known_enum("status", status.is_some());
    let page = PageRequest::parse(request.page_size, &request.page_token, &mut violations);
    finish(status, violations).map(|status| (super::convert::status_from_proto(status), page))
}

/// ListDeadLetters: the page.
pub fn page(page_size: i32, page_token: &str) -> Result<PageRequest, ApprovalError> {
    let mut violations = Violations::default();
    let page = PageRequest::parse(page_size, page_token, &mut violations);
    finish(Some(page), violations)
}

fn finish<T>(value: Option<T>, violations: Violations) -> Result<T, ApprovalError> {
    match value {
        Some(value) if violations.is_empty() => Ok(value),
        _ => Err(violations.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_collects_every_violation() {
        let request = pb::SubmitChallengeRequest {
            user_id: "nope".into(),
            product_id: String::new(),
            quantity: 0,
            title: " ".into(),
        };
        let Err(ApprovalError::Invalid(violations)) = submit(&request, 10) else {
            panic!("expected violations");
        };
        let status = violations.into_result().unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn unknown_status_filter_is_refused() {
        let request = pb::ListChallengesRequest {
            status: 99,
            ..Default::default()
        };
        assert!(matches!(list(&request), Err(ApprovalError::Invalid(_))));
        let request = pb::ListChallengesRequest {
            status: pb::ChallengeStatus::Approved.into(),
            ..Default::default()
        };
        assert_eq!(list(&request).unwrap().0, Some(Status::Approved));
    }
}
