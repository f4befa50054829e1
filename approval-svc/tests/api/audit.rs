//! The audit trail (issue 12): each state-changing call records exactly one event naming who
//! (the token's subject; in open mode the request's approver, else anonymous), what, on which
//! target, with which outcome, under the call's request id; the service's own work is recorded
//! as `system`; nothing refused before the database is. The helpers here serve `audit_trail`
//! too.

use lab_proto::approval::v1 as apb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::approval::v1::ops_service_client::OpsServiceClient;
use lab_proto::audit::v1::AuditEvent;
use tonic::transport::Channel;
use tonic::{Code, Request};
use uuid::Uuid;

use crate::auth::{secured, with_auth};
use crate::helpers::*;
use crate::support::Credentials;

/// What a test compares of an event: actor, action, target, outcome, request id.
pub(crate) type Fields = [String; 5];

pub(crate) fn fields(event: &AuditEvent) -> Fields {
    [
        event.actor.clone(),
        event.action.clone(),
        event.target_id.clone(),
        event.outcome.clone(),
        event.request_id.clone(),
    ]
}

/// `message` under `token` (when given) and the client's `x-request-id`.
pub(crate) fn call<T>(message: T, token: Option<&str>, request_id: &str) -> Request<T> {
    let mut request = with_auth(message, token);
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().unwrap());
    request
}

pub(crate) async fn channel(approval: &ApprovalSvc) -> Channel {
    Channel::from_shared(format!("http://{}", approval.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The whole trail through ListAuditEvents, oldest first.
pub(crate) async fn trail(channel: &Channel, token: Option<&str>) -> Vec<AuditEvent> {
    let mut ops = OpsServiceClient::new(channel.clone());
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ops
            .list_audit_events(with_auth(
                apb::ListAuditEventsRequest {
                    page_size: 500,
                    page_token,
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

pub(crate) fn submit_request(product_id: &str, quantity: i32) -> apb::SubmitChallengeRequest {
    apb::SubmitChallengeRequest {
        user_id: Uuid::now_v7().to_string(),
        product_id: product_id.into(),
        quantity,
        title: "ran a marathon".into(),
    }
}

pub(crate) fn challenge<T>(answer: Result<tonic::Response<T>, tonic::Status>) -> apb::Challenge
where
    T: HasChallenge,
{
    answer.unwrap().into_inner().challenge()
}

/// The responses that carry one challenge.
pub(crate) trait HasChallenge {
    /// The challenge it carries.
    fn challenge(self) -> apb::Challenge;
}

macro_rules! has_challenge {
    ($($response:ty),*) => {$(
        impl HasChallenge for $response {
            fn challenge(self) -> apb::Challenge {
                self.challenge.expect("a challenge")
            }
        }
    )*};
}

has_challenge!(
    apb::SubmitChallengeResponse,
    apb::ApproveChallengeResponse,
    apb::RejectChallengeResponse,
    apb::RetryApprovalResponse,
    apb::RevokeApprovalResponse,
    apb::RequeueDeadLetterResponse
);

pub(crate) fn expected(rows: &[[&str; 5]]) -> Vec<Fields> {
    rows.iter().map(|row| row.map(str::to_owned)).collect()
}

/// With authentication on, every kind of state-changing call records one event whose actor is
/// the token's subject (never the request's `approver`), with the outcome each call had and
/// the client's request id; a dry run and a call refused for bad input record none; the
/// completer's retry of a requeued dead letter is recorded as `system`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_records_one_event_naming_the_token_subject() {
    bounded(async {
        let key = Credentials::new();
        let system = secured(&key).await;
        let alice = key.bearer("alice", &["approver"]);
        let olga = key.bearer("olga", &["operator"]);
        let (alice, olga) = (Some(alice.as_str()), Some(olga.as_str()));
        let channel = channel(&system.approval).await;
        let mut approvals = ApprovalServiceClient::new(channel.clone());
        let mut ops = OpsServiceClient::new(channel.clone());
        let product = system.product_id.as_str();

        let submit =
            |quantity, request_id| call(submit_request(product, quantity), alice, request_id);
        let first = challenge(approvals.submit_challenge(submit(1, "r-submit-1")).await);
        let second = challenge(approvals.submit_challenge(submit(1, "r-submit-2")).await);
        // More than the stock of 10: a definitive OUT_OF_STOCK.
        let big = challenge(approvals.submit_challenge(submit(11, "r-submit-3")).await);
        let (first, second, big) = (first.challenge_id, second.challenge_id, big.challenge_id);

        let approve = |id: &str, request_id| {
            let message = apb::ApproveChallengeRequest {
                challenge_id: id.into(),
                approver: "mallory".into(),
            };
            call(message, alice, request_id)
        };
        let approved = challenge(
            approvals
                .approve_challenge(approve(&first, "r-approve"))
                .await,
        );
        assert_eq!(status(&approved), apb::ChallengeStatus::Approved);
        assert_eq!(approved.approver, "alice");
        challenge(
            approvals
                .approve_challenge(approve(&first, "r-approve-again"))
                .await,
        );
        let reject = |request_id| {
            let message = apb::RejectChallengeRequest {
                challenge_id: second.clone(),
                approver: "mallory".into(),
                reason: "no proof".into(),
            };
            call(message, alice, request_id)
        };
        challenge(approvals.reject_challenge(reject("r-reject")).await);
        challenge(approvals.reject_challenge(reject("r-reject-again")).await);
        let failed = challenge(
            approvals
                .approve_challenge(approve(&big, "r-approve-big"))
                .await,
        );
        assert_eq!(failure(&failed), apb::ApprovalFailureReason::OutOfStock);
        let retry = apb::RetryApprovalRequest {
            challenge_id: big.clone(),
        };
        challenge(
            approvals
                .retry_approval(call(retry, alice, "r-retry"))
                .await,
        );
        let revoke = apb::RevokeApprovalRequest {
            challenge_id: first.clone(),
            reason: "cheated".into(),
        };
        let revoked = challenge(
            approvals
                .revoke_approval(call(revoke, alice, "r-revoke"))
                .await,
        );
        assert_eq!(status(&revoked), apb::ChallengeStatus::Revoked);
        let requeue = |request_id| {
            let message = apb::RequeueDeadLetterRequest {
                challenge_id: big.clone(),
            };
            call(message, alice, request_id)
        };
        let refused = approvals
            .requeue_dead_letter(requeue("r-requeue-refused"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        let bad = approvals
            .approve_challenge(approve("not-an-id", "r-bad-input"))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        let breaker = apb::SetCircuitBreakerRequest {
            state: apb::CircuitState::Closed.into(),
        };
        ops.set_circuit_breaker(call(breaker, olga, "r-breaker"))
            .await
            .unwrap();
        let dry = apb::RunConsistencyCheckRequest {
            full: true,
            dry_run: true,
        };
        ops.run_consistency_check(call(dry, olga, "r-dry-run"))
            .await
            .unwrap();
        let check = apb::RunConsistencyCheckRequest {
            full: true,
            dry_run: false,
        };
        ops.run_consistency_check(call(check, olga, "r-check"))
            .await
            .unwrap();

        // A dead letter (set behind the service's back: the retry schedule is not this test's
        // subject), requeued: the completer retries it on its own.
        sqlx::query("UPDATE challenges SET dead_lettered = true WHERE challenge_id = $1::uuid")
            .bind(&big)
            .execute(&system.approvals_db)
            .await
            .unwrap();
        challenge(approvals.requeue_dead_letter(requeue("r-requeue")).await);
        eventually(SETTLE, "the completer's retry is recorded", || async {
            trail(&channel, olga).await.len() == 15
        })
        .await;

        let recorded: Vec<Fields> = trail(&channel, olga).await.iter().map(fields).collect();
        assert_eq!(
            recorded,
            expected(&[
                ["alice", "SubmitChallenge", &first, "OK", "r-submit-1"],
                ["alice", "SubmitChallenge", &second, "OK", "r-submit-2"],
                ["alice", "SubmitChallenge", &big, "OK", "r-submit-3"],
                ["alice", "ApproveChallenge", &first, "OK", "r-approve"],
                [
                    "alice",
                    "ApproveChallenge",
                    &first,
                    "REPLAYED",
                    "r-approve-again"
                ],
                ["alice", "RejectChallenge", &second, "OK", "r-reject"],
                [
                    "alice",
                    "RejectChallenge",
                    &second,
                    "REPLAYED",
                    "r-reject-again"
                ],
                [
                    "alice",
                    "ApproveChallenge",
                    &big,
                    "OUT_OF_STOCK",
                    "r-approve-big"
                ],
                ["alice", "RetryApproval", &big, "OUT_OF_STOCK", "r-retry"],
                ["alice", "RevokeApproval", &first, "OK", "r-revoke"],
                [
                    "alice",
                    "RequeueDeadLetter",
                    &big,
                    "CHALLENGE_NOT_DEAD_LETTERED",
                    "r-requeue-refused",
                ],
                ["olga", "SetCircuitBreaker", "order-svc", "OK", "r-breaker"],
                [
                    "olga",
                    "RunConsistencyCheck",
                    "consistency-check",
                    "OK",
                    "r-check"
                ],
                ["alice", "RequeueDeadLetter", &big, "OK", "r-requeue"],
                ["system", "CompleteApproval", &big, "OUT_OF_STOCK", ""],
            ])
        );
    })
    .await;
}

/// approval-svc in open mode on a fresh database, order-svc with a product of `stock`.
pub(crate) async fn open_system(stock: i64) -> (OrderSvc, ApprovalSvc, String) {
    let order = OrderSvc::start().await;
    let approval =
        ApprovalSvc::start(ApprovalSvc::config(&fresh_database().await, &order.url())).await;
    let product_id = order.product(stock).await.product_id;
    (order, approval, product_id)
}

/// Without authentication the actor is the request's `approver` where it has one, else
/// `anonymous`; a call without `x-request-id` is recorded under the one the server made (and
/// returned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_open_mode_the_actor_is_the_requests_approver_else_anonymous() {
    bounded(async {
        let (_order, approval, product) = open_system(10).await;
        let channel = channel(&approval).await;
        let mut approvals = ApprovalServiceClient::new(channel.clone());
        let mut ops = OpsServiceClient::new(channel.clone());
        let submit = |request_id| call(submit_request(&product, 1), None, request_id);
        let first = challenge(approvals.submit_challenge(submit("o-submit-1")).await);
        let second = challenge(approvals.submit_challenge(submit("o-submit-2")).await);
        let (first, second) = (first.challenge_id, second.challenge_id);
        let approve = apb::ApproveChallengeRequest {
            challenge_id: first.clone(),
            approver: "bob".into(),
        };
        challenge(
            approvals
                .approve_challenge(call(approve, None, "o-approve"))
                .await,
        );
        let reject = apb::RejectChallengeRequest {
            challenge_id: second.clone(),
            approver: "carol".into(),
            reason: String::new(),
        };
        challenge(
            approvals
                .reject_challenge(call(reject, None, "o-reject"))
                .await,
        );
        let revoke = apb::RevokeApprovalRequest {
            challenge_id: first.clone(),
            reason: String::new(),
        };
        challenge(
            approvals
                .revoke_approval(call(revoke, None, "o-revoke"))
                .await,
        );
        let breaker = apb::SetCircuitBreakerRequest {
            state: apb::CircuitState::Closed.into(),
        };
        ops.set_circuit_breaker(call(breaker, None, "o-breaker"))
            .await
            .unwrap();
        let unnamed = approvals
            .submit_challenge(submit_request(&product, 1))
            .await
            .unwrap();
        let server_request_id = unnamed
            .metadata()
            .get("x-request-id")
            .expect("the server returns its request id")
            .to_str()
            .unwrap()
            .to_owned();
        let third = unnamed.into_inner().challenge.unwrap().challenge_id;

        let recorded: Vec<Fields> = trail(&channel, None).await.iter().map(fields).collect();
        assert_eq!(
            recorded,
            expected(&[
                ["anonymous", "SubmitChallenge", &first, "OK", "o-submit-1"],
                ["anonymous", "SubmitChallenge", &second, "OK", "o-submit-2"],
                ["bob", "ApproveChallenge", &first, "OK", "o-approve"],
                ["carol", "RejectChallenge", &second, "OK", "o-reject"],
                ["anonymous", "RevokeApproval", &first, "OK", "o-revoke"],
                [
                    "anonymous",
                    "SetCircuitBreaker",
                    "order-svc",
                    "OK",
                    "o-breaker"
                ],
                [
                    "anonymous",
                    "SubmitChallenge",
                    &third,
                    "OK",
                    &server_request_id
                ],
            ])
        );
        assert!(Uuid::parse_str(&server_request_id).is_ok());
    })
    .await;
}

/// Calls refused for bad input change nothing and record nothing; refusals the state decides
/// (in the write's transaction) record their reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_records_nothing_and_refusals_by_state_record_their_reason() {
    bounded(async {
        let (_order, approval, product) = open_system(10).await;
        let channel = channel(&approval).await;
        let mut approvals = ApprovalServiceClient::new(channel.clone());
        let mut ops = OpsServiceClient::new(channel.clone());
        let pending = approval.submit(&product, 1).await.challenge_id;
        let rejected = approval.submit(&product, 1).await.challenge_id;
        let reject = |id: &str, approver: &str| apb::RejectChallengeRequest {
            challenge_id: id.into(),
            approver: approver.into(),
            reason: String::new(),
        };
        approvals
            .reject_challenge(reject(&rejected, "admin"))
            .await
            .unwrap();
        let before = trail(&channel, None).await;
        assert_eq!(before.len(), 3);

        let invalid = [
            approvals
                .submit_challenge(submit_request("not-a-product", 0))
                .await
                .map(drop),
            approvals
                .approve_challenge(apb::ApproveChallengeRequest {
                    challenge_id: pending.clone(),
                    approver: " ".into(),
                })
                .await
                .map(drop),
            approvals
                .reject_challenge(reject("x", "admin"))
                .await
                .map(drop),
            approvals
                .retry_approval(apb::RetryApprovalRequest {
                    challenge_id: String::new(),
                })
                .await
                .map(drop),
            approvals
                .revoke_approval(apb::RevokeApprovalRequest {
                    challenge_id: pending.clone(),
                    reason: "x".repeat(501),
                })
                .await
                .map(drop),
            approvals
                .requeue_dead_letter(apb::RequeueDeadLetterRequest {
                    challenge_id: "1".into(),
                })
                .await
                .map(drop),
            ops.set_circuit_breaker(apb::SetCircuitBreakerRequest {
                state: apb::CircuitState::HalfOpen.into(),
            })
            .await
            .map(drop),
        ];
        for (index, refused) in invalid.into_iter().enumerate() {
            let status = refused.expect_err("bad input");
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "call {index}: {status:?}"
            );
        }
        assert_eq!(trail(&channel, None).await, before, "bad input recorded");

        let unknown = Uuid::now_v7().to_string();
        let approve = |id: &str| apb::ApproveChallengeRequest {
            challenge_id: id.into(),
            approver: "admin".into(),
        };
        let refusals = [
            approvals
                .approve_challenge(approve(&rejected))
                .await
                .map(drop),
            approvals
                .approve_challenge(approve(&unknown))
                .await
                .map(drop),
            approvals
                .reject_challenge(reject(&unknown, "admin"))
                .await
                .map(drop),
            approvals
                .retry_approval(apb::RetryApprovalRequest {
                    challenge_id: pending.clone(),
                })
                .await
                .map(drop),
            approvals
                .revoke_approval(apb::RevokeApprovalRequest {
                    challenge_id: pending.clone(),
                    reason: String::new(),
                })
                .await
                .map(drop),
            approvals
                .requeue_dead_letter(apb::RequeueDeadLetterRequest {
                    challenge_id: pending.clone(),
                })
                .await
                .map(drop),
        ];
        assert!(refusals.iter().all(Result::is_err), "{refusals:?}");
        let recorded: Vec<[String; 4]> = trail(&channel, None).await[before.len()..]
            .iter()
            .map(|e| fields(e)[..4].to_vec().try_into().unwrap())
            .collect();
        let rows: &[[&str; 4]] = &[
            [
                "admin",
                "ApproveChallenge",
                &rejected,
                "CHALLENGE_NOT_APPROVABLE",
            ],
            ["admin", "ApproveChallenge", &unknown, "CHALLENGE_NOT_FOUND"],
            ["admin", "RejectChallenge", &unknown, "CHALLENGE_NOT_FOUND"],
            [
                "anonymous",
                "RetryApproval",
                &pending,
                "CHALLENGE_NOT_RETRYABLE",
            ],
            [
                "anonymous",
                "RevokeApproval",
                &pending,
                "CHALLENGE_NOT_REVOCABLE",
            ],
            [
                "anonymous",
                "RequeueDeadLetter",
                &pending,
                "CHALLENGE_NOT_DEAD_LETTERED",
            ],
        ];
        assert_eq!(
            recorded,
            rows.iter()
                .map(|row| row.map(str::to_owned))
                .collect::<Vec<_>>()
        );
    })
    .await;
}
