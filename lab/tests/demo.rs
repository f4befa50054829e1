//! `lab demo` end to end, one test per problem: the real `lab` binary runs the naive code and
//! then the real path against the release services (`$LAB_BIN_DIR`, or the workspace's
//! `target/release`, built when missing) on PostgreSQL (`DATABASE_URL`). Each unsafe run must
//! show its problem and each safe run none, as `report.json` says and the exit code confirms.
#![cfg(feature = "naive-demos")]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

const INVARIANTS: [&str; 6] = ["I1", "I2", "I3", "I4", "I5", "I6"];

/// Runs `lab demo --problem NAME --out DIR` and returns its report.json, after checking the
/// exit code and the HTML page.
fn demo(problem: &str) -> Value {
    // One demo at a time: each starts two clusters, and the timing-based ones (ghost-order's
    // kill, no-circuit-breaker's latencies) should not compete with the others for two cores.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let out: PathBuf = std::env::temp_dir().join(format!("lab-demo-test-{}", uuid::Uuid::now_v7()));
    let output = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["demo", "--problem", problem, "--out"])
        .arg(&out)
        .output()
        .expect("lab runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "lab demo {problem} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("UNSAFE") && stdout.contains("SAFE"),
        "{stdout}"
    );
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json was written"),
    )
    .expect("valid JSON");
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html was written");
    assert!(
        html.contains(problem) && html.contains("class=\"verdicts\""),
        "{html}"
    );
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(report["problem"], problem, "{report:#}");
    report
}

fn violations(report: &Value, side: &str, invariant: &str) -> u64 {
    report[side]["violations"][invariant]
        .as_u64()
        .unwrap_or_else(|| panic!("no {side}.violations.{invariant} in {report:#}"))
}

/// The unsafe run broke `invariant`, the safe run broke nothing.
fn assert_shown(report: &Value, invariant: &str) {
    assert!(violations(report, "unsafe", invariant) > 0, "{report:#}");
    for i in INVARIANTS {
        assert_eq!(violations(report, "safe", i), 0, "safe {i}: {report:#}");
    }
}

#[test]
fn stock_race_oversells_only_without_the_conditional_update() {
    assert_shown(&demo("stock-race"), "I1");
}

#[test]
fn duplicate_approval_makes_several_orders_only_without_the_row_lock() {
    assert_shown(&demo("duplicate-approval"), "I2");
}

#[test]
fn empty_approval_leaves_approved_without_order_only_when_approved_first() {
    assert_shown(&demo("empty-approval"), "I3");
}

#[test]
fn lost_response_duplicates_orders_only_without_a_stable_key() {
    assert_shown(&demo("lost-response"), "I2");
}

#[test]
fn ghost_order_appears_only_when_the_call_comes_before_the_intent() {
    assert_shown(&demo("ghost-order"), "I4");
}

#[test]
fn no_circuit_breaker_piles_calls_up_only_without_the_resilience_stack() {
    let report = demo("no-circuit-breaker");
    for i in INVARIANTS {
        assert_eq!(violations(&report, "safe", i), 0, "safe {i}: {report:#}");
    }
    let figure = |side: &str, name: &str| {
        report[side][name]
            .as_f64()
            .unwrap_or_else(|| panic!("no {side}.{name} in {report:#}"))
    };
    assert!(
        figure("unsafe", "p99_ms") >= 2.0 * figure("safe", "p99_ms"),
        "{report:#}"
    );
    assert!(
        figure("unsafe", "max_in_flight") > figure("safe", "max_in_flight"),
        "{report:#}"
    );
}
