//! order-svc goes away and comes back: fast failures, an open circuit, automatic recovery.

use std::time::{Duration, Instant};

use lab_proto::approval::v1 as apb;

use crate::helpers::*;

/// order-svc stopped → APPROVE_FAILED(ORDER_SERVICE_UNAVAILABLE), then CIRCUIT_OPEN answered in
/// under 50 ms; order-svc back on the same port and database → the automatic retries turn every
/// challenge APPROVED, and I1–I6 hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_fails_fast_then_recovers_automatically() {
    bounded_alone(async {
        let mut order = OrderSvc::start().await;
        let mut config = ApprovalSvc::config(&fresh_database().await, &order.url());
        // Enough automatic attempts to outlive the outage: nothing is dead-lettered here.
        config.max_attempts = 1_000;
        config.breaker_consecutive_failures = 3;
        let approval = ApprovalSvc::start(config).await;
        let product = order.product(10).await;
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(approval.submit(&product.product_id, 1).await.challenge_id);
        }

        order.stop().await;
        let first = approval.approve(&ids[0]).await;
        assert_eq!(status(&first), apb::ChallengeStatus::ApproveFailed);
        assert_eq!(
            failure(&first),
            apb::ApprovalFailureReason::OrderServiceUnavailable,
            "{first:?}"
        );
        assert!(
            first.next_attempt_at.is_some(),
            "a transient failure is rescheduled"
        );

        // The breaker opens after a few failures; from then on approvals fail in milliseconds.
        let mut client = approval.client().await;
        let mut circuit_open_latencies = Vec::new();
        for id in &ids[1..] {
            let started = Instant::now();
            let challenge = client
                .approve_challenge(apb::ApproveChallengeRequest {
                    challenge_id: id.clone(),
                    approver: "admin".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .challenge
                .unwrap();
            let took = started.elapsed();
            assert_eq!(status(&challenge), apb::ChallengeStatus::ApproveFailed);
            if failure(&challenge) == apb::ApprovalFailureReason::CircuitOpen {
                circuit_open_latencies.push(took);
            }
        }
        // The median, so one scheduling hiccup of a 2-core machine does not decide the test.
        assert!(
            circuit_open_latencies.len() >= 3,
            "the circuit opened during the outage: {circuit_open_latencies:?}"
        );
        circuit_open_latencies.sort();
        let median = circuit_open_latencies[circuit_open_latencies.len() / 2];
        assert!(
            median < Duration::from_millis(50),
            "CIRCUIT_OPEN answers took {circuit_open_latencies:?}"
        );

        order.restart().await;
        eventually(SETTLE_LONG, "every challenge APPROVED", || async {
            approval
                .all()
                .await
                .iter()
                .all(|c| status(c) == apb::ChallengeStatus::Approved)
        })
        .await;
        let challenges = settled(&approval, Duration::from_secs(30)).await;
        assert!(challenges.iter().all(|c| !c.dead_lettered));
        assert_eq!(
            order.orders(&product.product_id).await.len(),
            challenges.len()
        );
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}
