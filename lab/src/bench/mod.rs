//! `lab bench`: bounded load tests that check the invariants at the end.
//!
//! - `lab bench flash-sale`: the bare gRPC ceiling, then the hot item, the sold-out item and
//!   the approval flood against the real service binaries and durable PostgreSQL, each figure
//!   as a ratio to the ceiling (issue 11).
//! - `lab bench orders`: the older hot-item load test of an in-process order-svc.

mod baseline;
mod calls;
mod database;
mod flash_sale;
mod load;
mod orders;
mod process;
mod report;

use std::process::ExitCode;

use clap::Subcommand;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Flash sale in one run: a bare tonic server of the same RPC shape, then order-svc's hot
    /// item, its sold-out item, and an approval flood through approval-svc, each as a ratio to
    /// the bare server, with p50/p99, errors by code, peak RSS and a no-oversell check.
    FlashSale(flash_sale::FlashSaleArgs),
    /// Many clients order one hot product of an in-process order-svc: throughput, latency, no
    /// oversell. Its database is a throwaway (fsync=off) server unless --database-url is given.
    Orders(orders::BenchArgs),
}

/// Runs one benchmark.
pub(crate) async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::FlashSale(args) => flash_sale::run(args).await,
        BenchCommand::Orders(args) => orders::run(args).await,
    }
}
