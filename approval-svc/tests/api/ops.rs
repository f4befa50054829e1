//! OpsService's breaker control: an operator forces the breaker open for maintenance (approvals
//! fail fast with CIRCUIT_OPEN) and resets it afterwards.

use std::time::{Duration, Instant};

use lab_proto::approval::v1 as apb;
use lab_proto::approval::v1::ops_service_client::OpsServiceClient;
use tonic::Code;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_the_breaker_open_fails_approvals_fast_until_reset() {
    bounded(async {
        let order = OrderSvc::start().await;
        let approval =
            ApprovalSvc::start(ApprovalSvc::config(&fresh_database().await, &order.url())).await;
        let mut ops = OpsServiceClient::connect(format!("http://{}", approval.addr))
            .await
            .unwrap();
        let state = |response: apb::SetCircuitBreakerResponse| response.state;
        let forced = ops
            .set_circuit_breaker(apb::SetCircuitBreakerRequest {
                state: apb::CircuitState::ForcedOpen.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(state(forced), apb::CircuitState::ForcedOpen as i32);
        let seen = ops
            .get_circuit_breaker(apb::GetCircuitBreakerRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(seen.state, apb::CircuitState::ForcedOpen as i32);

        let product = order.product(5).await;
        let challenge = approval.submit(&product.product_id, 1).await;
        let started = Instant::now();
        let failed = approval.approve(&challenge.challenge_id).await;
        assert!(started.elapsed() < Duration::from_millis(500), "fails fast");
        assert_eq!(status(&failed), apb::ChallengeStatus::ApproveFailed);
        assert_eq!(failure(&failed), apb::ApprovalFailureReason::CircuitOpen);
        assert_eq!(order.get_product(&product.product_id).await.stock, 5);

        let reset = ops
            .set_circuit_breaker(apb::SetCircuitBreakerRequest {
                state: apb::CircuitState::Closed.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(state(reset), apb::CircuitState::Closed as i32);
        let retried = approval
            .client()
            .await
            .retry_approval(apb::RetryApprovalRequest {
                challenge_id: challenge.challenge_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap();
        // The completer may have started the automatic retry first: then RetryApproval returns
        // the challenge APPROVING, and the completer's attempt approves it.
        assert!(
            matches!(
                status(&retried),
                apb::ChallengeStatus::Approved | apb::ChallengeStatus::Approving
            ),
            "{retried:?}"
        );
        eventually(Duration::from_secs(10), "the challenge is approved", || {
            let approval = &approval;
            let id = challenge.challenge_id.clone();
            async move { status(&approval.get(&id).await) == apb::ChallengeStatus::Approved }
        })
        .await;
        assert_eq!(order.get_product(&product.product_id).await.stock, 4);

        let invalid = ops
            .set_circuit_breaker(apb::SetCircuitBreakerRequest {
                state: apb::CircuitState::HalfOpen.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument);
    })
    .await;
}
