//! The sold-out memory: once order-svc answers that a product has nothing left, approvals of it
//! are refused OUT_OF_STOCK without a call, for a short while and only under keys never sent
//! (a re-sent key always calls: `unknown_outcomes::
//! a_re_sent_key_is_replayed_even_when_the_product_is_flagged_sold_out`); a cancel by this
//! instance, or the memory's expiry, lets them through again.

use std::sync::Arc;
use std::time::Duration;

use approval_svc::repository::attempts::SOLD_OUT_MESSAGE;
use lab_proto::approval::v1 as apb;
use lab_proto::order::v1 as opb;
use tokio::sync::Barrier;

use crate::helpers::*;

/// An instance driven by hand that remembers a sold-out product for `ttl`, on a fresh database.
async fn remembering(order: &OrderSvc, ttl: Duration) -> ApprovalSvc {
    let mut config = ApprovalSvc::driven_by_hand(&fresh_database().await, order);
    config.sold_out_ttl = ttl;
    ApprovalSvc::start(config).await
}

/// Sells the product's one unit to a first challenge and lets a second one hear OUT_OF_STOCK
/// with nothing left, which the instance then remembers.
async fn sell_out(
    approval: &ApprovalSvc,
    product: &opb::Product,
) -> (apb::Challenge, apb::Challenge) {
    let sold = approval
        .approve(&approval.submit(&product.product_id, 1).await.challenge_id)
        .await;
    assert_eq!(status(&sold), apb::ChallengeStatus::Approved, "{sold:?}");
    let told = approval
        .approve(&approval.submit(&product.product_id, 1).await.challenge_id)
        .await;
    assert_eq!(failure(&told), apb::ApprovalFailureReason::OutOfStock);
    assert_ne!(
        told.failure_message, SOLD_OUT_MESSAGE,
        "that one called order-svc"
    );
    (sold, told)
}

/// With order-svc stopped after it answered sold out, 20 concurrent approvals of that product
/// are still answered APPROVE_FAILED OUT_OF_STOCK (a call would have failed UNAVAILABLE), each
/// a charged-nothing attempt with its audit event; another product's approval does call, and
/// fails as order-svc is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_product_answered_sold_out_is_refused_without_a_call() {
    bounded(async {
        let mut order = OrderSvc::start().await;
        let approval = remembering(&order, Duration::from_secs(600)).await;
        let product = order.product(1).await;
        let other = order.product(5).await;
        sell_out(&approval, &product).await;
        let mut ids = Vec::new();
        for _ in 0..20 {
            ids.push(approval.submit(&product.product_id, 1).await.challenge_id);
        }
        let elsewhere = approval.submit(&other.product_id, 1).await.challenge_id;
        order.stop().await;

        let barrier = Arc::new(Barrier::new(ids.len()));
        let mut tasks = Vec::new();
        for id in &ids {
            let mut client = approval.client().await;
            let (barrier, challenge_id) = (Arc::clone(&barrier), id.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                client
                    .approve_challenge(apb::ApproveChallengeRequest {
                        challenge_id,
                        approver: "admin".into(),
                    })
                    .await
            }));
        }
        for task in tasks {
            let response = task.await.unwrap().expect("every approval answers OK");
            let refused = response.into_inner().challenge.unwrap();
            assert_eq!(status(&refused), apb::ChallengeStatus::ApproveFailed);
            assert_eq!(failure(&refused), apb::ApprovalFailureReason::OutOfStock);
            assert_eq!(refused.failure_message, SOLD_OUT_MESSAGE);
            assert_eq!(refused.attempts, 1);
            assert!(
                !refused.idempotency_key.is_empty(),
                "an attempt takes a key"
            );
            assert!(!refused.dead_lettered && refused.next_attempt_at.is_none());
        }
        let audited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_events
             WHERE action = 'ApproveChallenge' AND outcome = 'OUT_OF_STOCK'
               AND target_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&approval.pool)
        .await
        .unwrap();
        assert_eq!(audited, 20, "each refusal is in the audit trail");

        let called = approval.approve(&elsewhere).await;
        assert_eq!(
            failure(&called),
            apb::ApprovalFailureReason::OrderServiceUnavailable,
            "only the product answered sold out is refused from memory: {called:?}"
        );
    })
    .await;
}

/// Revoking an approval cancels its order, and the instance forgets the product at once: the
/// next approval calls and gets the unit that came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_by_this_instance_forgets_the_product() {
    bounded(async {
        let order = OrderSvc::start().await;
        let approval = remembering(&order, Duration::from_secs(600)).await;
        let product = order.product(1).await;
        let (sold, _) = sell_out(&approval, &product).await;
        let refused = approval
            .approve(&approval.submit(&product.product_id, 1).await.challenge_id)
            .await;
        assert_eq!(refused.failure_message, SOLD_OUT_MESSAGE);

        let revoked = approval.revoke(&sold.challenge_id).await;
        assert_eq!(status(&revoked), apb::ChallengeStatus::Revoked);
        let next = approval
            .approve(&approval.submit(&product.product_id, 1).await.challenge_id)
            .await;
        assert_eq!(status(&next), apb::ChallengeStatus::Approved, "{next:?}");
        assert_invariants(&order, &approval, std::slice::from_ref(&product.product_id)).await;
    })
    .await;
}

/// A restock at order-svc, which approval-svc does not hear of, is seen once the memory
/// expires: a new approval then calls and gets the unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restock_is_seen_once_the_memory_expires() {
    bounded(async {
        let ttl = Duration::from_millis(300);
        let order = OrderSvc::start().await;
        let approval = remembering(&order, ttl).await;
        let product = order.product(1).await;
        sell_out(&approval, &product).await;
        order
            .client()
            .await
            .restock(opb::RestockRequest {
                product_id: product.product_id.clone(),
                quantity: 1,
            })
            .await
            .unwrap();
        tokio::time::sleep(ttl).await;

        let sold = approval
            .approve(&approval.submit(&product.product_id, 1).await.challenge_id)
            .await;
        assert_eq!(status(&sold), apb::ChallengeStatus::Approved, "{sold:?}");
        assert_invariants(&order, &approval, std::slice::from_ref(&product.product_id)).await;
    })
    .await;
}
