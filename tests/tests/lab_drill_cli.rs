//! `lab drill` as an operator runs it: a short built-in drill as a separate process exits 0
//! (every invariant holds) and writes a report whose JSON has the fields API.md promises.

use std::process::Command;

use lab_drill::process::{Binary, bin_dir, ensure_built};

#[test]
fn a_short_kill_order_svc_drill_exits_0_and_writes_its_report() {
    // Builds the binaries (lab too) unless LAB_BIN_DIR names prebuilt ones.
    ensure_built(Binary::OrderSvc).expect("the release binaries are there");
    let lab = bin_dir().join("lab");
    let out = tempfile::tempdir().expect("a temporary directory");
    let output = Command::new(&lab)
        .args(["drill", "--scenario", "kill-order-svc"])
        .args(["--duration", "6s", "--rate", "100"])
        .arg("--out")
        .arg(out.path())
        // The services it starts are the ones next to `lab` (or in LAB_BIN_DIR).
        .output()
        .unwrap_or_else(|error| panic!("{} does not run: {error}", lab.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "lab drill failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("I1"), "no verdict table: {stdout}");

    let json = std::fs::read_to_string(out.path().join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&json).expect("report.json is JSON");
    assert_eq!(report["scenario"], "kill-order-svc", "{json}");
    for invariant in ["I1", "I2", "I3", "I4", "I5", "I6"] {
        assert_eq!(
            report["invariants"][invariant]["ok"], true,
            "{invariant}: {json}"
        );
    }
    assert_eq!(report["exit_code"], 0);
    assert!(
        report["faults"]
            .as_array()
            .is_some_and(|faults| !faults.is_empty()),
        "no fault window: {json}"
    );
    assert!(out.path().join("report.html").is_file());
}

#[test]
fn an_unknown_scenario_exits_2() {
    ensure_built(Binary::OrderSvc).expect("the release binaries are there");
    let out = tempfile::tempdir().expect("a temporary directory");
    let output = Command::new(bin_dir().join("lab"))
        .args(["drill", "--scenario", "no-such-drill", "--out"])
        .arg(out.path())
        .output()
        .expect("lab runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scenario"));
    let json = std::fs::read_to_string(out.path().join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&json).expect("report.json is JSON");
    assert_eq!(report["exit_code"], 2, "{json}");
}
