//! The caller's deadline holds even when order-svc hangs.

use std::time::{Duration, Instant};

use approval_svc::config::RateTrigger;
use lab_proto::approval::v1 as apb;

use crate::helpers::*;

/// order-svc delays CreateOrder far beyond the caller's 800 ms deadline: ApproveChallenge still
/// answers OK within it, APPROVE_FAILED(DEADLINE_EXCEEDED); once order-svc is fast again the
/// automatic retry (same key) approves, with one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approval_answers_within_the_callers_deadline_when_order_svc_hangs() {
    bounded(async {
        let (order, faults) = OrderSvc::start_with_faults().await;
        let mut config = ApprovalSvc::config(&fresh_database().await, &order.url());
        config.breaker_consecutive_failures = 1_000;
        config.breaker_failure_rate = RateTrigger::Off;
        let approval = ApprovalSvc::start(config).await;
        let product = order.product(5).await;
        let challenge = approval.submit(&product.product_id, 1).await;

        faults.set_from_str("CreateOrder:delay=5s").unwrap();
        let mut request = tonic::Request::new(apb::ApproveChallengeRequest {
            challenge_id: challenge.challenge_id.clone(),
            approver: "admin".into(),
        });
        let deadline = Duration::from_millis(800);
        request.set_timeout(deadline);
        let started = Instant::now();
        let answered = approval
            .client()
            .await
            .approve_challenge(request)
            .await
            .expect("answered within the deadline")
            .into_inner()
            .challenge
            .unwrap();
        let took = started.elapsed();
        assert!(took < deadline, "took {took:?}");
        assert_eq!(status(&answered), apb::ChallengeStatus::ApproveFailed);
        assert_eq!(
            failure(&answered),
            apb::ApprovalFailureReason::DeadlineExceeded
        );

        faults.clear();
        eventually(SETTLE, "the automatic retry to approve", || async {
            status(&approval.get(&challenge.challenge_id).await) == apb::ChallengeStatus::Approved
        })
        .await;
        // The delayed attempt may still complete on order-svc's side: the key makes it the
        // same order.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(order.orders(&product.product_id).await.len(), 1);
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}
