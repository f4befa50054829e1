//! The gRPC handlers of `lab.approval.v1.ApprovalService`: validate, delegate, convert.
//!
//! Approvals, retries and revokes run in a spawned task: if the caller goes away (cancel,
//! deadline, dropped connection) the handler future is dropped, but the saga still writes its
//! outcome, so an order created by the call is never left to the completer alone.

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

use crate::deadline::caller_deadline;
use crate::domain::{Challenge, Status as ChallengeStatus};
use crate::error::{ApprovalError, Operation};
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
    ) -> Result<Challenge, ApprovalError> {
        let new = parse::submit(&request, self.max_quantity)?;
        access::check_submitter(own.as_deref(), new.user_id)?;
        let id = Uuid::now_v7();
        tracing::Span::current().record("challenge_id", tracing::field::display(id));
        let challenge = challenges::insert(self.saga.pool(), id, &new).await?;
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
        let approver = access::approver(&request, &approver);
        let saga = Arc::clone(&self.saga);
        detached(async move { saga.approve(id, &approver, deadline).await }).await
    }

    #[tracing::instrument(skip_all, fields(challenge_id = %request.get_ref().challenge_id))]
    async fn reject(
        &self,
        request: Request<pb::RejectChallengeRequest>,
    ) -> Result<Challenge, ApprovalError> {
        let (id, approver, reason) = parse::reject(request.get_ref())?;
        let approver = access::approver(&request, &approver);
        if let Some(challenge) =
            challenges::reject(self.saga.pool(), id, &approver, &reason).await?
        {
            tracing::info!("challenge rejected");
            return Ok(challenge);
        }
        match challenges::get(self.saga.pool(), id).await? {
            None => Err(ApprovalError::NotFound(id)),
            // A repeated reject finds its own result: return it, as for any duplicate.
            Some(challenge) if challenge.status() == ChallengeStatus::Rejected => Ok(challenge),
            Some(challenge) => Err(ApprovalError::WrongState {
                id,
                status: challenge.status(),
                operation: Operation::Reject,
            }),
        }
    }

    #[tracing::instrument(skip_all, fields(challenge_id = %request.get_ref().challenge_id))]
    async fn retry(
        &self,
        request: Request<pb::RetryApprovalRequest>,
    ) -> Result<Challenge, ApprovalError> {
        let deadline = caller_deadline(request.metadata(), Instant::now());
        let id = parse::challenge_id(&request.get_ref().challenge_id)?;
        let saga = Arc::clone(&self.saga);
        detached(async move { saga.retry(id, deadline).await }).await
    }

    #[tracing::instrument(skip_all, fields(challenge_id = %request.get_ref().challenge_id))]
    async fn revoke(
        &self,
        request: Request<pb::RevokeApprovalRequest>,
    ) -> Result<Challenge, ApprovalError> {
        let deadline = caller_deadline(request.metadata(), Instant::now());
        let (id, reason) = parse::revoke(request.get_ref())?;
        let saga = Arc::clone(&self.saga);
        detached(async move { saga.revoke(id, &reason, deadline).await }).await
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

    #[tracing::instrument(skip_all, fields(challenge_id = %request.challenge_id))]
    async fn requeue(
        &self,
        request: pb::RequeueDeadLetterRequest,
    ) -> Result<Challenge, ApprovalError> {
        let id = parse::challenge_id(&request.challenge_id)?;
        if let Some(challenge) = challenges::requeue(self.saga.pool(), id).await? {
            tracing::info!("dead letter requeued");
            return Ok(challenge);
        }
        match challenges::get(self.saga.pool(), id).await? {
            None => Err(ApprovalError::NotFound(id)),
            Some(challenge) => Err(ApprovalError::WrongState {
                id,
                status: challenge.status(),
                operation: Operation::Requeue,
            }),
        }
    }
}

/// Runs `work` in its own task, in the current span, and waits for it: dropping the returned
/// future (the caller went away) does not stop the work.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, ApprovalError>> + Send + 'static,
) -> Result<T, ApprovalError> {
    tokio::spawn(work.in_current_span()).await?
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
        respond(
            self.submit(request.into_inner(), own)
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
        respond(self.requeue(request.into_inner()).await.map(|challenge| {
            pb::RequeueDeadLetterResponse {
                challenge: Some(challenge.into()),
            }
        }))
    }
}
