//! The audit trail under a flood of approvals (one event each, in its outcome's batch), its
//! append-only table, and ListAuditEvents' paging, filters and access.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lab_proto::approval::v1 as apb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::approval::v1::ops_service_client::OpsServiceClient;
use lab_proto::audit::v1::AuditEvent;
use tokio::sync::Barrier;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::audit::{call, challenge, channel, expected, fields, open_system, submit_request};
use crate::auth::{secured, with_auth};
use crate::helpers::*;
use crate::support::Credentials;

/// Many approvals at once (one task each, released together) record one event each, with the
/// outcome the challenge ended with and the caller's request id, written by the transaction
/// that wrote the outcome (the row's last writer wrote the event too); the events ride the
/// group-committed batches, so fewer transactions than approvals wrote them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_approvals_record_one_event_each_in_their_outcome_batch() {
    bounded_alone(async {
        const APPROVALS: usize = 64;
        const STOCK: i64 = 40;
        let order = OrderSvc::start().await;
        let mut config = ApprovalSvc::config(&fresh_database().await, &order.url());
        // As in write_batches: the flood's order calls may take longer than the defaults on a
        // shared machine, which this test is not about.
        config.order_attempt_timeout = Duration::from_secs(20);
        config.order_call_timeout = Duration::from_secs(20);
        config.lease = Duration::from_secs(30);
        let approval = ApprovalSvc::start(config).await;
        let product = order.product(STOCK).await.product_id;
        let mut ids = Vec::new();
        for _ in 0..APPROVALS {
            ids.push(approval.submit(&product, 1).await.challenge_id);
        }
        let channel = channel(&approval).await;
        let barrier = Arc::new(Barrier::new(APPROVALS));
        let tasks: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(index, id)| {
                let (barrier, channel, id) = (barrier.clone(), channel.clone(), id.clone());
                tokio::spawn(async move {
                    let mut approvals = ApprovalServiceClient::new(channel);
                    let message = apb::ApproveChallengeRequest {
                        challenge_id: id,
                        approver: format!("approver-{index}"),
                    };
                    let request = call(message, None, &format!("flood-{index}"));
                    barrier.wait().await;
                    challenge(approvals.approve_challenge(request).await)
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }

        let rows: Vec<(String, String, String, String, bool, String)> = sqlx::query_as(
            "SELECT a.target_id, a.actor, a.outcome, a.request_id,
                    a.xmin::text = c.xmin::text, a.xmin::text
             FROM audit_events a JOIN challenges c ON c.challenge_id::text = a.target_id
             WHERE a.action = 'ApproveChallenge'",
        )
        .fetch_all(&approval.pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), APPROVALS, "one event per approval");
        let mut approved = 0;
        for (index, answer) in answers.iter().enumerate() {
            let events: Vec<_> = rows
                .iter()
                .filter(|row| row.0 == answer.challenge_id)
                .collect();
            assert_eq!(events.len(), 1, "{answer:?}");
            let (_, actor, outcome, request_id, with_outcome, _) = events[0];
            let expected_outcome = match status(answer) {
                apb::ChallengeStatus::Approved => "OK",
                apb::ChallengeStatus::ApproveFailed => "OUT_OF_STOCK",
                other => panic!("{other:?}: {answer:?}"),
            };
            approved += usize::from(expected_outcome == "OK");
            assert_eq!(
                (actor.as_str(), outcome.as_str(), request_id.as_str()),
                (
                    format!("approver-{index}").as_str(),
                    expected_outcome,
                    format!("flood-{index}").as_str()
                )
            );
            assert!(with_outcome, "written with the outcome: {answer:?}");
        }
        assert_eq!(approved, STOCK as usize);
        let transactions: HashSet<&str> = rows.iter().map(|row| row.5.as_str()).collect();
        assert!(
            transactions.len() < APPROVALS,
            "{} transactions for {APPROVALS} approvals: no batch shared one",
            transactions.len()
        );
    })
    .await;
}

/// The trail refuses every change, even through the service's own pool and role (in these
/// tests a superuser: the triggers hold for every role): UPDATE, DELETE (also of no row) and
/// TRUNCATE fail with SQLSTATE 42501 and every row stays as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_refuses_every_change_even_to_the_service() {
    bounded(async {
        let (_order, approval, product) = open_system(10).await;
        approval.submit(&product, 1).await;
        approval.submit(&product, 1).await;
        let snapshot = || async {
            let rows: Vec<(Uuid, String, String, String, String, String)> = sqlx::query_as(
                "SELECT event_id, actor, action, target_id, outcome, request_id
                 FROM audit_events ORDER BY event_id",
            )
            .fetch_all(&approval.pool)
            .await
            .unwrap();
            rows
        };
        let before = snapshot().await;
        assert_eq!(before.len(), 2);
        for statement in [
            "UPDATE audit_events SET outcome = 'OK', actor = 'nobody'",
            "UPDATE audit_events SET actor = 'nobody' WHERE event_id = '00000000-0000-0000-0000-000000000000'",
            "DELETE FROM audit_events",
            "DELETE FROM audit_events WHERE event_id = '00000000-0000-0000-0000-000000000000'",
            "TRUNCATE audit_events",
        ] {
            let error = sqlx::query(statement)
                .execute(&approval.pool)
                .await
                .expect_err(statement);
            let code = error
                .as_database_error()
                .and_then(|error| error.code())
                .map(|code| code.into_owned());
            assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
        }
        assert_eq!(snapshot().await, before);
    })
    .await;
}

/// ListAuditEvents: oldest first in pages (2 + 2 + 1 of 5 events), filtered by actor and by
/// target; for the `operator` role only, refused without a token, INVALID_ARGUMENT for a page
/// token it never made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_audit_events_pages_filters_and_serves_operators_only() {
    bounded(async {
        let key = Credentials::new();
        let system = secured(&key).await;
        let alice = key.bearer("alice", &["approver"]);
        let bob = key.bearer("bob", &["approver"]);
        let olga = key.bearer("olga", &["operator"]);
        let channel = channel(&system.approval).await;
        let mut approvals = ApprovalServiceClient::new(channel.clone());
        let mut ids = Vec::new();
        for index in 0..3 {
            let submit = call(
                submit_request(&system.product_id, 1),
                Some(&alice),
                &format!("submit-{index}"),
            );
            ids.push(challenge(approvals.submit_challenge(submit).await).challenge_id);
        }
        for (index, id) in ids[..2].iter().enumerate() {
            let message = apb::RejectChallengeRequest {
                challenge_id: id.clone(),
                approver: "ignored".into(),
                reason: String::new(),
            };
            let reject = call(message, Some(&bob), &format!("reject-{index}"));
            approvals.reject_challenge(reject).await.unwrap();
        }

        let mut ops = OpsServiceClient::new(channel.clone());
        let mut list = async |request: apb::ListAuditEventsRequest, token: Option<&str>| {
            ops.list_audit_events(with_auth(request, token))
                .await
                .map(tonic::Response::into_inner)
        };
        let mut pages = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = apb::ListAuditEventsRequest {
                page_size: 2,
                page_token,
                ..Default::default()
            };
            let page = list(request, Some(&olga)).await.unwrap();
            pages.push(page.events);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        let events: Vec<AuditEvent> = pages.into_iter().flatten().collect();
        assert_eq!(
            events
                .iter()
                .map(|e| e.request_id.as_str())
                .collect::<Vec<_>>(),
            ["submit-0", "submit-1", "submit-2", "reject-0", "reject-1"],
            "oldest first"
        );
        assert!(events.iter().all(|e| e.at.is_some()));

        let by_bob = apb::ListAuditEventsRequest {
            actor: "bob".into(),
            ..Default::default()
        };
        let by_bob = list(by_bob, Some(&olga)).await.unwrap().events;
        assert_eq!(
            by_bob
                .iter()
                .map(|e| e.request_id.as_str())
                .collect::<Vec<_>>(),
            ["reject-0", "reject-1"]
        );
        let on_first = apb::ListAuditEventsRequest {
            target_id: ids[0].clone(),
            ..Default::default()
        };
        let on_first = list(on_first, Some(&olga)).await.unwrap().events;
        assert_eq!(
            on_first.iter().map(fields).collect::<Vec<_>>(),
            expected(&[
                ["alice", "SubmitChallenge", &ids[0], "OK", "submit-0"],
                ["bob", "RejectChallenge", &ids[0], "OK", "reject-0"],
            ])
        );

        let everything = apb::ListAuditEventsRequest::default;
        let denied = list(everything(), Some(&alice)).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let anonymous = list(everything(), None).await.unwrap_err();
        assert_eq!(anonymous.code(), Code::Unauthenticated);
        let garbage = apb::ListAuditEventsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        };
        let garbage = list(garbage, Some(&olga)).await.unwrap_err();
        assert_eq!(garbage.code(), Code::InvalidArgument);
        assert_eq!(
            garbage
                .get_details_bad_request()
                .expect("BadRequest")
                .field_violations
                .iter()
                .map(|v| v.field.as_str())
                .collect::<Vec<_>>(),
            ["page_token"]
        );
    })
    .await;
}
