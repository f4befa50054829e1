//! The one error type of approval-svc and its one mapping to `tonic::Status`.
//!
//! Every reason string here is part of the public contract (`ErrorInfo.reason`, domain `lab`).
//! Database errors are logged with their cause and reach clients only as a code and a reason.
//! Failures of order-svc are not errors of this service: they end as APPROVE_FAILED with a
//! reason on the challenge (see [`crate::saga`]).

use lab_common::reason::Reason;
use lab_common::status::{internal, unavailable, with_reason};
use lab_common::validate::Violations;
use tonic::{Code, Status};

use uuid::Uuid;

use crate::domain::{Challenge, Operation, Status as ChallengeStatus, Transition};
use crate::repository::attempts::BatchError;

impl Operation {
    /// The answer to a locking transition of challenge `id` for this operation: the row when
    /// applied or replayed, else the refusal.
    pub fn answer(self, id: Uuid, transition: Transition) -> Result<Challenge, ApprovalError> {
        match transition {
            Transition::Applied(row) => Ok(row),
            Transition::Unchanged(row) if self.replays(row.status()) => {
                tracing::debug!(status = row.status().as_str(), "duplicate request");
                Ok(row)
            }
            Transition::Unchanged(row) => Err(ApprovalError::WrongState {
                id,
                status: row.status(),
                operation: self,
            }),
            Transition::Missing => Err(ApprovalError::NotFound(id)),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Approve => "approved",
            Self::Reject => "rejected",
            Self::Retry => "retried",
            Self::Revoke => "revoked",
            Self::Requeue => "requeued",
        }
    }
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The request is malformed; the violations say where.
    #[error("invalid request")]
    Invalid(Violations),
    /// No challenge with this id.
    #[error("challenge {0} not found")]
    NotFound(Uuid),
    /// The caller may not do this (a `user` acting for someone else).
    #[error(transparent)]
    Denied(#[from] lab_common::auth::AuthError),
    /// The challenge's state does not allow the operation.
    #[error("challenge {id} in {status:?} cannot be {}", operation.verb())]
    WrongState {
        /// The challenge.
        id: Uuid,
        /// Its state when refused.
        status: ChallengeStatus,
        /// What was refused.
        operation: Operation,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A group-committed write's batch failed (see [`crate::write_batch`]).
    #[error("write batch failed: {0}")]
    Batch(#[from] BatchError),
    /// A test failure point made a commit fail (never enabled in production).
    #[error("injected failure: {0}")]
    Injected(&'static str),
    /// Another instance's consistency check holds the lock.
    #[error("another consistency check is running")]
    CheckBusy,
    /// order-svc did not answer a consistency check's call (the checker maps its own failures
    /// here and to [`ApprovalError::Database`]).
    #[error("consistency check stopped: order-svc: {0}")]
    CheckUnanswered(Status),
    /// The task driving the request stopped unexpectedly (panic or runtime shutdown).
    #[error("request task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<Violations> for ApprovalError {
    fn from(violations: Violations) -> Self {
        Self::Invalid(violations)
    }
}

impl From<ApprovalError> for Status {
    fn from(error: ApprovalError) -> Self {
        match error {
            ApprovalError::Invalid(violations) => {
                violations.into_result().err().unwrap_or_else(|| {
                    with_reason(
                        Code::InvalidArgument,
                        Reason::InvalidArgument,
                        "invalid request",
                        [],
                    )
                })
            }
            ApprovalError::Denied(refusal) => refusal.into(),
            ApprovalError::NotFound(id) => with_reason(
                Code::NotFound,
                Reason::ChallengeNotFound,
                format!("challenge {id} not found"),
                [("challenge_id", id.to_string())],
            ),
            ApprovalError::WrongState {
                id,
                status,
                operation,
            } => with_reason(
                Code::FailedPrecondition,
                operation.reason(),
                format!(
                    "challenge {id} is {} and cannot be {}",
                    status.as_str(),
                    operation.verb()
                ),
                [
                    ("challenge_id", id.to_string()),
                    ("status", status.as_str().to_owned()),
                ],
            ),
            ApprovalError::Database(error) => lab_common::status::database(&error),
            ApprovalError::Batch(BatchError::Database(error)) => {
                lab_common::status::database(&error)
            }
            ApprovalError::Batch(BatchError::Unanswered(error)) => {
                tracing::error!(%error, "write batch unanswered");
                internal()
            }
            ApprovalError::Injected(point) => {
                tracing::warn!(point, "injected failure");
                unavailable(
                    Reason::DatabaseUnavailable,
                    "the database is unavailable; retry",
                )
            }
            ApprovalError::Task(error) => {
                tracing::error!(%error, "request task failed");
                internal()
            }
            ApprovalError::CheckBusy => with_reason(
                Code::Aborted,
                Reason::CheckInProgress,
                "another consistency check is running; retry",
                [],
            ),
            ApprovalError::CheckUnanswered(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "check stopped");
                unavailable(
                    Reason::OrderServiceUnavailable,
                    "order-svc did not answer the consistency check; retry",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn refusals_carry_a_precise_code_and_reason() {
        let id = Uuid::now_v7();
        let status = Status::from(ApprovalError::WrongState {
            id,
            status: ChallengeStatus::Rejected,
            operation: Operation::Approve,
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "CHALLENGE_NOT_APPROVABLE");
        assert_eq!(info.domain, "lab");

        let status = Status::from(ApprovalError::NotFound(id));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            lab_common::status::reason(&status).as_deref(),
            Some("CHALLENGE_NOT_FOUND")
        );
    }

    #[test]
    fn database_messages_never_reach_the_client() {
        let status = Status::from(ApprovalError::Database(sqlx::Error::Protocol(
            "secret table detail".into(),
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
