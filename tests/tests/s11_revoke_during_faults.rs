//! Scenario 11 — compensation under faults: approved challenges are revoked while order-svc's
//! answers are lost after the cancel committed (first half of the revokes), then while every
//! call is answered UNAVAILABLE (second half), with every revoke sent twice at once. The
//! failures trip the breaker, so most revokes fail fast with CIRCUIT_OPEN rather than reach the
//! faults — also a fault, and the realistic one. Expected: revokes that could not finish stay
//! REVOKING (an OK answer showing the state, never an error), the completer finishes them once
//! the faults are gone, CancelOrder's idempotency returns each order's stock exactly once (also
//! for the cancels that committed but whose answers were lost), and the product's stock is back
//! to its initial value with every order CANCELLED.
//!
//! Approvals first, then revokes under faults: a custom workload of the drill engine.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_drill::check::Report;
use lab_drill::engine::{Action, Drill, DrillError, Hook, Pacing, Scenario, Settle, Workload};
use lab_drill::load::{Outcomes, approve_all, product};
use lab_drill::proxy::Fault;
use lab_proto::approval::v1 as pb;

const SEED: u64 = 11;
const CHALLENGES: usize = 40;
const QUANTITY: i32 = 3;
const STOCK: i64 = 500;

async fn revoke_twice(
    approval: &pb::approval_service_client::ApprovalServiceClient<tonic::transport::Channel>,
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

/// What the revokes saw.
struct Revokes {
    approved: Outcomes,
    stock_approved: i64,
    outcomes: Outcomes,
    lost: u64,
    during: Report,
}

async fn approve_then_revoke(
    drill: &mut Drill,
    seen: Arc<Mutex<Option<Revokes>>>,
) -> Result<(), DrillError> {
    let approval = drill.approval();
    let ids = drill.challenge_ids.clone();
    let approved = approve_all(
        &approval,
        &ids,
        8,
        Duration::from_secs(5),
        Some(drill.watch.clone()),
    )
    .await;
    drill.record_run(&approved);
    let product_id = drill.products[0].product_id.clone();
    let stock_approved = product(&mut drill.order(), &product_id).await?.stock;

    let (lossy, refused) = ids.split_at(CHALLENGES / 2);
    drill
        .apply(&Action::proxy(Fault::LoseResponses { probability: 1.0 }))
        .await?;
    let mut outcomes = revoke_twice(&approval, lossy).await;
    let lost = drill.cluster.proxy().handle().stats().responses_lost;
    drill
        .apply(&Action::proxy(Fault::Unavailable { pushback: None }))
        .await?;
    outcomes.merge(&revoke_twice(&approval, refused).await);
    drill.requests += (2 * CHALLENGES) as u64;
    let during = drill.cluster.check(&Default::default()).await?;
    drill.apply(&Action::ClearProxy).await?;
    *seen.lock().unwrap() = Some(Revokes {
        approved: approved.outcomes,
        stock_approved,
        outcomes,
        lost,
        during,
    });
    Ok(())
}

fn scenario(seen: Arc<Mutex<Option<Revokes>>>) -> Scenario {
    Scenario::new("s11", "s11 revoke during faults", SEED)
        .workload(
            Workload::new(
                CHALLENGES,
                STOCK,
                Pacing::Custom(Hook::new(move |drill| {
                    Box::pin(approve_then_revoke(drill, seen.clone()))
                })),
            )
            .quantity(QUANTITY)
            .submit_concurrency(16),
        )
        .settle(Settle {
            timeout: Duration::from_secs(30),
            ..Settle::default()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_during_faults_restores_stock_exactly_once() {
    let seen = Arc::new(Mutex::new(None));
    let mut outcome = common::drill(scenario(seen.clone())).await;
    let revokes = seen.lock().unwrap().take().expect("the revokes ran");
    let (outcomes, during) = (&revokes.outcomes, &revokes.during);
    let after = outcome.products[0].clone();
    outcome.summary.requests = (2 * CHALLENGES) as u64;
    outcome.summary.outcomes = outcomes.clone();
    outcome
        .summary
        .figure("responses_lost", revokes.lost)
        .figure("revoking_during_faults", during.challenges("REVOKING"))
        .figure("cancelled_during_faults", during.orders("CANCELLED"))
        .figure(
            "stock_path",
            format!("{STOCK}->{}->{}", revokes.stock_approved, after.stock),
        )
        .figure("revoked", outcome.report.challenges("REVOKED"));
    common::finish(&outcome);

    assert_eq!(
        revokes.approved.get("APPROVED"),
        CHALLENGES as u64,
        "{}",
        revokes.approved
    );
    assert_eq!(outcomes.starting_with("error/"), 0, "{outcomes}");
    assert!(revokes.lost > 0, "no response was lost");
    assert!(
        during.challenges("REVOKING") > 0,
        "the faults blocked no revoke: {during}"
    );
    // Cancels whose answers were lost did commit: their stock was back before the retry.
    assert!(during.orders("CANCELLED") > 0, "{during}");
    assert_eq!(
        revokes.stock_approved,
        STOCK - CHALLENGES as i64 * i64::from(QUANTITY)
    );
    let report = &outcome.report;
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("REVOKED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CANCELLED"), CHALLENGES, "{report}");
    assert_eq!(after.stock, STOCK, "stock restored exactly once");
    assert_eq!(after.restocked, 0);
}
