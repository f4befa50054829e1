//! Scenario 14 (issue 10) — one replica of the approval service crashes: two approval-svc
//! instances on one database (3 s lease), callers split 2 000 approvals between them at 200/s
//! each, with 200 ms of latency on order-svc's answers so that dozens are in flight, and
//! `kill -9` of instance 1 after 300 of its answers; it stays down. Expected: the survivor's
//! completer takes over what the dead instance left APPROVING once its lease runs out and
//! finishes all of it within one more lease; callers re-send to the survivor what failed;
//! every challenge ends APPROVED with exactly one order, and I1–I6 hold.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::load::{
    Summary, approve_paced, challenge, create_product, list_challenges, submit_challenges,
    wait_for_progress,
};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_one_of_two_approval_svc_the_other_finishes_within_the_lease() {
    let started = Instant::now();
    let mut cluster = common::start(
        ClusterOptions::default()
            .seed(SEED)
            .approval_instances(2)
            .approval_env("APPROVAL_LEASE", &format!("{}s", LEASE.as_secs())),
    )
    .await;
    let mut order = cluster.order_client();
    let survivor = cluster.approval_client_of(0);
    let doomed = cluster.approval_client_of(KILLED_INSTANCE);
    let reward = create_product(&mut order, "reward", CHALLENGES as i64)
        .await
        .unwrap();
    let ids = submit_challenges(&survivor, &reward.product_id, CHALLENGES, 1, 32, SEED)
        .await
        .unwrap();
    let (to_survivor, to_doomed): (Vec<String>, Vec<String>) = {
        let (even, odd): (Vec<_>, Vec<_>) = ids
            .iter()
            .cloned()
            .enumerate()
            .partition(|(n, _)| n % 2 == 0);
        (
            even.into_iter().map(|(_, id)| id).collect(),
            odd.into_iter().map(|(_, id)| id).collect(),
        )
    };
    cluster.proxy().handle().set_fault(Fault::Latency {
        base: Duration::from_millis(200),
        jitter: Duration::from_millis(50),
    });

    let doomed_progress = Arc::new(AtomicU64::new(0));
    let mut survivor_for_crash = survivor.clone();
    let instance = cluster.approval_instance(KILLED_INSTANCE);
    let crash = async {
        assert!(wait_for_progress(&doomed_progress, KILL_AT, Duration::from_secs(60)).await);
        instance
            .kill()
            .await
            .expect("kill -9 one approval-svc instance");
        let killed = Instant::now();
        // What either instance had in flight at the crash; the dead one's part stays APPROVING
        // until its lease runs out.
        let in_flight: Vec<String> = list_challenges(&mut survivor_for_crash)
            .await
            .expect("the survivor lists challenges")
            .into_iter()
            .filter(|c| c.status == ChallengeStatus::Approving as i32)
            .map(|c| c.challenge_id)
            .collect();
        let mut left = in_flight.clone();
        let bound = killed + 4 * LEASE;
        while !left.is_empty() && Instant::now() < bound {
            let mut still = Vec::with_capacity(left.len());
            for id in left {
                let now = challenge(&mut survivor_for_crash, &id)
                    .await
                    .expect("the survivor reads a challenge");
                if now.status == ChallengeStatus::Approving as i32 {
                    still.push(id);
                }
            }
            left = still;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (in_flight.len(), left.len(), killed.elapsed())
    };
    let (survivor_run, doomed_run, (in_flight_at_kill, still_approving, takeover)) = tokio::join!(
        approve_paced(
            &survivor,
            &to_survivor,
            RATE_PER_INSTANCE,
            MAX_IN_FLIGHT,
            Duration::from_secs(10),
            None
        ),
        approve_paced(
            &doomed,
            &to_doomed,
            RATE_PER_INSTANCE,
            MAX_IN_FLIGHT,
            Duration::from_secs(10),
            Some(doomed_progress.clone())
        ),
        crash
    );
    cluster.proxy().handle().clear();

    // Callers re-send to the survivor what failed on either instance.
    let mut first = survivor_run.clone();
    first.outcomes.merge(&doomed_run.outcomes);
    first.errored.extend(doomed_run.errored.iter().cloned());
    first.accepted.extend(doomed_run.accepted.iter().cloned());
    let (second, accepted) = common::resend_errored(&survivor, &first, 32).await;
    let settling = Instant::now();
    let report = common::settled(
        &cluster,
        &common::accepted(&accepted),
        Duration::from_secs(30),
    )
    .await;
    let settle = settling.elapsed();
    // A challenge the completer re-drove carries one more attempt than its single approval.
    let rolled_forward = list_challenges(&mut cluster.approval_client())
        .await
        .unwrap()
        .iter()
        .filter(|c| c.attempts >= 2)
        .count();

    // Calls that met the dead instance were re-sent; what failed after that is a failure.
    let failed = first.outcomes.failed_approvals() - first.errored.len() as u64
        + second.outcomes.failed_approvals();

    let mut summary = Summary::new("s14 kill -9 one of two approval-svc");
    summary.requests =
        (survivor_run.latencies.len() + doomed_run.latencies.len() + second.latencies.len()) as u64;
    summary.outcomes = first.outcomes.clone();
    summary.outcomes.merge(&second.outcomes);
    summary
        .figure("failed", failed)
        .figure("failed_calls_resent", first.errored.len())
        .figure("approving_at_kill", in_flight_at_kill)
        .figure("takeover", format!("{takeover:.2?}"))
        .figure("rolled_forward_by_completer", rolled_forward)
        .figure("settle", format!("{settle:.2?}"))
        .figure("approved", report.challenges("APPROVED"))
        .figure("orders", report.orders("CREATED"))
        .figure("violations", report.violation_count());
    common::finish(&cluster, &mut summary, started.elapsed()).await;

    assert!(
        in_flight_at_kill > 0,
        "nothing was in flight at the crash: the scenario proved nothing"
    );
    assert_eq!(
        still_approving, 0,
        "{still_approving} of {in_flight_at_kill} approvals in flight at the crash were still \
         APPROVING {takeover:.2?} later"
    );
    assert!(
        takeover <= 2 * LEASE,
        "the survivor took {takeover:.2?} to finish what was in flight at the crash (lease {LEASE:?}: \
         the dead instance's lease runs out, then one more lease at most)"
    );
    assert!(
        rolled_forward > 0,
        "the survivor's completer re-drove nothing"
    );
    assert_eq!(failed, 0, "approvals failed after the re-sends");
    assert_eq!(
        second.outcomes.starting_with("error/"),
        0,
        "{}",
        second.outcomes
    );
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.violation_count(), 0, "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CREATED"), CHALLENGES, "{report}");
}
