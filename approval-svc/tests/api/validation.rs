//! Bad inputs per RPC: the documented code, precise details, and nothing written.

use std::future::Future;
use std::pin::Pin;

use lab_proto::approval::v1 as apb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::*;

type Call = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

enum Expect {
    /// INVALID_ARGUMENT with exactly these BadRequest fields.
    Fields(&'static [&'static str]),
    /// This code with this ErrorInfo reason.
    Reason(Code, &'static str),
}

struct Case {
    name: &'static str,
    call: Call,
    expect: Expect,
}

fn case<F, Fut>(
    name: &'static str,
    client: &ApprovalServiceClient<Channel>,
    call: F,
    expect: Expect,
) -> Case
where
    F: FnOnce(ApprovalServiceClient<Channel>) -> Fut,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    Case {
        name,
        call: Box::pin(call(client.clone())),
        expect,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_documented_codes_and_write_nothing() {
    bounded(async {
        let order = OrderSvc::start().await;
        let approval =
            ApprovalSvc::start(ApprovalSvc::config(&fresh_database().await, &order.url())).await;
        let product = order.product(10).await;
        let pending = approval.submit(&product.product_id, 1).await.challenge_id;
        let rejected = approval.submit(&product.product_id, 1).await.challenge_id;
        let mut client = approval.client().await;
        client
            .reject_challenge(apb::RejectChallengeRequest {
                challenge_id: rejected.clone(),
                approver: "admin".into(),
                reason: "no proof".into(),
            })
            .await
            .unwrap();
        let before = approval.all().await;
        let unknown = Uuid::now_v7().to_string();
        let long = "x".repeat(501);
        let user = Uuid::now_v7().to_string();

        use Expect::*;
        let cases = vec![
            case(
                "submit: everything wrong",
                &client,
                |mut c| async move {
                    c.submit_challenge(apb::SubmitChallengeRequest {
                        user_id: "nope".into(),
                        product_id: String::new(),
                        quantity: 0,
                        title: "  ".into(),
                    })
                    .await
                    .map(drop)
                },
                Fields(&["user_id", "product_id", "quantity", "title"]),
            ),
            case(
                "submit: quantity too large, title too long",
                &client,
                {
                    let (user, product) = (user.clone(), product.product_id.clone());
                    move |mut c| async move {
                        c.submit_challenge(apb::SubmitChallengeRequest {
                            user_id: user,
                            product_id: product,
                            quantity: 1_000_001,
                            title: "t".repeat(201),
                        })
                        .await
                        .map(drop)
                    }
                },
                Fields(&["quantity", "title"]),
            ),
            case(
                "get: malformed id",
                &client,
                |mut c| async move {
                    c.get_challenge(apb::GetChallengeRequest {
                        challenge_id: "42".into(),
                    })
                    .await
                    .map(drop)
                },
                Fields(&["challenge_id"]),
            ),
            case(
                "get: unknown id",
                &client,
                {
                    let unknown = unknown.clone();
                    move |mut c| async move {
                        c.get_challenge(apb::GetChallengeRequest {
                            challenge_id: unknown,
                        })
                        .await
                        .map(drop)
                    }
                },
                Reason(Code::NotFound, "CHALLENGE_NOT_FOUND"),
            ),
            case(
                "list: bad status and paging",
                &client,
                |mut c| async move {
                    c.list_challenges(apb::ListChallengesRequest {
                        status: 99,
                        page_size: 501,
                        page_token: "garbage".into(),
                    })
                    .await
                    .map(drop)
                },
                Fields(&["status", "page_size", "page_token"]),
            ),
            case(
                "approve: malformed id, no approver",
                &client,
                |mut c| async move {
                    c.approve_challenge(apb::ApproveChallengeRequest {
                        challenge_id: "x".into(),
                        approver: String::new(),
                    })
                    .await
                    .map(drop)
                },
                Fields(&["challenge_id", "approver"]),
            ),
            case(
                "approve: unknown id",
                &client,
                {
                    let unknown = unknown.clone();
                    move |mut c| async move {
                        c.approve_challenge(apb::ApproveChallengeRequest {
                            challenge_id: unknown,
                            approver: "admin".into(),
                        })
                        .await
                        .map(drop)
                    }
                },
                Reason(Code::NotFound, "CHALLENGE_NOT_FOUND"),
            ),
            case(
                "approve: rejected",
                &client,
                {
                    let rejected = rejected.clone();
                    move |mut c| async move {
                        c.approve_challenge(apb::ApproveChallengeRequest {
                            challenge_id: rejected,
                            approver: "admin".into(),
                        })
                        .await
                        .map(drop)
                    }
                },
                Reason(Code::FailedPrecondition, "CHALLENGE_NOT_APPROVABLE"),
            ),
            case(
                "reject: no approver, reason too long",
                &client,
                {
                    let (pending, long) = (pending.clone(), long.clone());
                    move |mut c| async move {
                        c.reject_challenge(apb::RejectChallengeRequest {
                            challenge_id: pending,
                            approver: " ".into(),
                            reason: long,
                        })
                        .await
                        .map(drop)
                    }
                },
                Fields(&["approver", "reason"]),
            ),
            case(
                "retry: malformed id",
                &client,
                |mut c| async move {
                    c.retry_approval(apb::RetryApprovalRequest {
                        challenge_id: String::new(),
                    })
                    .await
                    .map(drop)
                },
                Fields(&["challenge_id"]),
            ),
            case(
                "retry: pending",
                &client,
                {
                    let pending = pending.clone();
                    move |mut c| async move {
                        c.retry_approval(apb::RetryApprovalRequest {
                            challenge_id: pending,
                        })
                        .await
                        .map(drop)
                    }
                },
                Reason(Code::FailedPrecondition, "CHALLENGE_NOT_RETRYABLE"),
            ),
            case(
                "revoke: reason too long",
                &client,
                {
                    let (pending, long) = (pending.clone(), long.clone());
                    move |mut c| async move {
                        c.revoke_approval(apb::RevokeApprovalRequest {
                            challenge_id: pending,
                            reason: long,
                        })
                        .await
                        .map(drop)
                    }
                },
                Fields(&["reason"]),
            ),
            case(
                "revoke: pending",
                &client,
                {
                    let pending = pending.clone();
                    move |mut c| async move {
                        c.revoke_approval(apb::RevokeApprovalRequest {
                            challenge_id: pending,
                            reason: String::new(),
                        })
                        .await
                        .map(drop)
                    }
                },
                Reason(Code::FailedPrecondition, "CHALLENGE_NOT_REVOCABLE"),
            ),
            case(
                "revoke: unknown",
                &client,
                {
                    let unknown = unknown.clone();
                    move |mut c| async move {
                        c.revoke_approval(apb::RevokeApprovalRequest {
                            challenge_id: unknown,
                            reason: String::new(),
                        })
                        .await
                        .map(drop)
                    }
                },
                Reason(Code::NotFound, "CHALLENGE_NOT_FOUND"),
            ),
            case(
                "dead letters: bad paging",
                &client,
                |mut c| async move {
                    c.list_dead_letters(apb::ListDeadLettersRequest {
                        page_size: -1,
                        page_token: "!".into(),
                    })
                    .await
                    .map(drop)
                },
                Fields(&["page_size", "page_token"]),
            ),
            case(
                "requeue: malformed id",
                &client,
                |mut c| async move {
                    c.requeue_dead_letter(apb::RequeueDeadLetterRequest {
                        challenge_id: "1".into(),
                    })
                    .await
                    .map(drop)
                },
                Fields(&["challenge_id"]),
            ),
            case(
                "requeue: not a dead letter",
                &client,
                {
                    let pending = pending.clone();
                    move |mut c| async move {
                        c.requeue_dead_letter(apb::RequeueDeadLetterRequest {
                            challenge_id: pending,
                        })
                        .await
                        .map(drop)
                    }
                },
                Reason(Code::FailedPrecondition, "CHALLENGE_NOT_DEAD_LETTERED"),
            ),
            case(
                "requeue: unknown",
                &client,
                {
                    let unknown = unknown.clone();
                    move |mut c| async move {
                        c.requeue_dead_letter(apb::RequeueDeadLetterRequest {
                            challenge_id: unknown,
                        })
                        .await
                        .map(drop)
                    }
                },
                Reason(Code::NotFound, "CHALLENGE_NOT_FOUND"),
            ),
        ];

        for Case { name, call, expect } in cases {
            let status = call.await.expect_err(name);
            match expect {
                Fields(fields) => {
                    assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
                    let bad_request = status
                        .get_details_bad_request()
                        .unwrap_or_else(|| panic!("{name}: no BadRequest"));
                    let got: Vec<&str> = bad_request
                        .field_violations
                        .iter()
                        .map(|v| v.field.as_str())
                        .collect();
                    assert_eq!(got, fields, "{name}");
                }
                Reason(code, reason) => {
                    assert_eq!(status.code(), code, "{name}: {status:?}");
                    assert_eq!(
                        lab_common::status::reason(&status).as_deref(),
                        Some(reason),
                        "{name}"
                    );
                }
            }
            assert!(!status.message().to_lowercase().contains("sql"), "{name}");
        }

        assert_eq!(approval.all().await, before, "nothing written");
        assert!(order.orders(&product.product_id).await.is_empty());
    })
    .await;
}
