//! STUB of the drill report (the "report" helper owns this file and replaces it at merge): the
//! interface of `helpers/DRILL_INTERFACE.md` with a minimal `report.json` and a plain page.

use std::collections::BTreeMap;
use std::path::Path;

/// A drill's report: configuration, samples, fault windows and verdicts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DrillReport {
    /// The scenario's name, e.g. `kill-order-svc`.
    pub scenario: String,
    /// Settings shown on the page.
    pub config: BTreeMap<String, String>,
    /// When the drill started (RFC 3339).
    pub started_at: String,
    /// Wall time of the drill.
    pub duration_s: f64,
    /// The time series.
    pub samples: Vec<Sample>,
    /// Fault windows, shaded on every plot.
    pub faults: Vec<FaultWindow>,
    /// Verdicts keyed `I1`..`I6`.
    pub invariants: BTreeMap<String, InvariantVerdict>,
    /// 0 all hold, 1 one broken, 2 could not run.
    pub exit_code: i32,
    /// Free lines.
    pub summary: Vec<String>,
}

/// A fault's time span (seconds since the drill started).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FaultWindow {
    /// What happened.
    pub label: String,
    /// Start.
    pub start_s: f64,
    /// End (equal to the start for an instant fault).
    pub end_s: f64,
}

/// One invariant's verdict.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InvariantVerdict {
    /// True when it holds.
    pub ok: bool,
    /// Violations found.
    pub violations: u64,
    /// What it checks and what broke.
    pub detail: String,
}

/// One 250 ms sample.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Seconds since the drill started.
    pub t_s: f64,
    /// Cumulative answers by outcome label.
    pub outcomes: BTreeMap<String, u64>,
    /// Median latency of the window.
    pub latency_p50_ms: Option<f64>,
    /// p99 latency of the window.
    pub latency_p99_ms: Option<f64>,
    /// Cumulative order calls.
    pub order_calls: u64,
    /// Cumulative attempts.
    pub attempts: u64,
    /// Cumulative retries.
    pub retries: u64,
    /// Breaker state.
    pub breaker_state: u8,
    /// Stock of the drill's products.
    pub stock: Option<i64>,
    /// Challenges by state.
    pub challenges_by_state: BTreeMap<String, u64>,
    /// Dead letters.
    pub dead_letters: u64,
}

/// Writes `report.json` and `report.html` into `dir` (created when missing).
pub fn write(dir: &Path, report: &DrillReport) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("report.html"), render_html(report))
}

/// A plain page (the stub draws no plots).
pub fn render_html(report: &DrillReport) -> String {
    format!(
        "<!doctype html><meta charset=utf-8><title>drill {}</title><pre>{:#?}</pre>",
        report.scenario, report.invariants
    )
}
