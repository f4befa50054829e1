//! The figures of a `lab bench flash-sale` run: one record per phase and concurrency, the
//! table printed at the end, and the JSON written by `--json`.

use std::collections::BTreeMap;
use std::time::Duration;

use lab_proto::order::v1 as pb;
use serde::Serialize;

use super::database::Durability;
use super::load::{Load, quantile};

/// Outcomes that are the system working as specified; every other label counts as an error.
const EXPECTED_OUTCOMES: &[&str] = &[
    "CREATED",
    "OUT_OF_STOCK",
    "APPROVED",
    "APPROVE_FAILED/OUT_OF_STOCK",
];

/// The whole run.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    /// The command line that produced it.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Whether lab and the services it starts ran tokio with its LIFO slot
    /// (`TOKIO_LIFO_SLOT=on`); off by default (`lab_common::runtime`).
    pub lifo_slot: bool,
    /// The directory the service binaries were run from.
    pub binaries: String,
    /// The PostgreSQL server and its durability.
    pub database: DatabaseInfo,
    /// CreateOrder calls per order phase.
    pub calls: usize,
    /// ApproveChallenge calls in the approval flood.
    pub approvals: usize,
    /// Unmeasured calls each phase made first, against a product of their own.
    pub warmup_calls: usize,
    /// HTTP/2 connections per phase.
    pub connections: usize,
    /// Callers (calls in flight), one round of phases per value.
    pub concurrency: Vec<usize>,
    /// Every phase of every round, in the order run.
    pub phases: Vec<PhaseFigures>,
    /// True when every stock check held.
    pub ok: bool,
}

/// The machine the run was on.
#[derive(Debug, Serialize)]
pub(super) struct Machine {
    /// CPUs this process may use (`nproc`).
    pub nproc: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `/proc/loadavg` when the run started (the machine may be shared).
    pub load_average_at_start: String,
}

impl Machine {
    /// True when the 1-minute load average exceeded the CPUs at the start: other work shares
    /// them, and throughput figures are a floor.
    pub(super) fn was_busy(&self) -> bool {
        self.load_average_at_start
            .split_whitespace()
            .next()
            .and_then(|load| load.parse::<f64>().ok())
            .is_some_and(|load| load > self.nproc as f64)
    }
}

impl Machine {
    /// Reads this machine's figures.
    pub(super) fn current() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            load_average_at_start: load
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// The server every service phase used.
#[derive(Debug, Serialize)]
pub(super) struct DatabaseInfo {
    /// Its URL, without a password.
    pub server: String,
    /// Its settings.
    #[serde(flatten)]
    pub durability: Durability,
    /// `fsync` and `synchronous_commit` both on.
    pub durable: bool,
}

/// One phase at one concurrency.
#[derive(Debug, Serialize)]
pub(super) struct PhaseFigures {
    /// `baseline`, `hot_item`, `sold_out` or `approval_flood`.
    pub phase: &'static str,
    /// What ran, in words.
    pub description: String,
    /// Callers.
    pub concurrency: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Calls made.
    pub calls: usize,
    /// Seconds from the first call to the last answer.
    pub elapsed_s: f64,
    /// Calls per second.
    pub calls_per_s: f64,
    /// `calls_per_s` divided by the baseline's at the same concurrency.
    pub ratio_to_baseline: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest call.
    pub max_ms: f64,
    /// Every answer by label.
    pub outcomes: BTreeMap<String, u64>,
    /// Latency by answer label: a flood's p99 is its sold calls' (they wait for the hot row),
    /// while its refusals are answered from memory.
    pub latency_by_outcome: BTreeMap<String, OutcomeLatency>,
    /// The answers that are not the system working as specified, by label (code and reason).
    pub errors: BTreeMap<String, u64>,
    /// True when `--max-duration` cut the phase short.
    pub cut_short: bool,
    /// Peak resident set size (`VmHWM`) of each service process, in KiB.
    pub peak_rss_kib: BTreeMap<String, u64>,
    /// The stock check after the phase (none for the baseline).
    pub stock_check: Option<StockCheck>,
}

impl PhaseFigures {
    /// The figures of `load`; the ratio is set by [`PhaseFigures::set_baseline`].
    pub(super) fn new(
        phase: &'static str,
        description: String,
        concurrency: usize,
        connections: usize,
        load: &Load,
    ) -> Self {
        let outcomes: BTreeMap<String, u64> = load
            .outcomes
            .iter()
            .map(|(label, n)| (label.to_owned(), n))
            .collect();
        let errors = outcomes
            .iter()
            .filter(|(label, _)| !EXPECTED_OUTCOMES.contains(&label.as_str()))
            .map(|(label, n)| (label.clone(), *n))
            .collect();
        Self {
            phase,
            description,
            concurrency,
            connections,
            calls: load.calls(),
            elapsed_s: load.elapsed.as_secs_f64(),
            calls_per_s: load.calls_per_second(),
            ratio_to_baseline: 0.0,
            p50_ms: millis(load.quantile(0.50)),
            p90_ms: millis(load.quantile(0.90)),
            p99_ms: millis(load.quantile(0.99)),
            max_ms: millis(load.quantile(1.0)),
            outcomes,
            latency_by_outcome: load
                .latencies_by_outcome
                .iter()
                .map(|(label, latencies)| (label.clone(), OutcomeLatency::of(latencies)))
                .collect(),
            errors,
            cut_short: load.cut_short,
            peak_rss_kib: BTreeMap::new(),
            stock_check: None,
        }
    }

    /// Errors in total.
    pub(super) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The count of one outcome label.
    pub(super) fn outcome(&self, label: &str) -> u64 {
        self.outcomes.get(label).copied().unwrap_or(0)
    }

    /// True unless its stock check failed.
    pub(super) fn holds(&self) -> bool {
        self.stock_check.as_ref().is_none_or(|check| check.ok)
    }

    /// One line for the table.
    pub(super) fn table_row(&self) -> String {
        let rss = if self.peak_rss_kib.is_empty() {
            "-".to_owned()
        } else {
            self.peak_rss_kib
                .iter()
                .map(|(name, kib)| format!("{name} {:.1} MiB", *kib as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let check = match &self.stock_check {
            None => "-",
            Some(check) if check.ok => "holds",
            Some(_) => "BROKEN",
        };
        format!(
            "{:<15} {:>7} {:>7} {:>9.0} {:>7.3} {:>9} {:>9} {:>7} {:>8} {:>6}  {:<6} {}{}",
            self.phase,
            self.concurrency,
            self.calls,
            self.calls_per_s,
            self.ratio_to_baseline,
            format_ms(self.p50_ms),
            format_ms(self.p99_ms),
            self.outcome("CREATED") + self.outcome("APPROVED"),
            self.outcome("OUT_OF_STOCK") + self.outcome("APPROVE_FAILED/OUT_OF_STOCK"),
            self.error_count(),
            check,
            rss,
            if self.cut_short {
                "  (cut short by --max-duration)"
            } else {
                ""
            },
        )
    }
}

/// The latency of the calls of one answer label.
#[derive(Debug, Serialize)]
pub(super) struct OutcomeLatency {
    /// Calls answered so.
    pub calls: usize,
    /// Median, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
}

impl OutcomeLatency {
    fn of(sorted: &[Duration]) -> Self {
        Self {
            calls: sorted.len(),
            p50_ms: millis(quantile(sorted, 0.50)),
            p99_ms: millis(quantile(sorted, 0.99)),
        }
    }
}

/// The header matching [`PhaseFigures::table_row`].
pub(super) const TABLE_HEADER: &str = "phase           callers   calls   calls/s  x bare       p50       p99    sold  refused errors  stock   peak RSS";

/// The product's ledger after a phase, against what the callers were told.
#[derive(Debug, Serialize)]
pub(super) struct StockCheck {
    /// Units the product was created with.
    pub initial_stock: i64,
    /// Units added since.
    pub restocked: i64,
    /// Units left.
    pub stock: i64,
    /// `initial_stock + restocked - stock`.
    pub sold: i64,
    /// Summed quantity of its CREATED orders, from the same snapshot.
    pub created_quantity: i64,
    /// Its CREATED orders.
    pub created_orders: i64,
    /// Calls answered with an order (CREATED, or an APPROVED challenge).
    pub answered_with_an_order: u64,
    /// True when nothing below is listed.
    pub ok: bool,
    /// What does not hold, in words.
    pub problems: Vec<String>,
}

impl StockCheck {
    /// Checks I1 on `ledger` (stock ≥ 0; sold = the CREATED orders' quantity), that every
    /// call told it has an order has one, and, when no call failed, that no order exists that
    /// no caller was told about.
    pub(super) fn new(
        ledger: &pb::ProductLedger,
        answered_with_an_order: u64,
        errors: u64,
    ) -> Self {
        let sold = ledger.initial_stock + ledger.restocked - ledger.stock;
        let mut problems = Vec::new();
        if ledger.stock < 0 {
            problems.push(format!("stock is {} (below zero)", ledger.stock));
        }
        if sold != ledger.created_quantity {
            problems.push(format!(
                "I1: {sold} units left the stock but CREATED orders hold {}",
                ledger.created_quantity
            ));
        }
        let answered = i64::try_from(answered_with_an_order).unwrap_or(i64::MAX);
        if answered > ledger.created_orders {
            problems.push(format!(
                "{answered} calls were answered with an order but only {} orders exist",
                ledger.created_orders
            ));
        }
        if errors == 0 && answered < ledger.created_orders {
            problems.push(format!(
                "{} orders exist but only {answered} calls were answered with one",
                ledger.created_orders
            ));
        }
        Self {
            initial_stock: ledger.initial_stock,
            restocked: ledger.restocked,
            stock: ledger.stock,
            sold,
            created_quantity: ledger.created_quantity,
            created_orders: ledger.created_orders,
            answered_with_an_order,
            ok: problems.is_empty(),
            problems,
        }
    }
}

impl Report {
    /// Sets `ok` from the phases' stock checks.
    pub(super) fn finish(&mut self) {
        self.ok = self.phases.iter().all(PhaseFigures::holds);
    }

    /// The lines printed before the first phase.
    pub(super) fn header_lines(&self) -> Vec<String> {
        let busy = if self.machine.was_busy() {
            " (BUSY: more runnable work than CPUs, so calls/s are a floor)"
        } else {
            ""
        };
        vec![
            format!(
                "lab bench flash-sale: {} CreateOrder calls per order phase, {} approvals, {} connections, callers {:?}",
                self.calls, self.approvals, self.connections, self.concurrency
            ),
            if self.warmup_calls == 0 {
                "warm-up: none (--warmup-calls 0): the figures include the services' first calls"
                    .to_owned()
            } else {
                format!(
                    "warm-up: {} unmeasured calls per phase first, on a product of their own",
                    self.warmup_calls
                )
            },
            format!(
                "machine: {} CPUs ({}), load average at start {}{busy}",
                self.machine.nproc, self.machine.cpu_model, self.machine.load_average_at_start
            ),
            format!(
                "runtime: tokio multi-thread, LIFO slot {} (lab and the services; TOKIO_LIFO_SLOT)",
                if self.lifo_slot { "on" } else { "off" }
            ),
            format!("services: {}/{{order-svc,approval-svc}}", self.binaries),
            format!(
                "database: {} {}",
                self.database.server,
                self.database.durability.describe()
            ),
            String::new(),
            TABLE_HEADER.to_owned(),
        ]
    }

    /// The lines printed after the last phase.
    pub(super) fn footer_lines(&self) -> Vec<String> {
        vec![
            String::new(),
            "x bare = calls/s divided by the bare tonic server's at the same callers; sold = calls \
             answered with an order; refused = OUT_OF_STOCK; stock = I1 on the product's ledger \
             (initial + restocked - stock = CREATED orders, stock >= 0)"
                .to_owned(),
            format!(
                "verdict: {}",
                if self.ok {
                    "no oversell in any phase"
                } else {
                    "STOCK CHECK BROKEN (see above)"
                }
            ),
        ]
    }
}

impl PhaseFigures {
    /// Sets the ratio to the baseline's calls per second.
    pub(super) fn set_baseline(&mut self, baseline_calls_per_s: f64) {
        self.ratio_to_baseline = if baseline_calls_per_s > 0.0 {
            self.calls_per_s / baseline_calls_per_s
        } else {
            0.0
        };
    }

    /// Its table row, then a line of latency by answer when the calls were answered in more
    /// than one way, one of errors by label and one of broken checks when there are.
    pub(super) fn lines(&self) -> Vec<String> {
        let mut lines = vec![self.table_row()];
        if self.latency_by_outcome.len() > 1 {
            let by_outcome: Vec<String> = self
                .latency_by_outcome
                .iter()
                .map(|(label, latency)| {
                    format!(
                        "{label} {} p50 {} p99 {}",
                        latency.calls,
                        format_ms(latency.p50_ms),
                        format_ms(latency.p99_ms)
                    )
                })
                .collect();
            lines.push(format!("    by answer: {}", by_outcome.join("; ")));
        }
        if !self.errors.is_empty() {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(label, n)| format!("{label}={n}"))
                .collect();
            lines.push(format!("    errors: {}", errors.join(" ")));
        }
        if let Some(check) = &self.stock_check
            && !check.ok
        {
            lines.push(format!(
                "    STOCK CHECK BROKEN: {}",
                check.problems.join("; ")
            ));
        }
        lines
    }
}

/// `"NOT DURABLE (fsync=…, synchronous_commit=…) | "` when commits were not durable, else
/// nothing: put in front of every line printed, so no figure can be quoted without it.
pub(super) fn durability_mark(durability: &Durability) -> String {
    if durability.is_durable() {
        String::new()
    } else {
        format!(
            "NOT DURABLE (fsync={}, synchronous_commit={}) | ",
            durability.fsync, durability.synchronous_commit
        )
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn format_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(initial: i64, restocked: i64, stock: i64, created: i64) -> pb::ProductLedger {
        pb::ProductLedger {
            initial_stock: initial,
            restocked,
            stock,
            created_quantity: created,
            created_orders: created,
            ..Default::default()
        }
    }

    #[test]
    fn a_consistent_ledger_holds() {
        let check = StockCheck::new(&ledger(100, 10, 0, 110), 110, 0);
        assert!(check.ok, "{:?}", check.problems);
        assert_eq!(check.sold, 110);
    }

    #[test]
    fn an_oversold_or_negative_stock_is_broken() {
        // 100 units left the stock but 101 orders hold units.
        let oversold = StockCheck::new(&ledger(100, 0, 0, 101), 101, 0);
        assert!(!oversold.ok);
        assert!(
            oversold.problems[0].starts_with("I1"),
            "{:?}",
            oversold.problems
        );
        let negative = StockCheck::new(&ledger(100, 0, -1, 101), 101, 0);
        assert!(!negative.ok);
        assert!(negative.problems[0].contains("below zero"));
    }

    #[test]
    fn answers_must_match_the_orders() {
        // More callers told "created" than orders exist.
        assert!(!StockCheck::new(&ledger(10, 0, 5, 5), 6, 0).ok);
        // An order no caller heard of is only explainable by a failed call.
        assert!(!StockCheck::new(&ledger(10, 0, 5, 5), 4, 0).ok);
        assert!(StockCheck::new(&ledger(10, 0, 5, 5), 4, 1).ok);
    }

    #[test]
    fn errors_are_every_unexpected_outcome() {
        let mut load = Load::default();
        load.outcomes.add("CREATED", 3);
        load.outcomes.add("OUT_OF_STOCK", 2);
        load.outcomes.add("error/UNAVAILABLE", 1);
        load.outcomes.add("APPROVE_FAILED/DEADLINE_EXCEEDED", 1);
        let figures = PhaseFigures::new("hot_item", String::new(), 8, 2, &load);
        assert_eq!(figures.error_count(), 2);
        assert_eq!(figures.errors.get("error/UNAVAILABLE"), Some(&1));
    }
}
