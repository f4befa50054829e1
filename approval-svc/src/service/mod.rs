//! The gRPC handlers of `lab.approval.v1.ApprovalService`: validate, delegate, convert.
//!
//! Approvals, retries and revokes run in a spawned task: if the caller goes away (cancel,
//! deadline, dropped connection) the handler future is dropped, but the saga still writes its
//! outcome, so an order created by the call is never left to the completer alone.
//!
//! Each handler reads its caller from the request before the body; the audit events are
//! written with the changes (see [`crate::audit`]).

pub mod access;
mod convert;
pub mod ops;
pub mod parse;

use std::future::Future;
use std::sync::Arc;

use lab_proto::approval::v1 as pb;
use lab_proto::approval::v1::approval_service_server::ApprovalService;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use lab_common::audit::Caller;

use crate::audit::{Action, Asked};
use crate::deadline::caller_deadline;
use crate::domain::Operation;
use crate::domain::{Challenge, Transition};
use crate::error::ApprovalError;
use crate::repository::challenges;
use crate::saga::Saga;

/// The service implementation.
#[derive(Debug, Clone)]
pub struct ApprovalApi {
    saga: Arc<Saga>,
    max_quantity: i32,
}

impl ApprovalApi {
    /// Handlers over `saga`; SubmitChallenge accepts quantities up to `max_quantity`.
    pub fn new(saga: Arc<Saga>, max_quantity: i32) -> Self {
        Self { saga, max_quantity }
    }

    #[tracing::instrument(skip_all, fields(challenge_id = tracing::field::Empty))]
    async fn submit(
        &self,
        request: pb::SubmitChallengeRequest,
        own: Option<String>,
        caller: Caller,
    ) -> Result<Challenge, ApprovalError> {
        let new = parse::submit(&request, self.max_quantity)?;
        access::check_submitter(own.as_deref(), new.user_id)?;
        let id = Uuid::now_v7();
        tracing::Span::current().record("challenge_id", tracing::field::display(id));
        let asked = Asked::new(caller, Action::SubmitChallenge);
        let challenge = challenges::submit(self.saga.pool(), id, &new, &asked).await?;
        tracing::info!("challenge submitted");
        Ok(challenge)
    }

    #[tracing::instrument(skip_all, fields(challenge_id = %request.challenge_id))]
    async fn get(
        &self,
        request: pb::GetChallengeRequest,
        own: Option<String>,
    ) -> Result<Challenge, ApprovalError> {
        let id = parse::challenge_id(&request.challenge_id)?;
        challenges::get(self.saga.pool(), id)
            .await?
            // Another user's challenge is NOT_FOUND to a user: its existence is not its business.
            .filter(|challenge| own.is_none_or(|own| challenge.user_id.to_string() == own))
            .ok_or(ApprovalError::NotFound(id))
    }

    #[tracing::instrument(skip_all, fields(status = request.status))]
    async fn list(
        &self,
        request: pb::ListChallengesRequest,
        own: Option<String>,
    ) -> Result<pb::ListChallengesResponse, ApprovalError> {
        let (status, page) = parse::list(&request)?;
        let user = match own.map(|own| Uuid::parse_str(&own)) {
            None => None,
            Some(Ok(user)) => Some(user),
            // A user whose subject is no user id owns no challenge.
            Some(Err(_)) => return Ok(pb::ListChallengesResponse::default()),
        };
        let rows = challenges::list(self.saga.pool(), status, user, &page).await?;
        let (rows, next_page_token) = page.finish(rows, |row| row.challenge_id);
        Ok(pb::ListChallengesResponse {
            challenges: rows.into_iter().map(Into::into).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all, fields(challenge_id = %request.get_ref().challenge_id))]
    async fn approve(
        &self,
        request: Request<pb::ApproveChallengeRequest>,
    ) -> Result<Challenge, ApprovalError> {
        let deadline = caller_deadline(request.metadata(), Instant::now());
        let (id, approver) = parse::approve(request.get_ref())?;
        let asked = Asked::new(
            access::caller(&request, Some(&approver)),
            Action::ApproveChallenge,
        );
        let saga = Arc::clone(&self.saga);
        detached(async move { saga.approve(id, asked, deadline).await }).await
    }

    #[tracing::instrument(skip_all, fields(challenge_id = %request.get_ref().challenge_id))]
    async fn reject(
        &self,
        request: Request<pb::RejectChallengeRequest>,
    ) -> Result<Challenge, ApprovalError> {
        let (id, approver, reason) = parse::reject(request.get_ref())?;
        let asked = Asked::new(
            access::caller(&request, Some(&approver)),
            Action::RejectChallenge,
        );
        let pool = self.saga.pool();
        let transition = challenges::reject(pool, id, &asked.caller.actor, &reason, &asked).await?;
        if matches!(transition, Transition::Applied(_)) {
            tracing::info!("challenge rejected");
        }
        // A repeated reject finds its own result: it is returned, as for any duplicate.
        Operation::Reject.answer(id, transition)
    }

    #[tracing::instrument(skip_all, fields(challenge_id = %request.get_ref().challenge_id))]
    async fn retry(
        &self,
        request: Request<pb::RetryApprovalRequest>,
    ) -> Result<Challenge, ApprovalError> {
        let deadline = caller_deadline(request.metadata(), Instant::now());
        let id = parse::challenge_id(&request.get_ref().challenge_id)?;
        let asked = Asked::new(access::caller(&request, None), Action::RetryApproval);
        let saga = Arc::clone(&self.saga);
        detached(async move { saga.retry(id, asked, deadline).await }).await
    }

    #[tracing::instrument(skip_all, fields(challenge_id = %request.get_ref().challenge_id))]
    async fn revoke(
        &self,
        request: Request<pb::RevokeApprovalRequest>,
    ) -> Result<Challenge, ApprovalError> {
        let deadline = caller_deadline(request.metadata(), Instant::now());
        let (id, reason) = parse::revoke(request.get_ref())?;
        let asked = Asked::new(access::caller(&request, None), Action::RevokeApproval);
        let saga = Arc::clone(&self.saga);
        detached(async move { saga.revoke(id, &reason, &asked, deadline).await }).await
    }

    #[tracing::instrument(skip_all)]
    async fn dead_letters(
        &self,
        request: pb::ListDeadLettersRequest,
    ) -> Result<pb::ListDeadLettersResponse, ApprovalError> {
        let page = parse::page(request.page_size, &request.page_token)?;
        let rows = challenges::list_dead_letters(self.saga.pool(), &page).await?;
        let (rows, next_page_token) = page.finish(rows, |row| row.challenge_id);
        Ok(pb::ListDeadLettersResponse {
            challenges: rows.into_iter().map(Into::into).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all, fields(challenge_id = %request.get_ref().challenge_id))]
    async fn requeue(
        &self,
        request: Request<pb::RequeueDeadLetterRequest>,
    ) -> Result<Challenge, ApprovalError> {
        let id = parse::challenge_id(&request.get_ref().challenge_id)?;
        let asked = Asked::new(access::caller(&request, None), Action::RequeueDeadLetter);
        let transition = challenges::requeue(self.saga.pool(), id, &asked).await?;
        if matches!(transition, Transition::Applied(_)) {
            tracing::info!("dead letter requeued");
        }
        Operation::Requeue.answer(id, transition)
    }
}

/// Runs `work` in its own task, in the current span, and waits for it: dropping the returned
/// future (the caller went away) does not stop the work.
///
/// Spawned here, not at the first poll: the returned future then holds only the task's handle,
/// so the call's own future (boxed by tonic, wrapped by every server layer, and moved into a
/// task by hyper) stays a few hundred bytes instead of carrying the saga's state as well.
fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, ApprovalError>> + Send + 'static,
) -> impl Future<Output = Result<T, ApprovalError>> {
    let task = tokio::spawn(work.in_current_span());
    async move { task.await? }
}

fn respond<T>(result: Result<T, ApprovalError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl ApprovalService for ApprovalApi {
    async fn submit_challenge(
        &self,
        request: Request<pb::SubmitChallengeRequest>,
    ) -> Result<Response<pb::SubmitChallengeResponse>, Status> {
        let own = access::own_challenges_only(&request);
        let caller = access::caller(&request, None);
        respond(
            self.submit(request.into_inner(), own, caller)
                .await
                .map(|challenge| pb::SubmitChallengeResponse {
                    challenge: Some(challenge.into()),
                }),
        )
    }

    async fn get_challenge(
        &self,
        request: Request<pb::GetChallengeRequest>,
    ) -> Result<Response<pb::GetChallengeResponse>, Status> {
        let own = access::own_challenges_only(&request);
        respond(self.get(request.into_inner(), own).await.map(|challenge| {
            pb::GetChallengeResponse {
                challenge: Some(challenge.into()),
            }
        }))
    }

    async fn list_challenges(
        &self,
        request: Request<pb::ListChallengesRequest>,
    ) -> Result<Response<pb::ListChallengesResponse>, Status> {
        let own = access::own_challenges_only(&request);
        respond(self.list(request.into_inner(), own).await)
    }

    async fn approve_challenge(
        &self,
        request: Request<pb::ApproveChallengeRequest>,
    ) -> Result<Response<pb::ApproveChallengeResponse>, Status> {
        respond(
            self.approve(request)
                .await
                .map(|challenge| pb::ApproveChallengeResponse {
                    challenge: Some(challenge.into()),
                }),
        )
    }

    async fn reject_challenge(
        &self,
        request: Request<pb::RejectChallengeRequest>,
    ) -> Result<Response<pb::RejectChallengeResponse>, Status> {
        respond(
            self.reject(request)
                .await
                .map(|challenge| pb::RejectChallengeResponse {
                    challenge: Some(challenge.into()),
                }),
        )
    }

    async fn retry_approval(
        &self,
        request: Request<pb::RetryApprovalRequest>,
    ) -> Result<Response<pb::RetryApprovalResponse>, Status> {
        respond(
            self.retry(request)
                .await
                .map(|challenge| pb::RetryApprovalResponse {
                    challenge: Some(challenge.into()),
                }),
        )
    }

    async fn revoke_approval(
        &self,
        request: Request<pb::RevokeApprovalRequest>,
    ) -> Result<Response<pb::RevokeApprovalResponse>, Status> {
        respond(
            self.revoke(request)
                .await
                .map(|challenge| pb::RevokeApprovalResponse {
                    challenge: Some(challenge.into()),
                }),
        )
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        respond(self.dead_letters(request.into_inner()).await)
    }

    async fn requeue_dead_letter(
        &self,
        request: Request<pb::RequeueDeadLetterRequest>,
    ) -> Result<Response<pb::RequeueDeadLetterResponse>, Status> {
        respond(
            self.requeue(request)
                .await
                .map(|challenge| pb::RequeueDeadLetterResponse {
                    challenge: Some(challenge.into()),
                }),
        )
    }
}
