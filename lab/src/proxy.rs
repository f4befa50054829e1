//! `lab proxy`: the TCP fault proxy for drills, between approval-svc and order-svc, with a
//! line-based admin port to change the fault while it runs (see `lab_drill::proxy`).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use lab_drill::proxy::{Fault, ProxyOptions, run_proxy};

/// Options of `lab proxy`.
#[derive(Debug, Parser)]
pub(crate) struct ProxyArgs {
    /// Where clients connect (point approval-svc's `--order-svc-url` here).
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,

    /// Where traffic goes, `host:port` (order-svc).
    #[arg(long, default_value = "127.0.0.1:50051")]
    upstream: String,

    /// Admin port: one command per line (`latency 200ms 50ms`, `blackhole`, `reset`,
    /// `cut 100`, `lose 0.5`, `refuse`, `clear`, `status`), e.g. with `nc 127.0.0.1 50062`.
    #[arg(long)]
    admin: Option<SocketAddr>,

    /// The fault active from the start, in the admin protocol's text form.
    #[arg(long, default_value = "none")]
    fault: Fault,

    /// Seed of the random draws (latency jitter, lost responses).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs the proxy until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    run_proxy(
        ProxyOptions {
            listen: args.listen,
            upstream: args.upstream,
            admin: args.admin,
            seed: args.seed,
            initial_fault: args.fault,
        },
        lab_common::shutdown::signal(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
