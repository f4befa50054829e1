//! approval-svc's audit trail (API.md "Security"; the table and its listing are
//! [`lab_common::audit`]'s): what is recorded, by whom, and in which transaction.
//!
//! **One event per state-changing call that reaches the service's logic**, written in the
//! transaction of the change that decides the call's outcome:
//!
//! - **SubmitChallenge**: with the new row ([`challenges::submit`]); `OK`.
//! - **ApproveChallenge, RetryApproval**: an attempt that starts records at its outcome write
//!   ([`attempts::finish_attempts`]), `OK` or the APPROVE_FAILED reason; one that does not
//!   start records at the intent write that found the challenge elsewhere
//!   ([`attempts::start_attempts`]), `REPLAYED` for a duplicate or the refusal's reason (in a
//!   statement of its own right after the batch's: such a request changed nothing). Both
//!   writes are group-committed with other approvals: one bulk insert per batch.
//! - **RejectChallenge, RequeueDeadLetter**: with the locked transition
//!   ([`challenges::reject`], [`challenges::requeue`]); `OK`, `REPLAYED` (a repeated reject) or
//!   the refusal's reason.
//! - **RevokeApproval**: with the intent write ([`challenges::start_revoke`]), as once REVOKING
//!   the revoke cannot fail (its cancel is repeated until done); `OK`, `REPLAYED`, a reason.
//! - **SetCircuitBreaker**: right after the change, which is not the database's; `OK`.
//! - **RunConsistencyCheck** (not `dry_run`): after the check; `OK` or the reason it stopped.
//!
//! The rules:
//!
//! - **Actor**: the token's `sub` with authentication on (whatever the request's `approver`
//!   says); in open mode the request's `approver` where it has one, else `anonymous`
//!   ([`ANONYMOUS_CLIENT`](lab_common::metadata::ANONYMOUS_CLIENT), as order-svc). The
//!   approver recorded on a challenge is this same actor ([`crate::service::access::caller`]).
//! - **Not recorded**: calls refused before the database (authentication, roles, bad input, a
//!   `user` acting for another): they change nothing; the request log and metrics count them.
//! - **The saga's attempts**: an approval's event travels with its writes ([`Asked`] in
//!   `StartRequest` and `FinishRequest`), so it costs one row in a batch's insert, no round trip
//!   or transaction of its own, and changes nothing of the saga (the intent still commits
//!   before the order call; the outcome write is still fenced by `attempts`). The outcome is what the attempt's order call ended with; an
//!   attempt fenced out by a newer one (a completer took over after the lease) still records
//!   its call, and the newer attempt records its own. When the outcome write itself fails, the
//!   event goes with it, and the attempt is finished by the completer, which records that.
//! - **The service on its own** records as [`SYSTEM_ACTOR`](lab_common::audit::SYSTEM_ACTOR),
//!   in the transaction of its change: the completer's attempts ([`Action::CompleteApproval`],
//!   in the outcome batch like a call's) and revokes ([`Action::CompleteRevoke`]); the
//!   consistency check's heals, under the check's run id (the RPC's request id, or a fresh one
//!   for a periodic check): rolled forward or failed ([`Action::CompleteApproval`]), revoke
//!   finished, retry rescheduled ([`Action::RescheduleRetry`]), ghost order cancelled in
//!   order-svc ([`Action::CancelOrder`], recorded after the cancel).
//!
//! [`challenges::submit`]: crate::repository::challenges::submit
//! [`challenges::reject`]: crate::repository::challenges::reject
//! [`challenges::requeue`]: crate::repository::challenges::requeue
//! [`challenges::start_revoke`]: crate::repository::challenges::start_revoke
//! [`attempts::start_attempts`]: crate::repository::attempts::start_attempts
//! [`attempts::finish_attempts`]: crate::repository::attempts::finish_attempts

use lab_common::audit::{AuditEvent, Caller, OK, REPLAYED};
use lab_common::reason::Reason;

use crate::domain::Operation;
use crate::domain::{AttemptOutcome, Transition};

/// The target of a consistency check's event.
pub const CONSISTENCY_CHECK: &str = "consistency-check";

/// The target of a breaker-control event: the breaker towards order-svc.
pub const ORDER_SVC: &str = "order-svc";

/// What an event says was done: the RPC, or what the service did on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `SubmitChallenge`.
    SubmitChallenge,
    /// `ApproveChallenge`.
    ApproveChallenge,
    /// `RejectChallenge`.
    RejectChallenge,
    /// `RetryApproval`.
    RetryApproval,
    /// `RevokeApproval`.
    RevokeApproval,
    /// `RequeueDeadLetter`.
    RequeueDeadLetter,
    /// `SetCircuitBreaker`.
    SetCircuitBreaker,
    /// `RunConsistencyCheck`.
    RunConsistencyCheck,
    /// An approval attempt the service finished on its own (the completer, a heal).
    CompleteApproval,
    /// A revoke the service finished on its own.
    CompleteRevoke,
    /// A lost transient failure put back on the retry schedule (a heal).
    RescheduleRetry,
    /// An order in order-svc cancelled as compensation (a heal).
    CancelOrder,
}

impl Action {
    /// The recorded spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SubmitChallenge => "SubmitChallenge",
            Self::ApproveChallenge => "ApproveChallenge",
            Self::RejectChallenge => "RejectChallenge",
            Self::RetryApproval => "RetryApproval",
            Self::RevokeApproval => "RevokeApproval",
            Self::RequeueDeadLetter => "RequeueDeadLetter",
            Self::SetCircuitBreaker => "SetCircuitBreaker",
            Self::RunConsistencyCheck => "RunConsistencyCheck",
            Self::CompleteApproval => "CompleteApproval",
            Self::CompleteRevoke => "CompleteRevoke",
            Self::RescheduleRetry => "RescheduleRetry",
            Self::CancelOrder => "CancelOrder",
        }
    }
}

/// Who asked for a change, and as which action: an event short of its target and outcome, so
/// it can travel with a write until the outcome is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The caller (or the service itself).
    pub caller: Caller,
    /// What it asked.
    pub action: Action,
}

impl Asked {
    /// `caller` asking `action`.
    pub fn new(caller: Caller, action: Action) -> Self {
        Self { caller, action }
    }

    /// The service itself doing `action`, in the run `run_id` (empty when none).
    pub fn system(action: Action, run_id: impl Into<String>) -> Self {
        Self::new(Caller::system(run_id), action)
    }

    /// The event on `target` with `outcome`.
    pub fn event(&self, target: impl ToString, outcome: impl Into<String>) -> AuditEvent {
        self.caller.event(self.action.as_str(), target, outcome)
    }
}

/// The outcome of a locking transition for `operation`: `OK` when applied, `REPLAYED` when the
/// row already stands where a duplicate finds it, else the refusal's reason (the answers
/// [`Operation::answer`] gives).
pub fn transition_outcome(operation: Operation, transition: &Transition) -> &'static str {
    match transition {
        Transition::Applied(_) => OK,
        Transition::Unchanged(row) if operation.replays(row.status()) => REPLAYED,
        Transition::Unchanged(_) => operation.reason().as_str(),
        Transition::Missing => Reason::ChallengeNotFound.as_str(),
    }
}

/// The outcome of an approval attempt: `OK`, or its APPROVE_FAILED reason.
pub fn attempt_outcome(outcome: &AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Approved { .. } => OK,
        AttemptOutcome::Failed { reason, .. } => reason.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FailureReason;
    use crate::domain::NextStep;

    #[test]
    fn an_attempt_records_ok_or_its_failure_reason() {
        let order_id = uuid::Uuid::now_v7();
        assert_eq!(attempt_outcome(&AttemptOutcome::Approved { order_id }), OK);
        let failed = AttemptOutcome::Failed {
            reason: FailureReason::OutOfStock,
            message: String::new(),
            next: NextStep::Stop,
            charged: true,
        };
        assert_eq!(attempt_outcome(&failed), "OUT_OF_STOCK");
    }

    #[test]
    fn a_missing_challenge_records_not_found() {
        assert_eq!(
            transition_outcome(Operation::Approve, &Transition::Missing),
            "CHALLENGE_NOT_FOUND"
        );
    }
}
