//! Scenario 14 (issue 10) — one replica of the approval service crashes: two approval-svc
//! instances on one database (3 s lease), callers split 2 000 approvals between them at 200/s
//! each, with 200 ms of latency on order-svc's answers so that dozens are in flight, and
//! `kill -9` of instance 1 after 300 of its answers; it stays down. Expected: the survivor's
//! completer takes over what the dead instance left APPROVING once its lease runs out and
//! finishes all of it within one more lease; callers re-send to the survivor what failed;
//! every challenge ends APPROVED with exactly one order, and I1–I6 hold.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::engine::{
    Action, At, Drill, DrillError, Hook, Pacing, Scenario, Service, Settle, Workload,
};
use lab_drill::load::{challenge, list_challenges};
use lab_drill::proxy::Fault;
use lab_proto::approval::v1::ChallengeStatus;
use tokio::time::Instant;

const SEED: u64 = 14;
const CHALLENGES: usize = 2_000;
const RATE_PER_INSTANCE: f64 = 200.0;
const MAX_IN_FLIGHT: usize = 64;
const KILL_AT: u64 = 300;
const KILLED_INSTANCE: usize = 1;
/// `APPROVAL_LEASE` of both instances.
const LEASE: Duration = Duration::from_secs(3);

/// What the survivor did with the dead instance's work.
#[derive(Debug, Clone, Copy)]
struct Takeover {
    in_flight_at_kill: usize,
    still_approving: usize,
    took: Duration,
}

/// Right after the kill: what either instance had in flight (the dead one's part stays
/// APPROVING until its lease runs out), then how long until the survivor finished it.
async fn watch_takeover(
    drill: &mut Drill,
    seen: Arc<Mutex<Option<Takeover>>>,
) -> Result<(), DrillError> {
    let killed = Instant::now();
    let mut survivor = drill.cluster.approval_client_of(0);
    let in_flight: Vec<String> = list_challenges(&mut survivor)
        .await?
        .into_iter()
        .filter(|c| c.status == ChallengeStatus::Approving as i32)
        .map(|c| c.challenge_id)
        .collect();
    let mut left = in_flight.clone();
    let bound = killed + 4 * LEASE;
    while !left.is_empty() && Instant::now() < bound {
        let mut still = Vec::with_capacity(left.len());
        for id in left {
            let now = challenge(&mut survivor, &id).await?;
            if now.status == ChallengeStatus::Approving as i32 {
                still.push(id);
            }
        }
        left = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    *seen.lock().unwrap() = Some(Takeover {
        in_flight_at_kill: in_flight.len(),
        still_approving: left.len(),
        took: killed.elapsed(),
    });
    Ok(())
}

fn scenario(seen: Arc<Mutex<Option<Takeover>>>) -> Scenario {
    Scenario::new("s14", "s14 kill -9 one of two approval-svc", SEED)
        .cluster(
            ClusterOptions::default()
                .approval_instances(2)
                .approval_env("APPROVAL_LEASE", &format!("{}s", LEASE.as_secs())),
        )
        // Even challenges to instance 0 (the survivor), odd ones to instance 1, each at 200/s.
        .workload(
            Workload::new(
                CHALLENGES,
                CHALLENGES as i64,
                Pacing::paced(2.0 * RATE_PER_INSTANCE, MAX_IN_FLIGHT),
            )
            .spread(),
        )
        .before_load(Action::proxy(Fault::Latency {
            base: Duration::from_millis(200),
            jitter: Duration::from_millis(50),
        }))
        .at(
            At::AnswersVia {
                instance: KILLED_INSTANCE,
                n: KILL_AT,
            },
            Action::Kill(Service::Approval, KILLED_INSTANCE),
        )
        .at(
            At::After(Duration::ZERO),
            Action::Custom(Hook::new(move |drill| {
                Box::pin(watch_takeover(drill, seen.clone()))
            })),
        )
        .at(At::LoadDone(Duration::ZERO), Action::ClearProxy)
        // Callers re-send to the survivor (instance 0) what failed on either instance.
        .settle(Settle {
            resend_errored: Some(32),
            pause: Duration::ZERO,
            timeout: Duration::from_secs(30),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_one_of_two_approval_svc_the_other_finishes_within_the_lease() {
    let seen = Arc::new(Mutex::new(None));
    let mut outcome = common::drill(scenario(seen.clone())).await;
    let takeover = seen
        .lock()
        .unwrap()
        .take()
        .expect("the takeover was watched");
    let second = outcome.resent.clone().expect("failed calls were re-sent");
    // Calls that met the dead instance were re-sent; what failed after that is a failure.
    let failed = outcome.failed;
    outcome
        .summary
        .figure("failed_calls_resent", outcome.run.errored.len())
        .figure("approving_at_kill", takeover.in_flight_at_kill)
        .figure("takeover", format!("{:.2?}", takeover.took))
        .figure("rolled_forward_by_completer", outcome.rolled_forward);
    common::finish(&outcome);

    let Takeover {
        in_flight_at_kill,
        still_approving,
        took,
    } = takeover;
    assert!(
        in_flight_at_kill > 0,
        "nothing was in flight at the crash: the scenario proved nothing"
    );
    assert_eq!(
        still_approving, 0,
        "{still_approving} of {in_flight_at_kill} approvals in flight at the crash were still \
         APPROVING {took:.2?} later"
    );
    assert!(
        took <= 2 * LEASE,
        "the survivor took {took:.2?} to finish what was in flight at the crash (lease {LEASE:?}: \
         the dead instance's lease runs out, then one more lease at most)"
    );
    assert!(
        outcome.rolled_forward > 0,
        "the survivor's completer re-drove nothing"
    );
    assert_eq!(failed, 0, "approvals failed after the re-sends");
    assert_eq!(
        second.outcomes.starting_with("error/"),
        0,
        "{}",
        second.outcomes
    );
    let report = &outcome.report;
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.violation_count(), 0, "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CREATED"), CHALLENGES, "{report}");
}
