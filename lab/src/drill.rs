//! `lab drill`: a fault drill against the release binaries on loopback — a built-in scenario
//! (`--scenario NAME`) or a TOML timeline (`--scenario-file FILE.toml`), run by the drill
//! engine of `lab_drill`; writes `DIR/report.json` and `DIR/report.html`, prints the verdicts,
//! and exits 0 when every invariant holds, 1 when one is broken, 2 when the drill could not run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lab_drill::engine::{RunOptions, SAMPLE_EVERY, Scenario, run};
use lab_drill::report::{self, DrillReport};
use lab_drill::scenarios::{BUILT_IN, Params, built_in, from_toml};

/// Options of `lab drill`.
#[derive(Debug, Parser)]
pub(crate) struct DrillArgs {
    /// A built-in scenario: kill-order-svc, kill-approval-svc, slow-order-svc, lost-replies,
    /// postgres-connections-killed, retry-storm, kill-one-of-n, rolling-restart (`--list`
    /// explains them).
    #[arg(long, conflicts_with = "scenario_file", required_unless_present_any = ["scenario_file", "list"])]
    scenario: Option<String>,

    /// A TOML fault timeline instead of a built-in scenario (see docs/drills/).
    #[arg(long, value_name = "FILE.toml")]
    scenario_file: Option<PathBuf>,

    /// How long approvals are sent [default: 30s, or the file's].
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,

    /// Approvals per second [default: 200, or the file's].
    #[arg(long)]
    rate: Option<f64>,

    /// Where report.json and report.html go (created when missing).
    #[arg(long, default_value = "drill-report")]
    out: PathBuf,

    /// order-svc instances [default: 1; kill-one-of-n and rolling-restart take at least 3].
    #[arg(long)]
    order_instances: Option<usize>,

    /// approval-svc instances [default: 1].
    #[arg(long)]
    approval_instances: Option<usize>,

    /// Seed of the challenges' user ids and the proxy's draws [default: 42].
    #[arg(long)]
    seed: Option<u64>,

    /// List the built-in scenarios and exit.
    #[arg(long)]
    list: bool,
}

/// Runs the drill and writes its report.
pub(crate) async fn run_drill(args: DrillArgs) -> anyhow::Result<ExitCode> {
    if args.list {
        for (name, what) in BUILT_IN {
            println!("{name:<28} {what}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let params = Params {
        duration: args.duration,
        rate: args.rate,
        order_instances: args.order_instances,
        approval_instances: args.approval_instances,
        seed: args.seed,
    };
    let scenario = match scenario(&args, &params) {
        Ok(scenario) => scenario,
        Err(error) => return could_not_run(&args, "?", &error),
    };
    let options = RunOptions {
        sample_every: Some(SAMPLE_EVERY),
        progress: true,
        config: vec![(
            "command".to_owned(),
            std::env::args().collect::<Vec<_>>().join(" "),
        )],
    };
    eprintln!(
        "lab drill: {} ({} approvals, binaries from {})",
        scenario.title,
        scenario.workload.challenges,
        lab_drill::process::bin_dir().display()
    );
    // Ctrl-C drops the drill, and with it every service it started (they are killed on drop;
    // a signal that ended this process would leave them running).
    let result = tokio::select! {
        result = run(&scenario, &options) => result,
        _ = tokio::signal::ctrl_c() => {
            return could_not_run(&args, &scenario.name, "interrupted (Ctrl-C)");
        }
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => return could_not_run(&args, &scenario.name, &error.to_string()),
    };
    if let Err(error) = report::write(&args.out, &outcome.drill_report) {
        eprintln!(
            "lab drill: writing the report to {}: {error}",
            args.out.display()
        );
        return Ok(ExitCode::from(2));
    }
    outcome.summary.print();
    println!("{}", outcome.report);
    for expectation in &outcome.expectations {
        println!(
            "expectation {:<6} {} ({})",
            if expectation.ok { "held" } else { "FAILED" },
            expectation.what,
            expectation.seen
        );
    }
    println!("report: {}", args.out.join("report.html").display());
    Ok(ExitCode::from(outcome.exit_code() as u8))
}

/// The scenario the arguments name.
fn scenario(args: &DrillArgs, params: &Params) -> Result<Scenario, String> {
    if let Some(path) = &args.scenario_file {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        return from_toml(&text, params).map_err(|error| format!("{}: {error}", path.display()));
    }
    let name = args.scenario.as_deref().unwrap_or_default();
    built_in(name, params).ok_or_else(|| {
        let names: Vec<&str> = BUILT_IN.iter().map(|(name, _)| *name).collect();
        format!("unknown scenario {name:?}; one of: {}", names.join(", "))
    })
}

/// Exit 2, with a report saying why when the output directory can take one.
fn could_not_run(args: &DrillArgs, name: &str, error: &str) -> anyhow::Result<ExitCode> {
    eprintln!("lab drill: could not run: {error}");
    let report = DrillReport {
        scenario: args.scenario.clone().unwrap_or_else(|| name.to_owned()),
        config: Default::default(),
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        duration_s: 0.0,
        samples: Vec::new(),
        faults: Vec::new(),
        invariants: Default::default(),
        exit_code: 2,
        summary: vec![format!("the drill could not run: {error}")],
    };
    if let Err(error) = report::write(&args.out, &report) {
        eprintln!("lab drill: no report written: {error}");
    }
    Ok(ExitCode::from(2))
}
