//! Crash windows of the saga, produced for real: a lost post-call commit (ghost order), a lost
//! response, and several instances sharing the completer's work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use approval_svc::config::RateTrigger;
use lab_proto::approval::v1 as apb;
use tokio::sync::Barrier;

use crate::helpers::*;

/// The post-call commit fails after the order was created: the challenge stays APPROVING (the
/// intent), the completer re-drives it after the lease with the same key, order-svc replays the
/// order, and the challenge ends APPROVED with that one order: no ghost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_post_call_commit_is_rolled_forward_by_the_completer() {
    bounded(async {
        let order = OrderSvc::start().await;
        let approval =
            ApprovalSvc::start(ApprovalSvc::config(&fresh_database().await, &order.url())).await;
        let product = order.product(5).await;
        let challenge = approval.submit(&product.product_id, 1).await;

        approval.failure_points.fail_next_approval_commits(1);
        let answered = approval.approve(&challenge.challenge_id).await;
        assert_eq!(status(&answered), apb::ChallengeStatus::Approving);
        assert!(answered.lease_expires_at.is_some());
        // The order exists while the challenge is not APPROVED: the ghost-order window.
        let orders = order.orders(&product.product_id).await;
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0].idempotency_key, answered.idempotency_key);

        eventually(SETTLE, "the completer to approve", || async {
            status(&approval.get(&challenge.challenge_id).await) == apb::ChallengeStatus::Approved
        })
        .await;
        let done = approval.get(&challenge.challenge_id).await;
        assert_eq!(
            done.order_id, orders[0].order_id,
            "the replayed order, not a new one"
        );
        assert_eq!(
            done.attempts, 2,
            "the completer's re-drive is the second attempt"
        );
        assert_eq!(order.orders(&product.product_id).await.len(), 1);
        assert_eq!(order.get_product(&product.product_id).await.stock, 4);
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}

/// Two instances on one database, completers running, due retries for 40 challenges: each
/// challenge is processed by exactly one of them (one more attempt each, one order per key).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_never_process_a_challenge_twice() {
    bounded_alone(async {
        let order = OrderSvc::start().await;
        let database = fresh_database().await;
        let product = order.product(100).await;

        // A first instance whose order-svc does not exist fails every approval transiently;
        // its completer never runs, so the retries are left for the two instances below.
        let mut config = ApprovalSvc::config(&database, &format!("http://{}", dead_address()));
        config.completer_period = Duration::from_secs(3600);
        config.breaker_consecutive_failures = 1_000;
        config.breaker_failure_rate = RateTrigger::Off;
        config.order_call_attempts = 1;
        let mut failing = ApprovalSvc::start(config).await;
        let mut ids = Vec::new();
        for _ in 0..40 {
            let id = failing.submit(&product.product_id, 1).await.challenge_id;
            let failed = failing.approve(&id).await;
            assert_eq!(status(&failed), apb::ChallengeStatus::ApproveFailed);
            assert_eq!(failed.attempts, 1);
            ids.push(id);
        }
        failing.stop().await;

        let barrier = Arc::new(Barrier::new(2));
        let mut starts = Vec::new();
        for _ in 0..2 {
            let mut config = ApprovalSvc::config(&database, &order.url());
            // Small batches so both instances take part.
            config.completer_batch = 4;
            let barrier = Arc::clone(&barrier);
            starts.push(tokio::spawn(async move {
                barrier.wait().await;
                ApprovalSvc::start(config).await
            }));
        }
        let mut instances = Vec::new();
        for start in starts {
            instances.push(start.await.unwrap());
        }

        let challenges = settled(&instances[0], SETTLE_LONG).await;
        assert_eq!(challenges.len(), 40);
        for challenge in &challenges {
            assert_eq!(
                status(challenge),
                apb::ChallengeStatus::Approved,
                "{challenge:?}"
            );
            assert_eq!(challenge.attempts, 2, "processed once: {challenge:?}");
        }
        let orders = order.orders(&product.product_id).await;
        assert_eq!(orders.len(), 40);
        let mut per_key: HashMap<&str, usize> = HashMap::new();
        for order in &orders {
            *per_key.entry(order.idempotency_key.as_str()).or_default() += 1;
        }
        assert!(per_key.values().all(|&n| n == 1), "one order per key");
        assert_eq!(order.get_product(&product.product_id).await.stock, 60);
        assert_invariants(&order, &instances[1], &[product.product_id]).await;
    })
    .await;
}

/// order-svc commits the order, then loses every response (fault layer): the client's own
/// retries replay under the same key and are lost too, so the approval ends APPROVE_FAILED
/// (ORDER_SERVICE_UNAVAILABLE, outcome unknown). Once responses flow again, the automatic retry
/// with the same key gets the stored order replayed: APPROVED, one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_response_is_settled_by_a_retry_with_the_same_key() {
    bounded(async {
        let (order, faults) = OrderSvc::start_with_faults().await;
        let mut config = ApprovalSvc::config(&fresh_database().await, &order.url());
        config.breaker_consecutive_failures = 1_000;
        config.breaker_failure_rate = RateTrigger::Off;
        let approval = ApprovalSvc::start(config).await;
        let product = order.product(5).await;
        let challenge = approval.submit(&product.product_id, 2).await;

        faults.set_from_str("CreateOrder:drop_response").unwrap();
        let answered = approval.approve(&challenge.challenge_id).await;
        faults.clear();
        assert_eq!(status(&answered), apb::ChallengeStatus::ApproveFailed);
        assert_eq!(
            failure(&answered),
            apb::ApprovalFailureReason::OrderServiceUnavailable
        );
        let orders = order.orders(&product.product_id).await;
        assert_eq!(
            orders.len(),
            1,
            "the work was committed, only the answer was lost"
        );

        eventually(SETTLE, "the automatic retry to approve", || async {
            status(&approval.get(&challenge.challenge_id).await) == apb::ChallengeStatus::Approved
        })
        .await;
        let done = approval.get(&challenge.challenge_id).await;
        assert_eq!(
            done.order_id, orders[0].order_id,
            "the same order, replayed"
        );
        assert_eq!(
            done.idempotency_key, answered.idempotency_key,
            "the key never changes"
        );
        assert_eq!(order.orders(&product.product_id).await.len(), 1);
        assert_eq!(order.get_product(&product.product_id).await.stock, 3);
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}
