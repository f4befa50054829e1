//! Helpers shared by the scenario tests (each `tests/*.rs` file is its own crate and uses a
//! subset, hence the `dead_code` allowance). Every scenario is a declaration run by the drill
//! engine ([`lab_drill::engine::run`]); these helpers run it and hold the assertions every
//! scenario shares.
#![allow(dead_code)]

use std::path::PathBuf;

use lab_drill::cluster::{Cluster, ClusterOptions};
use lab_drill::engine::{DrillOutcome, RunOptions, SAMPLE_EVERY, Scenario};

/// Starts a cluster or fails the test with the reason (benchmarks that are not drills).
pub(crate) async fn start(options: ClusterOptions) -> Cluster {
    Cluster::start(options).await.expect("cluster starts")
}

/// Runs a scenario through the drill engine, or fails the test with why it could not run.
///
/// With `LAB_DRILL_OUT=DIR` set, the drill is also sampled every 250 ms and its report written
/// to `DIR/<scenario>/` (report.json, report.html); unset, nothing samples, so the scenario's
/// timing is its own.
pub(crate) async fn drill(scenario: Scenario) -> DrillOutcome {
    let out = std::env::var_os("LAB_DRILL_OUT").map(PathBuf::from);
    let options = RunOptions {
        sample_every: out.as_ref().map(|_| SAMPLE_EVERY),
        ..RunOptions::default()
    };
    let outcome = lab_drill::engine::run(&scenario, &options)
        .await
        .unwrap_or_else(|error| panic!("the drill {} could not run: {error}", scenario.name));
    if let Some(out) = out {
        let dir = out.join(&scenario.name);
        if let Err(error) = lab_drill::report::write(&dir, &outcome.drill_report) {
            eprintln!("no report in {}: {error}", dir.display());
        }
    }
    outcome
}

/// Prints the summary line; then fails the scenario if approval-svc's consistency checker
/// healed anything (checks run on demand only, so every repair the scenario sees must be the
/// saga's or the completer's).
pub(crate) fn finish(outcome: &DrillOutcome) {
    outcome.summary.print();
    assert_eq!(
        outcome.checker_healed,
        Some(0),
        "approval-svc's consistency checker healed something: the repair was not the completer's"
    );
}

/// Nothing requeued: every transient failure must be finished by the automatic retries.
pub(crate) fn assert_no_dead_letters(outcome: &DrillOutcome) {
    assert!(
        outcome.dead_letters.is_empty(),
        "the completer gave up on {} challenge(s), dead-lettered: {:?}",
        outcome.dead_letters.len(),
        outcome.dead_letters
    );
}
