//! Concurrency of approvals: duplicates and the stock race.

use std::sync::Arc;

use lab_proto::approval::v1 as apb;
use tokio::sync::Barrier;

use crate::helpers::*;

/// 50 concurrent ApproveChallenge calls on one challenge, each on its own connection: every
/// response is OK, exactly one order exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_approvals_create_exactly_one_order() {
    bounded_alone(async {
        let order = OrderSvc::start().await;
        let approval =
            ApprovalSvc::start(ApprovalSvc::config(&fresh_database().await, &order.url())).await;
        let product = order.product(10).await;
        let challenge = approval.submit(&product.product_id, 2).await;

        let barrier = Arc::new(Barrier::new(50));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let mut client = approval.client().await;
            let barrier = Arc::clone(&barrier);
            let id = challenge.challenge_id.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                client
                    .approve_challenge(apb::ApproveChallengeRequest {
                        challenge_id: id,
                        approver: "admin".into(),
                    })
                    .await
            }));
        }
        for task in tasks {
            let response = task.await.unwrap().expect("every response is OK");
            let seen = status(response.get_ref().challenge.as_ref().unwrap());
            assert!(
                matches!(
                    seen,
                    apb::ChallengeStatus::Approving | apb::ChallengeStatus::Approved
                ),
                "{seen:?}"
            );
        }

        let settled = settled(&approval, SETTLE).await;
        assert_eq!(settled.len(), 1);
        assert_eq!(status(&settled[0]), apb::ChallengeStatus::Approved);
        assert_eq!(settled[0].attempts, 1, "duplicates never start an attempt");
        let orders = order.orders(&product.product_id).await;
        assert_eq!(orders.len(), 1, "exactly one order");
        assert_eq!(orders[0].idempotency_key, settled[0].idempotency_key);
        assert_eq!(order.get_product(&product.product_id).await.stock, 8);
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}

/// 300 challenges on a product with stock 100, approved concurrently: 100 APPROVED, 200
/// APPROVE_FAILED(OUT_OF_STOCK), stock 0, invariants hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_approvals_on_stock_one_hundred() {
    bounded_alone(async {
        let order = OrderSvc::start().await;
        let approval =
            ApprovalSvc::start(ApprovalSvc::config(&fresh_database().await, &order.url())).await;
        let product = order.product(100).await;
        let mut ids = Vec::new();
        for _ in 0..300 {
            ids.push(approval.submit(&product.product_id, 1).await.challenge_id);
        }

        // 30 connections, 10 callers each: real concurrency without 300 handshakes.
        let barrier = Arc::new(Barrier::new(ids.len()));
        let mut clients = Vec::new();
        for _ in 0..30 {
            clients.push(approval.client().await);
        }
        let mut tasks = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            let mut client = clients[n % clients.len()].clone();
            let barrier = Arc::clone(&barrier);
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                client
                    .approve_challenge(apb::ApproveChallengeRequest {
                        challenge_id: id,
                        approver: "admin".into(),
                    })
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().expect("every approval answers OK");
        }

        let challenges = settled(&approval, SETTLE_LONG).await;
        let approved = challenges
            .iter()
            .filter(|c| status(c) == apb::ChallengeStatus::Approved)
            .count();
        let out_of_stock = challenges
            .iter()
            .filter(|c| {
                status(c) == apb::ChallengeStatus::ApproveFailed
                    && failure(c) == apb::ApprovalFailureReason::OutOfStock
            })
            .count();
        assert_eq!((approved, out_of_stock), (100, 200));
        assert_eq!(order.get_product(&product.product_id).await.stock, 0);
        assert_eq!(order.orders(&product.product_id).await.len(), 100);
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}
