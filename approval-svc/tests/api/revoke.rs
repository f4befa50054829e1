//! Compensation: revoking an approval returns the stock exactly once, even across a crash
//! between the cancel and the final write.

use lab_proto::approval::v1 as apb;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_returns_the_stock_exactly_once() {
    bounded(async {
        let order = OrderSvc::start().await;
        let approval =
            ApprovalSvc::start(ApprovalSvc::config(&fresh_database().await, &order.url())).await;
        let product = order.product(10).await;
        let challenge = approval.submit(&product.product_id, 3).await;
        let approved = approval.approve(&challenge.challenge_id).await;
        assert_eq!(status(&approved), apb::ChallengeStatus::Approved);
        assert_eq!(order.get_product(&product.product_id).await.stock, 7);

        let revoked = approval.revoke(&challenge.challenge_id).await;
        assert_eq!(status(&revoked), apb::ChallengeStatus::Revoked);
        assert_eq!(revoked.decision_reason, "cheated");
        assert_eq!(order.get_product(&product.product_id).await.stock, 10);

        // Repeats return the challenge as it stands and give nothing back twice.
        let again = approval.revoke(&challenge.challenge_id).await;
        assert_eq!(status(&again), apb::ChallengeStatus::Revoked);
        assert_eq!(order.get_product(&product.product_id).await.stock, 10);
        let orders = order.orders(&product.product_id).await;
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0].cancel_reason, "cheated");
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}

/// The order is cancelled but the REVOKED write is lost: the challenge stays REVOKING, the
/// completer repeats the (idempotent) cancel after the lease and records REVOKED; the stock
/// comes back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_between_cancel_and_final_write_is_finished_by_the_completer() {
    bounded(async {
        let order = OrderSvc::start().await;
        let approval =
            ApprovalSvc::start(ApprovalSvc::config(&fresh_database().await, &order.url())).await;
        let product = order.product(10).await;
        let challenge = approval.submit(&product.product_id, 4).await;
        approval.approve(&challenge.challenge_id).await;

        approval.failure_points.fail_next_revoke_commits(1);
        let answered = approval.revoke(&challenge.challenge_id).await;
        assert_eq!(status(&answered), apb::ChallengeStatus::Revoking);
        assert_eq!(order.get_product(&product.product_id).await.stock, 10);

        eventually(SETTLE, "the completer to finish", || async {
            status(&approval.get(&challenge.challenge_id).await) == apb::ChallengeStatus::Revoked
        })
        .await;
        assert_eq!(
            order.get_product(&product.product_id).await.stock,
            10,
            "stock returned exactly once"
        );
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}
