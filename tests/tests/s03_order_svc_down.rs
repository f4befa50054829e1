//! Scenario 3 — dead shop: order-svc is killed (`kill -9`) while approvals keep coming.
//! Expected: every approval answers APPROVE_FAILED fast (well within the order-call budget), the
//! breaker opens (later answers say CIRCUIT_OPEN and never reach the network), and when
//! order-svc comes back on the same port the breaker closes, new approvals succeed and the
//! failed ones are rolled forward by automatic retries alone (nothing dead-lettered, nothing
//! requeued, no consistency check healing), with I1–I6 holding.
//!
//! The load comes in phases around the outage (warm-up, outage, recovery probe, fresh calls):
//! a custom workload of the drill engine.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_drill::engine::{
    Action, Drill, DrillError, Hook, Pacing, Scenario, Service, Settle, Workload,
};
use lab_drill::load::{ApproveRun, approve_all};
use lab_drill::metrics::ResilienceCounts;
use lab_drill::proxy::ProxyStats;
use tokio::time::Instant;

const SEED: u64 = 3;
const WARM_UP: usize = 5;
const DURING_OUTAGE: usize = 60;
const AFTER_RECOVERY: usize = 5;
const CHALLENGES: usize = WARM_UP + DURING_OUTAGE + AFTER_RECOVERY;

/// What the phases saw.
struct Phases {
    down: ApproveRun,
    before: ProxyStats,
    during: ProxyStats,
    counts_down: ResilienceCounts,
    recovery: Duration,
    fresh: ApproveRun,
}

async fn phases(drill: &mut Drill, seen: Arc<Mutex<Option<Phases>>>) -> Result<(), DrillError> {
    let approval = drill.approval();
    let ids = drill.challenge_ids.clone();
    let (warm_up, rest) = ids.split_at(WARM_UP);
    let (outage, after) = rest.split_at(DURING_OUTAGE);
    let watch = Some(drill.watch.clone());
    let deadline = Duration::from_secs(5);

    let warm = approve_all(&approval, warm_up, 4, deadline, watch.clone()).await;
    drill.record_run(&warm);
    assert_eq!(
        warm.outcomes.get("APPROVED"),
        WARM_UP as u64,
        "{}",
        warm.outcomes
    );

    drill.apply(&Action::Kill(Service::Order, 0)).await?;
    let proxy = drill.cluster.proxy().handle();
    let before = proxy.stats();
    let down = approve_all(&approval, outage, 4, deadline, watch.clone()).await;
    drill.record_run(&down);
    let during = proxy.stats();
    let counts_down = drill.cluster.approval_counts().await;

    drill.apply(&Action::Restart(Service::Order, 0)).await?;
    let recovered_at = Instant::now();
    // New approvals succeed once the breaker lets a probe through (open period <= 1 s).
    let mut recovered = approve_all(&approval, &after[..1], 1, deadline, None).await;
    while recovered.outcomes.get("APPROVED") == 0
        && recovered_at.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        recovered = approve_all(&approval, &after[..1], 1, deadline, None).await;
    }
    let recovery = recovered_at.elapsed();
    let fresh = approve_all(&approval, &after[1..], 4, deadline, watch).await;
    drill.record_run(&fresh);
    *seen.lock().unwrap() = Some(Phases {
        down,
        before,
        during,
        counts_down,
        recovery,
        fresh,
    });
    Ok(())
}

fn scenario(seen: Arc<Mutex<Option<Phases>>>) -> Scenario {
    Scenario::new("s03", "s03 order-svc down", SEED)
        .workload(
            Workload::new(
                CHALLENGES,
                1_000,
                Pacing::Custom(Hook::new(move |drill| {
                    Box::pin(phases(drill, seen.clone()))
                })),
            )
            .submit_concurrency(16),
        )
        // Automatic retries alone roll the outage's failures forward.
        .settle(Settle {
            timeout: Duration::from_secs(30),
            ..Settle::default()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_svc_down_fails_fast_opens_the_breaker_and_recovers() {
    let seen = Arc::new(Mutex::new(None));
    let mut outcome = common::drill(scenario(seen.clone())).await;
    let phases = seen.lock().unwrap().take().expect("the phases ran");
    let (down, fresh, counts_down) = (&phases.down, &phases.fresh, &phases.counts_down);
    let wire = phases.during.upstream_connect_failures - phases.before.upstream_connect_failures;
    outcome.summary.outcomes = down.outcomes.clone();
    outcome
        .summary
        .figure("outage_p99", format!("{:?}", down.latency_quantile(0.99)))
        .figure("outage_max", format!("{:?}", down.max_latency()))
        .figure("outage_wire_attempts", wire)
        .figure("outage_breaker_opened", counts_down.breaker_opened)
        .figure("recovery", format!("{:?}", phases.recovery));
    common::finish(&outcome);

    // Fast: every outage answer is an APPROVE_FAILED, far inside the 2 s order-call budget.
    assert_eq!(
        down.outcomes.starting_with("APPROVE_FAILED/"),
        DURING_OUTAGE as u64,
        "{}",
        down.outcomes
    );
    assert!(
        down.max_latency() < Duration::from_millis(1_500),
        "slow failure: {:?}",
        down.max_latency()
    );
    // The breaker opened and shielded the network: calls failed fast without a connection.
    assert!(
        down.outcomes.get("APPROVE_FAILED/CIRCUIT_OPEN") > 0,
        "{}",
        down.outcomes
    );
    assert!(counts_down.breaker_opened >= 1);
    assert!(
        wire < DURING_OUTAGE as u64,
        "{wire} connection attempts for {DURING_OUTAGE} approvals: the breaker did not shield"
    );
    // It recovered: closed again, new approvals succeed, the failed ones were rolled forward.
    let counts = &outcome.resilience;
    assert!(counts.breaker_closed >= 1, "{counts}");
    assert_eq!(
        fresh.outcomes.get("APPROVED"),
        (AFTER_RECOVERY - 1) as u64,
        "{}",
        fresh.outcomes
    );
    common::assert_no_dead_letters(&outcome);
    let report = &outcome.report;
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CREATED"), CHALLENGES);
}
