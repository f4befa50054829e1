//! `lab`, the operator CLI of concurrency-lab.
//!
//! - `lab up`: order-svc and approval-svc together on loopback, with demo data.
#![forbid(unsafe_code)]

mod up;

use clap::{Parser, Subcommand};
use lab_common::telemetry::LogFormat;

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
    /// Run order-svc and approval-svc on loopback with demo data, until Ctrl-C.
    Up(up::UpArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    lab_common::telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Up(args) => up::run(args, cli.log_format).await,
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("lab: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
