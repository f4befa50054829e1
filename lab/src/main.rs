//! `lab`, the operator CLI of concurrency-lab.
//!
//! - `lab up`: order-svc and approval-svc together on loopback, with demo data (one or more
//!   instances of each).
//! - `lab auth init` / `lab auth token`: a signing key and bearer tokens.
//! - `lab check`: invariants I1–I6 across both services, through their public RPCs.
//! - `lab proxy`: the TCP fault proxy for drills.
//! - `lab drill`: a fault drill (built-in scenario or TOML timeline) with a report and a
//!   verdict on I1–I6.
//! - `lab demo`: reproduces a production problem with its safeguard off, then on (feature
//!   `naive-demos`, on by default).
//! - `lab bench flash-sale`: the flash-sale benchmark against a bare gRPC ceiling (issue 11);
//!   `lab bench orders`: a hot-item load test of order-svc.
//! - `lab certs init`: a throwaway CA and certificates for TLS and mutual TLS.
#![forbid(unsafe_code)]

mod auth;
mod bench;
mod certs;
mod check;
#[cfg(feature = "naive-demos")]
mod demo;
mod drill;
mod proxy;
mod up;

use clap::{Parser, Subcommand};
use lab_common::telemetry::LogFormat;

/// jemalloc, as in the services: the benchmark's bare server and load generator then run on
/// the allocator of the services they are compared with (docs/decisions.md, "Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The operator CLI of concurrency-lab.
#[derive(Debug, Parser)]
#[command(name = "lab", version, about)]
struct Cli {
    /// Log format: `pretty` or `json`.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "pretty",
        global = true
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run order-svc and approval-svc on loopback with demo data, until Ctrl-C (several
    /// instances of each with --order-instances / --approval-instances).
    Up(up::UpArgs),
    /// Check invariants I1-I6 across both services; exit 0 when all hold.
    Check(check::CheckArgs),
    /// Run the TCP fault proxy between approval-svc and order-svc, for drills.
    Proxy(proxy::ProxyArgs),
    /// Run a fault drill: start the services, drive approvals, apply the scenario's faults,
    /// settle, check I1-I6, write DIR/report.html and DIR/report.json; exit 0 when every
    /// invariant holds, 1 when one is broken, 2 when the drill could not run.
    Drill(drill::DrillArgs),
    /// Reproduce a production problem: the same workload with one safeguard replaced by naive
    /// code, then with the real one, side by side (exit 0 when only the unsafe run broke).
    #[cfg(feature = "naive-demos")]
    Demo(demo::DemoArgs),
    /// Signing keys and bearer tokens (`init DIR`, `token --key ... --sub ... --roles ...`).
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Benchmarks (bounded load tests that check invariants at the end).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Throwaway certificates for TLS and mutual TLS (development and tests).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    lab_common::telemetry::init(cli.log_format);
    lab_common::runtime::run("lab", run(cli))
}

/// Runs the command; the exit code says how it ended.
async fn run(cli: Cli) -> std::process::ExitCode {
    let result = match cli.command {
        Command::Up(args) => up::run(args, cli.log_format).await,
        Command::Auth(command) => auth::run(command),
        Command::Bench(command) => bench::run(command).await,
        Command::Check(args) => check::run(args).await,
        #[cfg(feature = "naive-demos")]
        Command::Demo(args) => demo::run(args).await,
        Command::Proxy(args) => proxy::run(args).await,
        Command::Drill(args) => drill::run_drill(args).await,
        Command::Certs(command) => certs::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("lab: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
