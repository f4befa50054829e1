//! [`DrillOutcome`]: what a drill found — the figures scenarios assert on, the summary line,
//! and the [`DrillReport`] `lab drill` writes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use lab_proto::order::v1 as order_pb;

use crate::check::Report;
use crate::load::{ApproveRun, Outcomes, Summary};
use crate::metrics::ResilienceCounts;
use crate::proxy::ProxyStats;
use crate::report::{DrillReport, FaultWindow, Sample};

use super::scenario::{Pacing, Scenario};
use super::{Drill, RunOptions, Settled, Snapshot};

/// One expectation of the scenario and whether it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// What was expected.
    pub what: String,
    /// Whether it held.
    pub ok: bool,
    /// What was seen.
    pub seen: String,
}

/// What a drill found. Every field is a fact of the run; scenarios assert on them.
#[derive(Debug)]
pub struct DrillOutcome {
    /// The scenario's name.
    pub scenario: String,
    /// The first pass of approvals (every instance's calls of a spread workload merged; a
    /// custom workload's recorded runs).
    pub run: ApproveRun,
    /// The re-sent approvals, when the scenario re-sends what failed.
    pub resent: Option<ApproveRun>,
    /// Every answer: the first pass's and the re-sends'.
    pub outcomes: Outcomes,
    /// Approvals answered OK by either pass (I6 checks them).
    pub accepted: Vec<String>,
    /// Approvals that failed for the caller: after re-sends, the re-sent ones count by their
    /// second answer.
    pub failed: u64,
    /// The challenges, in submission order.
    pub challenge_ids: Vec<String>,
    /// The products as they ended.
    pub products: Vec<order_pb::Product>,
    /// The final I1–I6 check (after waiting for the system to settle).
    pub report: Report,
    /// Challenges dead-lettered at the end (nothing is ever requeued by a drill).
    pub dead_letters: Vec<String>,
    /// What approval-svc's own consistency checker healed (`None`: unreadable). The drills
    /// run it on demand only, so any repair must have been the saga's or the completer's.
    pub checker_healed: Option<u64>,
    /// approval-svc's (instance 0) resilience counters since its last start.
    pub resilience: ResilienceCounts,
    /// The proxy's counters at the end.
    pub proxy: Option<ProxyStats>,
    /// Challenges the completer re-drove (more than one attempt).
    pub rolled_forward: usize,
    /// The timeline's snapshots by name.
    pub snapshots: BTreeMap<String, Snapshot>,
    /// The fault windows (seconds since the load started).
    pub faults: Vec<FaultWindow>,
    /// Connections terminated by each `TerminateConnections` step.
    pub terminated: Vec<u64>,
    /// The scenario's expectations and whether each held.
    pub expectations: Vec<Expectation>,
    /// The summary line (print it with [`Summary::print`]; scenarios add figures first).
    pub summary: Summary,
    /// The report `lab drill` writes.
    pub drill_report: DrillReport,
    /// approval-svc's database (it outlives the drill).
    pub approval_database_url: String,
    /// order-svc's database.
    pub order_database_url: String,
    /// Wall time of the drill.
    pub elapsed: Duration,
}

impl DrillOutcome {
    /// 0 when every invariant holds, 1 when one is broken.
    pub fn exit_code(&self) -> i32 {
        if self.report.is_clean() { 0 } else { 1 }
    }

    /// The snapshot of that name; panics when the timeline took none.
    pub fn snapshot(&self, name: &str) -> &Snapshot {
        self.snapshots
            .get(name)
            .unwrap_or_else(|| panic!("no snapshot {name:?} in the timeline"))
    }

    /// The stock of every product together, at the end.
    pub fn stock(&self) -> i64 {
        self.products.iter().map(|p| p.stock).sum()
    }

    /// The start of the first fault window whose label starts with `prefix`.
    pub fn fault_at(&self, prefix: &str) -> Option<Duration> {
        self.faults
            .iter()
            .find(|w| w.label.starts_with(prefix))
            .map(|w| Duration::from_secs_f64(w.start_s))
    }
}

pub(super) fn build(
    scenario: &Scenario,
    options: &RunOptions,
    drill: Drill,
    settled: Settled,
    samples: Vec<Sample>,
    started_at: SystemTime,
    elapsed: Duration,
) -> DrillOutcome {
    let Drill {
        cluster,
        challenge_ids,
        run,
        requests,
        snapshots,
        mut faults,
        terminated,
        figures,
        ..
    } = drill;
    let end = elapsed.as_secs_f64();
    for window in &mut faults {
        if window.end_s < window.start_s {
            window.end_s = end;
        }
    }
    let mut outcomes = run.outcomes.clone();
    let failed = match &settled.resent {
        Some(second) => {
            outcomes.merge(&second.outcomes);
            run.outcomes
                .failed_approvals()
                .saturating_sub(run.errored.len() as u64)
                + second.outcomes.failed_approvals()
        }
        None => run.outcomes.failed_approvals(),
    };
    let report = settled.report;
    let stock: i64 = settled.products.iter().map(|p| p.stock).sum();
    let expectations = expectations(scenario, &report, &settled.dead_letters, failed);

    let mut summary = Summary::new(&scenario.title);
    summary.requests = requests;
    summary.outcomes = outcomes.clone();
    summary.resilience = Some(settled.resilience);
    summary.proxy = settled.proxy.clone();
    summary.figures = figures;
    summary
        .figure("run", format!("{:.2?}", run.elapsed))
        .figure("failed", failed)
        .figure("dead_letters", settled.dead_letters.len())
        .figure("approved", report.challenges("APPROVED"))
        .figure("orders", report.orders("CREATED"))
        .figure("stock", stock)
        .figure("violations", report.violation_count())
        .figure(
            "checker_healed",
            settled
                .checker_healed
                .map_or_else(|| "unreadable".to_owned(), |n| n.to_string()),
        );
    summary.elapsed = elapsed;

    let mut drill_report = DrillReport {
        scenario: scenario.name.clone(),
        config: config(scenario, options),
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        duration_s: elapsed.as_secs_f64(),
        samples,
        faults: faults.clone(),
        invariants: crate::report::verdicts(&report),
        exit_code: if report.is_clean() { 0 } else { 1 },
        summary: Vec::new(),
    };
    drill_report.summary.push(format!(
        "{} approvals answered ({} after re-sends): {outcomes}",
        run.latencies.len(),
        settled.resent.as_ref().map_or(0, |r| r.latencies.len())
    ));
    drill_report.summary.push(format!(
        "end state: {} challenges APPROVED, {} APPROVE_FAILED, {} orders, stock {stock}, {} dead letters, settled: {}",
        report.challenges("APPROVED"),
        report.challenges("APPROVE_FAILED"),
        report.orders("CREATED"),
        settled.dead_letters.len(),
        report.is_settled()
    ));
    for expectation in &expectations {
        drill_report.summary.push(format!(
            "expectation {}: {} ({})",
            if expectation.ok { "held" } else { "FAILED" },
            expectation.what,
            expectation.seen
        ));
    }
    drill_report.summary.push(summary.to_string());

    DrillOutcome {
        scenario: scenario.name.clone(),
        run,
        resent: settled.resent,
        outcomes,
        accepted: settled.accepted,
        failed,
        challenge_ids,
        products: settled.products,
        report,
        dead_letters: settled.dead_letters,
        checker_healed: settled.checker_healed,
        resilience: settled.resilience,
        proxy: settled.proxy,
        rolled_forward: settled.rolled_forward,
        snapshots,
        faults,
        terminated,
        expectations,
        summary,
        drill_report,
        approval_database_url: cluster.approval.database_url().to_owned(),
        order_database_url: cluster.order.database_url().to_owned(),
        elapsed,
    }
}

fn expectations(
    scenario: &Scenario,
    report: &Report,
    dead_letters: &[String],
    failed: u64,
) -> Vec<Expectation> {
    let expect = &scenario.expect;
    let mut all = Vec::new();
    if let Some(max) = expect.max_failed {
        all.push(Expectation {
            what: format!("at most {max} approvals fail for the caller"),
            ok: failed <= max,
            seen: format!("{failed} failed"),
        });
    }
    if expect.no_dead_letters {
        all.push(Expectation {
            what: "nothing dead-lettered".into(),
            ok: dead_letters.is_empty(),
            seen: format!("{} dead letters", dead_letters.len()),
        });
    }
    if expect.exact_end_state {
        let workload = &scenario.workload;
        let quantity = i64::from(workload.quantity.max(1));
        let approvable = workload
            .products
            .iter()
            .map(|p| {
                let share = workload.challenges / workload.products.len().max(1);
                (p.stock / quantity).min(share as i64)
            })
            .sum::<i64>() as usize;
        let approved = report.challenges("APPROVED");
        all.push(Expectation {
            what: format!("exactly {approvable} APPROVED with one order each, settled"),
            ok: approved == approvable
                && report.orders("CREATED") == approvable
                && report.is_settled(),
            seen: format!(
                "{approved} APPROVED, {} orders, settled: {}",
                report.orders("CREATED"),
                report.is_settled()
            ),
        });
    }
    all
}

fn config(scenario: &Scenario, options: &RunOptions) -> BTreeMap<String, String> {
    let workload = &scenario.workload;
    let cluster = &scenario.cluster;
    let mut config = BTreeMap::new();
    let mut set = |key: &str, value: String| {
        config.insert(key.to_owned(), value);
    };
    set("scenario", scenario.title.clone());
    set("seed", scenario.seed.to_string());
    set("challenges", workload.challenges.to_string());
    set(
        "products",
        workload
            .products
            .iter()
            .map(|p| format!("{} (stock {})", p.name, p.stock))
            .collect::<Vec<_>>()
            .join(", "),
    );
    set("quantity", workload.quantity.to_string());
    match &workload.pacing {
        Pacing::Paced {
            per_second,
            max_in_flight,
        } => {
            set("rate", format!("{per_second}/s"));
            set("max_in_flight", max_in_flight.to_string());
        }
        pacing => set("pacing", format!("{pacing:?}")),
    }
    set("deadline", format!("{:?}", workload.deadline));
    set("order_instances", cluster.order_instances.to_string());
    set("approval_instances", cluster.approval_instances.to_string());
    set("proxy", cluster.proxy.to_string());
    for (key, value) in &cluster.approval_env {
        set(&format!("approval-svc {key}"), value.clone());
    }
    for (key, value) in &cluster.order_env {
        set(&format!("order-svc {key}"), value.clone());
    }
    for (n, step) in scenario.timeline.iter().enumerate() {
        set(
            &format!("timeline {:02}", n + 1),
            format!("{:?}: {:?}", step.at, step.action),
        );
    }
    set(
        "settle",
        format!(
            "re-send errored: {}, pause {:?}, timeout {:?}",
            scenario
                .settle
                .resend_errored
                .map_or_else(|| "no".to_owned(), |n| format!("{n} at once")),
            scenario.settle.pause,
            scenario.settle.timeout
        ),
    );
    for (key, value) in &options.config {
        set(key, value.clone());
    }
    config
}
