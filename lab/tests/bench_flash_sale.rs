//! `lab bench flash-sale` end to end with tiny numbers: the real `lab` binary spawns the real
//! service binaries (this profile's, built first when missing) against `DATABASE_URL`, or a
//! throwaway PostgreSQL when it is unset, and its JSON must hold every phase with figures and a
//! stock check that held.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const PHASES: [&str; 4] = ["baseline", "hot_item", "sold_out", "approval_flood"];

/// The directory of the `lab` binary under test, where `lab bench` finds the services.
/// `cargo test --workspace` (scripts/test) builds order-svc and approval-svc there before any
/// test runs, since their packages have integration tests; `cargo test -p lab` alone does not,
/// so they are built here when missing. (Not on every run: a cargo started from a test sees
/// the test's environment, and rebuilds that the outer cargo then rebuilds back.)
fn bin_dir() -> PathBuf {
    let lab = PathBuf::from(env!("CARGO_BIN_EXE_lab"));
    let dir = lab.parent().expect("lab has a directory").to_path_buf();
    if ["order-svc", "approval-svc"]
        .iter()
        .all(|name| dir.join(name).is_file())
    {
        return dir;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut build = Command::new(cargo);
    build.current_dir(workspace).args([
        "build",
        "--quiet",
        "-p",
        "order-svc",
        "-p",
        "approval-svc",
    ]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let built = build.output().expect("cargo runs");
    assert!(
        built.status.success(),
        "building the services failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    dir
}

fn run_bench(calls: usize, approvals: usize, extra: &[&str], json: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
    command
        .args([
            "bench",
            "flash-sale",
            "--concurrency",
            "8",
            "--connections",
            "2",
        ])
        .args([
            "--calls",
            &calls.to_string(),
            "--approvals",
            &approvals.to_string(),
        ])
        // A small warm-up: its product and keys are its own, so the exact counts below would
        // break if it touched the measured ones.
        .args(["--warmup-calls", "50"])
        .args(["--max-duration", "20s", "--bin-dir"])
        .arg(bin_dir())
        .arg("--json")
        .arg(json)
        .args(extra)
        .env("RUST_LOG", "warn");
    if std::env::var_os("DATABASE_URL").is_none() && !extra.contains(&"--throwaway") {
        command.arg("--throwaway");
    }
    command.output().expect("lab runs")
}

fn temp_json() -> PathBuf {
    std::env::temp_dir().join(format!("lab-bench-test-{}.json", uuid::Uuid::now_v7()))
}

fn phase<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["phases"]
        .as_array()
        .expect("phases is a list")
        .iter()
        .find(|phase| phase["phase"] == name)
        .unwrap_or_else(|| panic!("no phase {name} in {report:#}"))
}

#[test]
fn every_phase_has_figures_and_nothing_is_oversold() {
    let json = temp_json();
    let output = run_bench(200, 100, &[], &json);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "lab bench failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON was written"))
            .expect("valid JSON");
    let _ = std::fs::remove_file(&json);

    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["warmup_calls"], 50);
    assert!(
        stdout.contains("warm-up: 50 unmeasured calls per phase"),
        "{stdout}"
    );
    assert_eq!(
        report["phases"].as_array().map(Vec::len),
        Some(PHASES.len())
    );
    for name in PHASES {
        let figures = phase(&report, name);
        assert_eq!(figures["concurrency"], 8, "{name}");
        assert!(
            figures["calls_per_s"].as_f64() > Some(0.0),
            "{name}: {figures:#}"
        );
        assert!(
            figures["ratio_to_baseline"].as_f64() > Some(0.0),
            "{name}: {figures:#}"
        );
        assert!(
            figures["p99_ms"].as_f64() >= figures["p50_ms"].as_f64(),
            "{name}"
        );
        assert_eq!(
            figures["errors"],
            serde_json::json!({}),
            "{name}: {figures:#}"
        );
        if name != "baseline" {
            assert_eq!(figures["stock_check"]["ok"], true, "{name}: {figures:#}");
            assert!(
                figures["peak_rss_kib"]["order-svc"].as_u64() > Some(0),
                "{name}: {figures:#}"
            );
        }
    }
    assert_eq!(phase(&report, "baseline")["ratio_to_baseline"], 1.0);
    // Stock 150 for 200 distinct keys: every unit sold, nothing more.
    let hot = phase(&report, "hot_item");
    assert_eq!(hot["outcomes"]["CREATED"], 150, "{hot:#}");
    assert_eq!(hot["outcomes"]["OUT_OF_STOCK"], 50, "{hot:#}");
    assert_eq!(hot["stock_check"]["stock"], 0, "{hot:#}");
    assert_eq!(phase(&report, "sold_out")["outcomes"]["OUT_OF_STOCK"], 200);
    let flood = phase(&report, "approval_flood");
    assert_eq!(flood["outcomes"]["APPROVED"], 50, "{flood:#}");
    // Each answer's own latency, for every call of its label, and a line saying so.
    for (figures, label, calls) in [
        (hot, "CREATED", 150),
        (hot, "OUT_OF_STOCK", 50),
        (flood, "APPROVED", 50),
        (flood, "APPROVE_FAILED/OUT_OF_STOCK", 50),
    ] {
        let latency = &figures["latency_by_outcome"][label];
        assert_eq!(latency["calls"], calls, "{label}: {figures:#}");
        assert!(
            latency["p99_ms"].as_f64() >= latency["p50_ms"].as_f64()
                && latency["p50_ms"].as_f64() > Some(0.0),
            "{label}: {figures:#}"
        );
    }
    assert!(
        stdout.contains("    by answer: APPROVED 50 p50 "),
        "{stdout}"
    );
    assert!(flood["peak_rss_kib"]["approval-svc"].as_u64() > Some(0));
    let durable = report["database"]["durable"] == true;
    assert_eq!(!durable, stdout.contains("NOT DURABLE"), "{stdout}");
}

#[test]
fn a_throwaway_server_is_labelled_not_durable_on_every_line() {
    let json = temp_json();
    let output = run_bench(40, 20, &["--throwaway"], &json);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON was written"))
            .expect("valid JSON");
    let _ = std::fs::remove_file(&json);
    assert_eq!(report["database"]["durable"], false);
    assert_eq!(report["database"]["throwaway"], true);
    assert_eq!(report["database"]["fsync"], "off");
    for line in stdout.lines() {
        assert!(line.starts_with("NOT DURABLE"), "unlabelled line: {line:?}");
    }
}
