//! The retry schedule's end: dead letters, listed, requeued or retried by hand; and listing by
//! status with paging.

use approval_svc::config::RateTrigger;
use lab_proto::approval::v1 as apb;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_requeued_and_retried() {
    bounded(async {
        let mut order = OrderSvc::start().await;
        let mut config = ApprovalSvc::config(&fresh_database().await, &order.url());
        config.max_attempts = 2;
        config.breaker_consecutive_failures = 1_000;
        config.breaker_failure_rate = RateTrigger::Off;
        let approval = ApprovalSvc::start(config).await;
        let product = order.product(10).await;
        let first = approval.submit(&product.product_id, 1).await.challenge_id;
        let second = approval.submit(&product.product_id, 1).await.challenge_id;
        let untouched = approval.submit(&product.product_id, 1).await.challenge_id;

        order.stop().await;
        for id in [&first, &second] {
            let failed = approval.approve(id).await;
            assert_eq!(status(&failed), apb::ChallengeStatus::ApproveFailed);
        }
        // One automatic retry each (max_attempts = 2), then the dead-letter queue.
        eventually(SETTLE, "two dead letters", || async {
            let mut client = approval.client().await;
            let page = client
                .list_dead_letters(apb::ListDeadLettersRequest::default())
                .await
                .unwrap()
                .into_inner();
            page.challenges.len() == 2
        })
        .await;
        for id in [&first, &second] {
            let dead = approval.get(id).await;
            assert!(dead.dead_lettered);
            assert_eq!(dead.attempts, 2);
            assert!(dead.next_attempt_at.is_none());
            assert_eq!(
                failure(&dead),
                apb::ApprovalFailureReason::OrderServiceUnavailable
            );
        }

        order.restart().await;
        let mut client = approval.client().await;
        let requeued = client
            .requeue_dead_letter(apb::RequeueDeadLetterRequest {
                challenge_id: first.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap();
        assert!(!requeued.dead_lettered);
        assert!(requeued.next_attempt_at.is_some());
        let retried = client
            .retry_approval(apb::RetryApprovalRequest {
                challenge_id: second.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap();
        assert_eq!(status(&retried), apb::ChallengeStatus::Approved);
        assert_eq!(retried.attempts, 3);

        eventually(SETTLE, "the requeued one approved", || async {
            status(&approval.get(&first).await) == apb::ChallengeStatus::Approved
        })
        .await;
        let empty = client
            .list_dead_letters(apb::ListDeadLettersRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(empty.challenges.is_empty());

        // Paging by status: one per page, in submission order, then the end.
        let mut seen = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_challenges(apb::ListChallengesRequest {
                    status: apb::ChallengeStatus::Approved.into(),
                    page_size: 1,
                    page_token,
                })
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.challenges.into_iter().map(|c| c.challenge_id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(seen, [first.clone(), second.clone()]);
        let pending = client
            .list_challenges(apb::ListChallengesRequest {
                status: apb::ChallengeStatus::Pending.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(pending.challenges.len(), 1);
        assert_eq!(pending.challenges[0].challenge_id, untouched);
        assert_eq!(order.orders(&product.product_id).await.len(), 2);
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}
