//! Both runs of one problem side by side: the verdict (did the unsafe run show its problem, did
//! the safe run show none), the terminal table and `report.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lab_drill::check::{Invariant, Report};
use serde_json::{Value, json};

use super::problems::Problem;
use super::setup::Side;

/// Offending ids shown per broken invariant.
const SHOWN_IDS: usize = 3;

/// One problem's two runs.
#[derive(Debug, Clone)]
pub(crate) struct Demo {
    /// Which problem.
    pub problem: Problem,
    /// With the safeguard replaced by naive code.
    pub unsafe_run: Side,
    /// With the real safeguard.
    pub safe_run: Side,
}

impl Demo {
    /// True when the unsafe run showed the problem: its invariant broken, or (no-circuit-breaker)
    /// a p99 at least twice the safe run's and more calls in flight.
    pub(crate) fn problem_shown(&self) -> bool {
        match self.problem.breaks() {
            Some(invariant) => self.unsafe_run.report.outcome(invariant).violation_count > 0,
            None => {
                let (u, s) = (&self.unsafe_run, &self.safe_run);
                u.p99_ms.unwrap_or(0.0) >= 2.0 * s.p99_ms.unwrap_or(f64::INFINITY)
                    && u.max_in_flight.unwrap_or(0) > s.max_in_flight.unwrap_or(u64::MAX)
            }
        }
    }

    /// True when the safe run broke no invariant.
    pub(crate) fn safe_clean(&self) -> bool {
        self.safe_run.report.is_clean()
    }

    /// 0 when the unsafe run showed its problem and the safe run none, 1 otherwise.
    pub(crate) fn exit_code(&self) -> u8 {
        if self.problem_shown() && self.safe_clean() {
            0
        } else {
            1
        }
    }

    /// One line saying what the two runs proved.
    pub(crate) fn conclusion(&self) -> String {
        let shown = match self.problem.breaks() {
            Some(invariant) => {
                let n = self.unsafe_run.report.outcome(invariant).violation_count;
                if n > 0 {
                    format!("the unsafe run broke {invariant} {n} time(s)")
                } else {
                    format!("the unsafe run did NOT break {invariant}")
                }
            }
            None if self.problem_shown() => {
                "the unsafe run's calls piled up (p99 and calls in flight far above the safe run's)"
                    .to_owned()
            }
            None => "the unsafe run's calls did NOT pile up".to_owned(),
        };
        let safe = if self.safe_clean() {
            "the safe run broke nothing".to_owned()
        } else {
            format!(
                "the safe run broke {} invariant(s)",
                broken(&self.safe_run.report).len()
            )
        };
        format!("{shown}; {safe} → exit {}", self.exit_code())
    }

    /// The side-by-side table for the terminal.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "problem {}: {}",
            self.problem.name(),
            self.problem.sentence()
        );
        let rows = self.rows();
        let left = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let middle = rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0)
            .min(70);
        for (label, unsafe_cell, safe_cell) in rows {
            let _ = writeln!(out, "{label:<left$} | {unsafe_cell:<middle$} | {safe_cell}");
        }
        let _ = writeln!(out, "verdict: {}", self.conclusion());
        out
    }

    fn rows(&self) -> Vec<(String, String, String)> {
        let (u, s) = (&self.unsafe_run, &self.safe_run);
        let mut rows = vec![(
            String::new(),
            "UNSAFE (naive code)".to_owned(),
            "SAFE (real services)".to_owned(),
        )];
        for n in 0..u.happened.len().max(s.happened.len()) {
            rows.push((
                if n == 0 { "what happened" } else { "" }.to_owned(),
                u.happened.get(n).cloned().unwrap_or_default(),
                s.happened.get(n).cloned().unwrap_or_default(),
            ));
        }
        for invariant in Invariant::ALL {
            let cell = |report: &Report| match report.outcome(invariant).violation_count {
                0 => "ok".to_owned(),
                n => format!("VIOLATED ×{n}"),
            };
            rows.push((
                format!("{invariant} {}", invariant.title()),
                cell(&u.report),
                cell(&s.report),
            ));
        }
        if let (Some(up), Some(sp)) = (u.p99_ms, s.p99_ms) {
            rows.push((
                "p99".to_owned(),
                format!("{up:.0} ms"),
                format!("{sp:.0} ms"),
            ));
        }
        if let (Some(ui), Some(si)) = (u.max_in_flight, s.max_in_flight) {
            rows.push(("max in flight".to_owned(), ui.to_string(), si.to_string()));
        }
        let ids = |report: &Report| {
            broken(report)
                .iter()
                .flat_map(|&i| {
                    report
                        .outcome(i)
                        .violations
                        .iter()
                        .take(SHOWN_IDS)
                        .map(move |v| format!("{i} {}", v.id))
                })
                .collect::<Vec<_>>()
        };
        let (ui, si) = (ids(&u.report), ids(&s.report));
        for n in 0..ui.len().max(si.len()).max(1) {
            rows.push((
                if n == 0 { "offending ids" } else { "" }.to_owned(),
                ui.get(n)
                    .cloned()
                    .unwrap_or_else(|| if n == 0 { "–".into() } else { String::new() }),
                si.get(n)
                    .cloned()
                    .unwrap_or_else(|| if n == 0 { "–".into() } else { String::new() }),
            ));
        }
        rows
    }

    /// `report.json` (API.md: `problem`, `unsafe`, `safe`, each with `violations` keyed I1…I6,
    /// and `p99_ms` / `max_in_flight` for no-circuit-breaker).
    pub(crate) fn json(&self) -> Value {
        json!({
            "problem": self.problem.name(),
            "explanation": self.problem.sentence(),
            "breaks": self.problem.breaks().map(|i| i.to_string()),
            "unsafe": side_json(&self.unsafe_run),
            "safe": side_json(&self.safe_run),
            "problem_shown": self.problem_shown(),
            "safe_clean": self.safe_clean(),
            "conclusion": self.conclusion(),
            "exit_code": self.exit_code(),
        })
    }
}

/// The invariants a report breaks.
pub(super) fn broken(report: &Report) -> Vec<Invariant> {
    Invariant::ALL
        .into_iter()
        .filter(|&i| report.outcome(i).violation_count > 0)
        .collect()
}

fn side_json(side: &Side) -> Value {
    let violations: BTreeMap<String, usize> = Invariant::ALL
        .iter()
        .map(|&i| (i.to_string(), side.report.outcome(i).violation_count))
        .collect();
    let offending: BTreeMap<String, Vec<Value>> = broken(&side.report)
        .into_iter()
        .map(|i| {
            let kept = side.report.outcome(i).violations.iter().take(20);
            (
                i.to_string(),
                kept.map(|v| json!({"id": v.id, "detail": v.detail}))
                    .collect(),
            )
        })
        .collect();
    let mut value = json!({
        "happened": side.happened,
        "violations": violations,
        "offending": offending,
        "challenges_by_status": side.report.challenges_by_status,
        "orders_by_status": side.report.orders_by_status,
    });
    if let Some(p99) = side.p99_ms {
        value["p99_ms"] = json!(p99);
    }
    if let Some(max) = side.max_in_flight {
        value["max_in_flight"] = json!(max);
    }
    value
}
