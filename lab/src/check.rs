//! `lab check`: reads both services through their public RPCs and reports invariants I1–I6;
//! exit code 0 when all hold, 1 when any is violated, 2 when the check could not run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lab_drill::check::{CheckOptions, check, check_settled};

/// Options of `lab check`.
#[derive(Debug, Parser)]
pub(crate) struct CheckArgs {
    /// approval-svc's gRPC URL.
    #[arg(
        long,
        env = "APPROVAL_SVC_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    approval_svc_url: String,

    /// order-svc's gRPC URL.
    #[arg(long, env = "ORDER_SVC_URL", default_value = "http://127.0.0.1:50051")]
    order_svc_url: String,

    /// Tolerance past a lease before an in-flight challenge counts as stuck (I5).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    stuck_after_lease: Duration,

    /// Re-check until the system settles (clean, nothing in flight) or this long has passed;
    /// useful right after a load run. `0s` checks once.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    settle: Duration,

    /// Bearer token sent as `authorization: Bearer` on every call to both services, for a
    /// system with authentication on (`lab up` prints one). It needs the roles `approver` and
    /// `shop-admin`.
    #[arg(long, env = "LAB_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs the check and prints the report.
pub(crate) async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let options = CheckOptions {
        stuck_after_lease: args.stuck_after_lease,
        token: args.token,
        ..CheckOptions::default()
    };
    let result = if args.settle.is_zero() {
        check(&args.approval_svc_url, &args.order_svc_url, &options).await
    } else {
        check_settled(
            &args.approval_svc_url,
            &args.order_svc_url,
            &options,
            args.settle,
        )
        .await
    };
    match result {
        Ok(report) => {
            println!("{report}");
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(error) => {
            eprintln!("lab check: {error}");
            Ok(ExitCode::from(2))
        }
    }
}
