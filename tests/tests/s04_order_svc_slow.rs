//! Scenario 4 — slow shop: every order-svc answer is delayed beyond the per-attempt timeout
//! (1.5 s ± 100 ms against 1 s), while the requests themselves arrive on time, so order-svc
//! commits orders whose answers come too late. Expected: each approval answers APPROVE_FAILED
//! within the caller's deadline, after a bounded number of attempts; the orders committed late
//! are then settled by the completer's retries with the same idempotency key (replayed, never
//! duplicated) once the latency is gone.
//!
//! The breaker is switched off here (no consecutive-failure or failure-rate trip), so every call
//! takes the timeout-and-retry path this scenario is about; with it on, the first five timeouts
//! open it and the rest fail fast with CIRCUIT_OPEN, which scenarios 3 and 10 cover.

mod common;

use std::time::Duration;

use lab_drill::cluster::ClusterOptions;
use lab_drill::engine::{Action, At, Pacing, Scenario, Settle, Workload};
use lab_drill::proxy::Fault;

const SEED: u64 = 4;
const CHALLENGES: usize = 30;
const CALLER_DEADLINE: Duration = Duration::from_secs(3);
/// ORDER_CALL_ATTEMPTS of approval-svc (its default).
const ATTEMPTS_PER_CALL: u64 = 3;

fn scenario() -> Scenario {
    Scenario::new("s04", "s04 order-svc slow", SEED)
        .cluster(
            ClusterOptions::default()
                .approval_env("BREAKER_CONSECUTIVE_FAILURES", "0")
                .approval_env("BREAKER_FAILURE_RATE", "2.0"),
        )
        .workload(
            Workload::new(CHALLENGES, 1_000, Pacing::Concurrent { concurrency: 10 })
                .submit_concurrency(16)
                .deadline(CALLER_DEADLINE),
        )
        .before_load(Action::proxy(Fault::Latency {
            base: Duration::from_millis(1_500),
            jitter: Duration::from_millis(100),
        }))
        .before_load(Action::counters("before"))
        .at(At::LoadDone(Duration::ZERO), Action::counters("during"))
        // Late commits: orders exist while their challenges are still APPROVE_FAILED.
        .at(
            At::After(Duration::from_millis(1_000)),
            Action::checked("late_commits"),
        )
        .at(At::After(Duration::ZERO), Action::ClearProxy)
        .settle(Settle {
            resend_errored: None,
            pause: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_order_svc_fails_within_the_deadline_and_late_commits_settle() {
    let mut outcome = common::drill(scenario()).await;
    let before = outcome.snapshot("before").counts;
    let during = outcome.snapshot("during").clone();
    let wire = during.proxy.as_ref().expect("a proxy").requests;
    let snapshot = outcome.snapshot("late_commits").report().clone();
    let calls = during.counts.calls - before.calls;
    let attempts = during.counts.attempts - before.attempts;
    let max_latency = outcome.run.max_latency();
    outcome
        .summary
        .figure("slow_calls", calls)
        .figure("slow_attempts", attempts)
        .figure(
            "attempt_timeouts",
            during.counts.attempt_timeouts - before.attempt_timeouts,
        )
        .figure("max_latency", format!("{max_latency:?}"))
        .figure("late_commits_seen", snapshot.orders("CREATED"));
    common::finish(&outcome);

    let (slow, report) = (&outcome.run, &outcome.report);
    // Within the deadline, and a failure that says why.
    assert!(max_latency <= CALLER_DEADLINE, "{max_latency:?}");
    assert_eq!(
        slow.outcomes.get("APPROVE_FAILED/DEADLINE_EXCEEDED"),
        CHALLENGES as u64,
        "{}",
        slow.outcomes
    );
    // Retries happened (the per-attempt timeout fired and a second attempt went out)…
    assert!(
        attempts > calls,
        "{attempts} attempts for {calls} calls: no retry"
    );
    // Bounded retries: never more than ORDER_CALL_ATTEMPTS per logical call, on the wire too.
    assert!(
        attempts <= calls * ATTEMPTS_PER_CALL,
        "{attempts} attempts for {calls} calls"
    );
    assert!(
        wire <= calls * ATTEMPTS_PER_CALL,
        "{wire} requests on the wire for {calls} calls"
    );
    // The slow answers were commits: orders existed before any challenge was APPROVED.
    assert_eq!(
        snapshot.orders("CREATED"),
        CHALLENGES,
        "late commits: {snapshot}"
    );
    assert_eq!(snapshot.challenges("APPROVED"), 0, "{snapshot}");
    // Settled: every challenge APPROVED with exactly one order, however many attempts it took.
    common::assert_no_dead_letters(&outcome);
    assert!(report.is_settled(), "{report}");
    assert_eq!(report.challenges("APPROVED"), CHALLENGES, "{report}");
    assert_eq!(report.orders("CREATED"), CHALLENGES, "{report}");
}
