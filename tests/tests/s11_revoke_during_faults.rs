//! Scenario 11 — compensation under faults: approved challenges are revoked while order-svc's
//! answers are lost after the cancel committed (first half of the revokes), then while every
//! call is answered UNAVAILABLE (second half), with every revoke sent twice at once. The
//! failures trip the breaker, so most revokes fail fast with CIRCUIT_OPEN rather than reach the
//! faults — also a fault, and the realistic one. Expected: revokes that could not finish stay
//! REVOKING (an OK answer showing the state, never an error), the completer finishes them once
//! the faults are gone, CancelOrder's idempotency returns each order's stock exactly once (also
//! for the cancels that committed but whose answers were lost), and the product's stock is back
//! to its initial value with every order CANCELLED.

mod common;

use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{Outcomes, Summary, approve_all, create_product, product, submit_challenges};
use lab_drill::proxy::Fault;
use lab_proto::approval::v1 as pb;
use tokio::time::Instant;

const SEED: u64 = 11;
const CHALLENGES: usize = 40;
const QUANTITY: i32 = 3;
const STOCK: i64 = 500;

async fn revoke_twice(
    approval: &lab_proto::approval::v1::approval_service_client::ApprovalServiceClient<
        tonic::transport::Channel,
    >,
    ids: &[String],
) -> Outcomes {
    let calls = ids
        .iter()
        .flat_map(|id| [id.clone(), id.clone()])
        .map(|id| {
            let mut client = approval.clone();
            async move {
                let mut request = tonic::Request::new(pb::RevokeApprovalRequest {
                    challenge_id: id,
                    reason: "revoked in a drill".into(),
                });
                request.set_timeout(Duration::from_secs(5));
                client
                    .revoke_approval(request)
                    .await
                    .map(|response| response.into_inner().challenge.unwrap_or_default())
            }
        });
    let results = futures::future::join_all(calls).await;
    let mut outcomes = Outcomes::default();
    for result in &results {
        outcomes.record(result);
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_during_faults_restores_stock_exactly_once() {
    let started = Instant::now();
    let cluster = common::start(ClusterOptions::default().seed(SEED)).await;
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let reward = create_product(&mut order, "reward", STOCK).await.unwrap();
    let ids = submit_challenges(
        &approval,
        &reward.product_id,
        CHALLENGES,
        QUANTITY,
        16,
        SEED,
    )
    .await
    .unwrap();
    let approved = approve_all(&approval, &ids, 8, Duration::from_secs(5), None).await;
    assert_eq!(
        approved.outcomes.get("APPROVED"),
        CHALLENGES as u64,
        "{}",
        approved.outcomes
    );
    let stock_approved = product(&mut order, &reward.product_id).await.unwrap().stock;

    let proxy = cluster.proxy().handle();
    let (lossy, refused) = ids.split_at(CHALLENGES / 2);
    proxy.set_fault(Fault::LoseResponses { probability: 1.0 });
    let mut outcomes = revoke_twice(&approval, lossy).await;
    let lost = proxy.stats().responses_lost;
    proxy.set_fault(Fault::Unavailable { pushback: None });
    outcomes.merge(&revoke_twice(&approval, refused).await);
    let during = cluster.check(&Default::default()).await.unwrap();
    proxy.clear();

    let report = common::settled(
        &cluster,
        &common::accepted(&approved.accepted),
        Duration::from_secs(30),
    )
    .await;
    let after = product(&mut order, &reward.product_id).await.unwrap();

    let mut summary = Summary::new("s11 revoke during faults");
    summary.requests = (2 * CHALLENGES) as u64;
    summary.outcomes = outcomes.clone();
    summary
        .figure("responses_lost", lost)
        .figure("revoking_during_faults", during.challenges("REVOKING"))
        .figure("cancelled_during_faults", during.orders("CANCELLED"))
        .figure(
            "stock",
            format!("{STOCK}->{stock_approved}->{}", after.stock),
        )
        .figure("revoked", report.challenges("REVOKED"))
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    assert_eq!(outcomes.starting_with("error/"), 0, "{outcomes}");
    assert!(lost > 0, "no response was lost");
    assert!(
        during.challenges("REVOKING") > 0,
        "the faults blocked no revoke: {during}"
    );
    // Cancels whose answers were lost did commit: their stock was back before the retry.
    assert!(during.orders("CANCELLED") > 0, "{during}");
    assert_eq!(
        stock_approved,
        STOCK - CHALLENGES as i64 * i64::from(QUANTITY)
    );
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("REVOKED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CANCELLED"), CHALLENGES, "{report}");
    assert_eq!(after.stock, STOCK, "stock restored exactly once");
    assert_eq!(after.restocked, 0);
}
