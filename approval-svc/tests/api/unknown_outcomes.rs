//! What a lost reply leaves behind: an order cancelled before the replay (ORDER_CANCELLED, and a
//! manual retry under a new key), and a later refusal that must not hide a possibly created
//! order (the outcome stays unknown: retried with the same key, dead-lettered at the end).

use std::time::Duration;

use lab_proto::approval::v1 as apb;
use lab_proto::order::v1 as opb;

use crate::helpers::*;

async fn cancel(order: &OrderSvc, order_id: &str) {
    order
        .client()
        .await
        .cancel_order(opb::CancelOrderRequest {
            order_id: order_id.into(),
            reason: "the customer changed their mind".into(),
        })
        .await
        .unwrap();
}

/// The first reply is lost, the shop cancels that order, RetryApproval replays it: the challenge
/// is APPROVE_FAILED(ORDER_CANCELLED), never APPROVED over a CANCELLED order; duplicates leave it
/// as it stands; the next RetryApproval starts over under a new key, with a fresh retry budget,
/// and creates a new order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_cancelled_order_is_order_cancelled_and_a_manual_retry_uses_a_new_key() {
    bounded(async {
        let (order, faults) = OrderSvc::start_with_faults().await;
        let mut config = ApprovalSvc::driven_by_hand(&fresh_database().await, &order);
        config.max_attempts = 2;
        let approval = ApprovalSvc::start(config).await;
        let product = order.product(5).await;
        let id = approval.submit(&product.product_id, 2).await.challenge_id;

        faults.set_from_str("CreateOrder:drop_response").unwrap();
        let lost = approval.approve(&id).await;
        faults.clear();
        assert_eq!(status(&lost), apb::ChallengeStatus::ApproveFailed);
        assert_eq!(
            failure(&lost),
            apb::ApprovalFailureReason::OrderServiceUnavailable
        );
        let orders = order.orders(&product.product_id).await;
        assert_eq!(orders.len(), 1, "the lost reply's order exists");
        assert_eq!(orders[0].idempotency_key, lost.idempotency_key);
        cancel(&order, &orders[0].order_id).await;

        let replayed = approval.retry(&id).await;
        assert_eq!(
            status(&replayed),
            apb::ChallengeStatus::ApproveFailed,
            "a replay of a CANCELLED order is no approval: {replayed:?}"
        );
        assert_eq!(
            failure(&replayed),
            apb::ApprovalFailureReason::OrderCancelled
        );
        assert!(replayed.order_id.is_empty());
        assert!(
            replayed.next_attempt_at.is_none() && !replayed.dead_lettered,
            "definitive: no automatic retry, no dead letter: {replayed:?}"
        );
        assert_eq!(replayed.idempotency_key, lost.idempotency_key);

        // A duplicate ApproveChallenge returns it as it stands, starting nothing.
        let duplicate = approval.approve(&id).await;
        assert_eq!(status(&duplicate), apb::ChallengeStatus::ApproveFailed);
        assert_eq!(duplicate.attempts, replayed.attempts);

        // RetryApproval starts over under a new key (the old order is terminal) with a fresh
        // budget: two attempts are spent, yet a transient failure now is only rescheduled.
        faults
            .set_from_str("CreateOrder:error=UNAVAILABLE")
            .unwrap();
        let restarted = approval.retry(&id).await;
        faults.clear();
        assert_ne!(restarted.idempotency_key, lost.idempotency_key);
        assert_eq!(
            failure(&restarted),
            apb::ApprovalFailureReason::OrderServiceUnavailable
        );
        assert!(
            !restarted.dead_lettered && restarted.next_attempt_at.is_some(),
            "the new key's first attempt, not the budget's third: {restarted:?}"
        );
        let fresh = approval.retry(&id).await;
        assert_eq!(status(&fresh), apb::ChallengeStatus::Approved, "{fresh:?}");
        assert_eq!(fresh.idempotency_key, restarted.idempotency_key, "kept");
        assert_ne!(fresh.order_id, orders[0].order_id);
        let orders = order.orders(&product.product_id).await;
        assert_eq!(orders.len(), 2);
        assert_eq!(order.get_product(&product.product_id).await.stock, 3);
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}

/// The completer uses the same saga: a dead letter whose order was cancelled, requeued and
/// re-driven by another instance's completer, ends APPROVE_FAILED(ORDER_CANCELLED), not
/// APPROVED; RetryApproval then approves it under a new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_completer_records_a_cancelled_replay_as_order_cancelled() {
    bounded(async {
        let (order, faults) = OrderSvc::start_with_faults().await;
        let database = fresh_database().await;
        let mut config = ApprovalSvc::driven_by_hand(&database, &order);
        config.max_attempts = 1;
        let by_hand = ApprovalSvc::start(config).await;
        let product = order.product(5).await;
        let id = by_hand.submit(&product.product_id, 1).await.challenge_id;

        faults.set_from_str("CreateOrder:drop_response").unwrap();
        let dead = by_hand.approve(&id).await;
        faults.clear();
        assert!(dead.dead_lettered, "{dead:?}");
        let orders = order.orders(&product.product_id).await;
        cancel(&order, &orders[0].order_id).await;
        let requeued = by_hand
            .client()
            .await
            .requeue_dead_letter(apb::RequeueDeadLetterRequest {
                challenge_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap();
        assert!(!requeued.dead_lettered && requeued.next_attempt_at.is_some());

        let mut config = ApprovalSvc::config(&database, &order.url());
        config.check_interval = Duration::ZERO;
        let completing = ApprovalSvc::start(config).await;
        eventually(
            SETTLE,
            "the completer to re-drive the requeued challenge",
            || async {
                let now = completing.get(&id).await;
                now.attempts == 2 && status(&now) != apb::ChallengeStatus::Approving
            },
        )
        .await;
        let driven = completing.get(&id).await;
        assert_eq!(
            status(&driven),
            apb::ChallengeStatus::ApproveFailed,
            "{driven:?}"
        );
        assert_eq!(failure(&driven), apb::ApprovalFailureReason::OrderCancelled);
        assert!(driven.next_attempt_at.is_none() && !driven.dead_lettered);

        let fresh = completing.retry(&id).await;
        assert_eq!(status(&fresh), apb::ChallengeStatus::Approved, "{fresh:?}");
        assert_ne!(fresh.idempotency_key, dead.idempotency_key);
        assert_invariants(&order, &completing, &[product.product_id]).await;
    })
    .await;
}

/// The first try creates the order and loses its reply, the retry gets INTERNAL: the order may
/// exist, so the approval is a transient failure (retried with the same key, a dead letter when
/// the budget is spent), never REJECTED_BY_ORDER_SERVICE; once order-svc answers, the retry
/// replays the first order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_after_a_possibly_delivered_attempt_stays_unknown() {
    bounded(async {
        let (order, faults) = OrderSvc::start_with_faults().await;
        let mut config = ApprovalSvc::driven_by_hand(&fresh_database().await, &order);
        config.order_call_attempts = 3;
        config.max_attempts = 2;
        let approval = ApprovalSvc::start(config).await;
        let product = order.product(5).await;
        let id = approval.submit(&product.product_id, 1).await.challenge_id;

        faults
            .set_from_str("CreateOrder@1:drop_response;CreateOrder@2:error=INTERNAL")
            .unwrap();
        let first = approval.approve(&id).await;
        assert_eq!(status(&first), apb::ChallengeStatus::ApproveFailed);
        assert_eq!(
            failure(&first),
            apb::ApprovalFailureReason::OrderServiceUnavailable,
            "the first try may have created the order: {first:?}"
        );
        assert!(first.next_attempt_at.is_some(), "rescheduled: {first:?}");
        assert_eq!(order.orders(&product.product_id).await.len(), 1);

        // The budget's last attempt meets the same story: a dead letter, not a refusal.
        let second = approval.retry(&id).await;
        assert_eq!(
            failure(&second),
            apb::ApprovalFailureReason::OrderServiceUnavailable,
            "{second:?}"
        );
        assert!(second.dead_lettered, "{second:?}");

        faults.clear();
        let approved = approval.retry(&id).await;
        assert_eq!(status(&approved), apb::ChallengeStatus::Approved);
        assert_eq!(approved.idempotency_key, first.idempotency_key);
        let orders = order.orders(&product.product_id).await;
        assert_eq!(orders.len(), 1, "the first try's order, replayed");
        assert_eq!(approved.order_id, orders[0].order_id);
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}

/// The lost reply's order took the last unit, so order-svc now refuses that product from its
/// sold-out flag without asking the database, and approval-svc remembers it sold out (for the
/// whole test: a long `sold_out_ttl`). RetryApproval re-sends the same key: it must reach
/// order-svc's database and replay the order (APPROVED), never be refused OUT_OF_STOCK by either
/// memory while its order exists (a ghost order and a wrong definitive refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_re_sent_key_is_replayed_even_when_the_product_is_flagged_sold_out() {
    bounded(async {
        let (order, faults) = OrderSvc::start_with_faults().await;
        let mut config = ApprovalSvc::driven_by_hand(&fresh_database().await, &order);
        config.sold_out_ttl = Duration::from_secs(600);
        let approval = ApprovalSvc::start(config).await;
        let product = order.product(1).await;
        let id = approval.submit(&product.product_id, 1).await.challenge_id;

        faults.set_from_str("CreateOrder:drop_response").unwrap();
        let lost = approval.approve(&id).await;
        faults.clear();
        assert_eq!(status(&lost), apb::ChallengeStatus::ApproveFailed);
        assert_eq!(order.orders(&product.product_id).await.len(), 1);

        // A first attempt of another key is refused: the product is sold out.
        let other = approval.submit(&product.product_id, 1).await.challenge_id;
        let refused = approval.approve(&other).await;
        assert_eq!(failure(&refused), apb::ApprovalFailureReason::OutOfStock);

        let replayed = approval.retry(&id).await;
        assert_eq!(
            status(&replayed),
            apb::ChallengeStatus::Approved,
            "a re-sent key replays its order: {replayed:?}"
        );
        let orders = order.orders(&product.product_id).await;
        assert_eq!(orders.len(), 1, "still one order");
        assert_eq!(replayed.order_id, orders[0].order_id);
        assert_invariants(&order, &approval, std::slice::from_ref(&product.product_id)).await;
    })
    .await;
}
