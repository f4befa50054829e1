//! Three order-svc instances on one database behind one approval-svc: stopping one of them
//! mid-load (SIGTERM-like: it drains and leaves) fails no approval, and GetCircuitBreaker shows
//! each endpoint.

use std::sync::Arc;
use std::time::Duration;

use lab_proto::approval::v1 as apb;
use lab_proto::approval::v1::ops_service_client::OpsServiceClient;
use tokio::sync::Barrier;

use crate::helpers::*;

const CALLERS: usize = 16;
const APPROVALS: usize = 160;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_one_of_three_order_instances_mid_load_fails_no_approval() {
    bounded_alone(async {
        let first = OrderSvc::start().await;
        let database = first.database_url.clone();
        let mut fleet = vec![first];
        for _ in 0..2 {
            fleet.push(OrderSvc::start_with(order_config(database.clone())).await);
        }
        let urls: Vec<String> = fleet.iter().map(OrderSvc::url).collect();
        let mut config = ApprovalSvc::config(&fresh_database().await, &urls[0]);
        config.order_svc_url = urls.clone();
        let approval = ApprovalSvc::start(config).await;
        let product = fleet[0].product(APPROVALS as i64).await;
        let mut ids = Vec::new();
        for _ in 0..APPROVALS {
            ids.push(approval.submit(&product.product_id, 1).await.challenge_id);
        }

        let ids = Arc::new(ids);
        let barrier = Arc::new(Barrier::new(CALLERS + 1));
        let mut callers = Vec::new();
        for caller in 0..CALLERS {
            let (ids, barrier, mut client) =
                (ids.clone(), barrier.clone(), approval.client().await);
            callers.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut outcomes = Vec::new();
                for id in ids.iter().skip(caller).step_by(CALLERS) {
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
                    outcomes.push(challenge);
                }
                outcomes
            }));
        }
        barrier.wait().await;
        // Mid-load: wait until a quarter is approved, then stop one instance.
        eventually(
            Duration::from_secs(30),
            "a quarter of the approvals",
            || async {
                approval
                    .all()
                    .await
                    .iter()
                    .filter(|c| status(c) == apb::ChallengeStatus::Approved)
                    .count()
                    >= APPROVALS / 4
            },
        )
        .await;
        fleet[1].stop().await;

        let mut failed = Vec::new();
        for caller in callers {
            for challenge in caller.await.unwrap() {
                if status(&challenge) != apb::ChallengeStatus::Approved {
                    failed.push((status(&challenge), failure(&challenge)));
                }
            }
        }
        assert!(
            failed.is_empty(),
            "{} of {APPROVALS} approvals failed, e.g. {:?}",
            failed.len(),
            failed.first()
        );
        assert_eq!(fleet[0].get_product(&product.product_id).await.stock, 0);

        let mut ops = OpsServiceClient::connect(format!("http://{}", approval.addr))
            .await
            .unwrap();
        let breaker = ops
            .get_circuit_breaker(apb::GetCircuitBreakerRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(breaker.state(), apb::CircuitState::Closed);
        let mut addresses: Vec<_> = breaker
            .endpoints
            .iter()
            .map(|e| e.address.clone())
            .collect();
        addresses.sort();
        let mut expected = urls.clone();
        expected.sort();
        assert_eq!(addresses, expected);
        let healthy = breaker
            .endpoints
            .iter()
            .filter(|e| e.state() == apb::EndpointState::Admitted)
            .count();
        assert!(healthy >= 2, "{:?}", breaker.endpoints);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_has_its_metrics_with_help_text() {
    bounded(async {
        let order = OrderSvc::start().await;
        let mut config = ApprovalSvc::config(&fresh_database().await, &order.url());
        config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        config.check_interval = Duration::ZERO;
        let approval = ApprovalSvc::start(config).await;
        let product = order.product(1).await;
        let challenge = approval.submit(&product.product_id, 1).await;
        approval.approve(&challenge.challenge_id).await;
        let body = reqwest::get(format!("http://{}/metrics", approval.metrics_addr.unwrap()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let endpoint = format!("endpoint=\"{}\"", order.url());
        for family in [
            "resilience_endpoint_state",
            "resilience_endpoint_ejections_total",
            "resilience_endpoint_attempts_total",
        ] {
            assert!(
                body.contains(&format!("# HELP {family} ")),
                "{family} has HELP"
            );
            assert!(
                body.lines()
                    .any(|line| line.starts_with(family) && line.contains(&endpoint)),
                "{family} for {endpoint}"
            );
        }
        assert!(body.lines().any(|line| {
            line.starts_with("resilience_endpoint_attempts_total")
                && line.contains(&endpoint)
                && line.contains("code=\"OK\"")
                && !line.ends_with(" 0")
        }));
    })
    .await;
}
