//! `lab demo`: reproduces a production problem. The same workload runs twice against real
//! services and PostgreSQL, first with one safeguard replaced by the naive code people write
//! before they meet the problem ([`naive`]), then through the real services; the same checker
//! `lab check` uses judges both, and the two results are shown side by side.
//!
//! Exit code: 0 when the unsafe run showed its problem and the safe run none, 1 otherwise, 2
//! when the demo could not run.

mod naive;
mod outcome;
mod page;
mod problems;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

pub(crate) use outcome::Demo;
pub(crate) use problems::Problem;

/// Options of `lab demo`.
#[derive(Debug, Parser)]
pub(crate) struct DemoArgs {
    /// The problem to reproduce.
    #[arg(long, value_enum, required_unless_present = "list")]
    problem: Option<Problem>,

    /// Write `report.json` and `report.html` into this directory.
    #[arg(long)]
    out: Option<PathBuf>,

    /// List the problems, one sentence each.
    #[arg(long, conflicts_with = "problem")]
    list: bool,
}

/// Runs `lab demo`.
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let Some(problem) = args.problem.filter(|_| !args.list) else {
        for problem in Problem::ALL {
            println!("{:<20} {}", problem.name(), problem.sentence());
        }
        return Ok(ExitCode::SUCCESS);
    };
    match demo(problem).await {
        Ok(demo) => {
            print!("{}", demo.table());
            if let Some(dir) = &args.out
                && let Err(error) = write(dir, &demo)
            {
                eprintln!("lab demo: {error:#}");
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::from(demo.exit_code()))
        }
        Err(error) => {
            eprintln!("lab demo: could not run {}: {error:#}", problem.name());
            Ok(ExitCode::from(2))
        }
    }
}

/// Both runs of `problem`, unsafe first.
pub(crate) async fn demo(problem: Problem) -> anyhow::Result<Demo> {
    let unsafe_run = problem.unsafe_run().await.context("unsafe run")?;
    let safe_run = problem.safe_run().await.context("safe run")?;
    Ok(Demo {
        problem,
        unsafe_run,
        safe_run,
    })
}

fn write(dir: &std::path::Path, demo: &Demo) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(&demo.json())?;
    std::fs::write(dir.join("report.json"), json).context("writing report.json")?;
    std::fs::write(dir.join("report.html"), page::render(demo)).context("writing report.html")?;
    Ok(())
}
