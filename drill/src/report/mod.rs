//! The drill report: what a drill measured, kept as `report.json` for machines and drawn as
//! `report.html` for people.
//!
//! [`DrillReport`] is the whole record: the scenario and its configuration, the time series the
//! [`sampler`](crate::sampler) took every 250 ms, the fault windows the drill applied, the I1–I6
//! verdicts and the exit code. [`write`] stores both files; [`render_html`] draws the page alone.
//!
//! The page is one self-contained file (inline CSS, plots as inline SVG drawn with `plotters`, no
//! scripts, no fonts or anything else fetched), so it opens from a CI artifact or an air-gapped
//! host exactly as it looked where the drill ran. Every plot shades the fault windows, so cause
//! and effect line up by eye.

mod html;
mod plots;
mod series;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use html::{STYLE, escape, render_html, verdict_table};

/// Everything one drill measured and concluded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    /// The scenario's name, e.g. `kill-order-svc`, or the timeline file's.
    pub scenario: String,
    /// Flags and settings shown on the page (`"rate"` → `"150/s"`, …).
    pub config: BTreeMap<String, String>,
    /// When the drill started, RFC 3339.
    pub started_at: String,
    /// Wall time of the drill, in seconds.
    pub duration_s: f64,
    /// The time series, one sample every 250 ms.
    pub samples: Vec<Sample>,
    /// The faults applied, shaded on every plot.
    pub faults: Vec<FaultWindow>,
    /// The invariant verdicts, keyed `I1`…`I6`.
    pub invariants: BTreeMap<String, InvariantVerdict>,
    /// The drill's exit code: 0 every invariant holds, 1 one is broken, 2 the drill could not run.
    pub exit_code: i32,
    /// Free summary lines (totals, notes).
    pub summary: Vec<String>,
}

/// One fault the drill applied, from `start_s` to `end_s` seconds after the drill started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// What the fault was, e.g. `kill -9 order-svc#0`.
    pub label: String,
    /// When it began, seconds since the drill started.
    pub start_s: f64,
    /// When it ended; equal to `start_s` for an instant fault (`kill -9`).
    pub end_s: f64,
}

impl FaultWindow {
    /// True for a fault without duration (drawn as a line, not a band).
    pub fn is_instant(&self) -> bool {
        self.end_s <= self.start_s
    }
}

/// The checker's verdict on one invariant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvariantVerdict {
    /// True when the invariant holds.
    pub ok: bool,
    /// How many violations the checker found.
    pub violations: u64,
    /// What the checker said (examples of violations, or why it could not check).
    pub detail: String,
}

/// What the sampler saw at one instant of the drill.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the drill started.
    pub t_s: f64,
    /// Cumulative answers by outcome label (`load::outcome_label`).
    pub outcomes: BTreeMap<String, u64>,
    /// Median latency of the answers of this sample's window, in milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency of the answers of this sample's window, in milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// Cumulative calls from approval-svc to order-svc (`resilience_calls_total`).
    pub order_calls: u64,
    /// Cumulative attempts towards order-svc, summed over approval-svc instances.
    pub attempts: u64,
    /// Cumulative retries towards order-svc, summed over approval-svc instances.
    pub retries: u64,
    /// `resilience_breaker_state`, the worst over instances: 0 closed, 1 open, 2 half-open,
    /// 3 forced open.
    pub breaker_state: u8,
    /// Stock of the drill's products, summed; `None` until first read.
    pub stock: Option<i64>,
    /// Challenges by state (`PENDING`, `APPROVING`, `APPROVED`, `APPROVE_FAILED`, …).
    pub challenges_by_state: BTreeMap<String, u64>,
    /// Dead-lettered challenges.
    pub dead_letters: u64,
}

/// The verdict on each of I1–I6 of a check, keyed `I1`…`I6` as `report.json` holds them; each
/// detail names what was checked and the first few violations.
pub fn verdicts(report: &crate::check::Report) -> BTreeMap<String, InvariantVerdict> {
    const SHOWN: usize = 5;
    crate::check::Invariant::ALL
        .iter()
        .map(|&invariant| {
            let outcome = report.outcome(invariant);
            let mut detail = format!("{} ({} checked)", invariant.title(), outcome.checked);
            for violation in outcome.violations.iter().take(SHOWN) {
                detail.push_str(&format!("; {}: {}", violation.id, violation.detail));
            }
            (
                invariant.to_string(),
                InvariantVerdict {
                    ok: outcome.violation_count == 0,
                    violations: outcome.violation_count as u64,
                    detail,
                },
            )
        })
        .collect()
}

/// Writes `dir/report.json` and `dir/report.html`, creating `dir` if needed.
pub fn write(dir: &Path, report: &DrillReport) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("report.html"), render_html(report))
}
