//! `lab bench orders`: a hot-item load test. Many clients order one product at once over
//! several connections; the run reports throughput and latency percentiles, and checks that
//! nothing was oversold (I1) and that every unit sold is one order. Its order-svc runs in this
//! process and, by default, on a throwaway (not durable) PostgreSQL; `lab bench flash-sale`
//! measures the service binaries against durable PostgreSQL.
// Request messages gain fields (API.md: "add fields freely"); `..Default::default()` keeps
// these literals compiling when one does, even where today it adds nothing.
#![allow(clippy::needless_update)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;
use lab_common::shutdown::Shutdown;
use lab_proto::order::v1 as pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;

use super::calls::{MEASURED_KEYS, create_orders};
use super::database::Server;
use super::load::Shape;

/// Options of `lab bench orders`.
#[derive(Debug, Parser)]
pub(crate) struct BenchArgs {
    /// CreateOrder calls in total (bounded, so the run always ends).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,

    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,

    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,

    /// Initial stock of the hot product; fewer than `requests` makes the tail OUT_OF_STOCK.
    #[arg(long, default_value_t = 15_000)]
    stock: i64,

    /// Stop early after this long, whatever is left.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    max_duration: Duration,

    /// Target an existing order-svc instead of starting one in-process.
    #[arg(long, env = "ORDER_SVC_URL")]
    order_svc_url: Option<String>,

    /// PostgreSQL server for the in-process order-svc (unset: a throwaway one).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
}

/// Runs the benchmark and prints its figures.
pub(super) async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    ensure!(
        args.concurrency > 0 && args.connections > 0,
        "concurrency and connections must be > 0"
    );
    let mut local = None;
    let url = match &args.order_svc_url {
        Some(url) => url.clone(),
        None => {
            let started = LocalShop::start(args.database_url.as_deref()).await?;
            let url = format!("http://{}", started.addr);
            local = Some(started);
            url
        }
    };
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let channel = Channel::from_shared(url.clone())?.connect().await?;
        clients.push(OrderServiceClient::new(channel));
    }
    let product = clients[0]
        .create_product(pb::CreateProductRequest {
            name: "bench hot item".into(),
            initial_stock: args.stock,
            ..Default::default()
        })
        .await?
        .into_inner()
        .product
        .context("no product")?;

    let shape = Shape {
        calls: args.requests,
        concurrency: args.concurrency,
        max_duration: args.max_duration,
    };
    let load = create_orders(
        &clients,
        shape,
        "orders",
        product.product_id.clone(),
        MEASURED_KEYS,
    )
    .await;
    let created = load.outcomes.get("CREATED");
    let out_of_stock = load.outcomes.get("OUT_OF_STOCK");
    let errors = load.outcomes.total() - created - out_of_stock;
    let elapsed = load.elapsed;

    let after = clients[0]
        .get_product(pb::GetProductRequest {
            product_id: product.product_id.clone(),
        })
        .await?
        .into_inner()
        .product
        .context("no product")?;
    let sold = after.initial_stock + after.restocked - after.stock;
    let no_oversell = after.stock >= 0 && sold == created as i64;

    let calls = load.calls();
    println!(
        "lab bench orders: one hot product, {calls} CreateOrder calls, concurrency {}, {} connections",
        args.concurrency, args.connections
    );
    println!("  elapsed        {:.2} s", elapsed.as_secs_f64());
    println!(
        "  throughput     {:.0} calls/s ({:.0} orders/s)",
        calls as f64 / elapsed.as_secs_f64(),
        created as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency        p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        load.quantile(0.50),
        load.quantile(0.90),
        load.quantile(0.99),
        load.quantile(1.0)
    );
    println!("  outcomes       created {created}  out_of_stock {out_of_stock}  errors {errors}");
    println!(
        "  stock          {} left of {}; sold {sold}; I1 {}",
        after.stock,
        after.initial_stock,
        if no_oversell { "holds" } else { "VIOLATED" }
    );

    if let Some(local) = local {
        local.stop().await;
    }
    Ok(if no_oversell && errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// An in-process order-svc on its own database, dropped when it stops.
struct LocalShop {
    addr: SocketAddr,
    stop: Shutdown,
    task: tokio::task::JoinHandle<Result<(), order_svc::startup::StartupError>>,
    server: Server,
}

impl LocalShop {
    async fn start(database_url: Option<&str>) -> anyhow::Result<Self> {
        let server = Server::open(database_url, database_url.is_none()).await?;
        let url = server.fresh_database("orders").await?;
        // As the command line would have it: a free loopback port on the fresh database, with
        // room for the benchmark's connections and calls.
        let config = order_svc::Config::try_parse_from([
            "order-svc",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--db-pool-size",
            "32",
            "--max-concurrent-requests",
            "4096",
        ])?;
        let app = order_svc::Application::build(config).await?;
        let addr = app.local_addr();
        let stop = Shutdown::new();
        let task = tokio::spawn(app.run_until(stop.triggered()));
        Ok(Self {
            addr,
            stop,
            task,
            server,
        })
    }

    async fn stop(self) {
        self.stop.trigger();
        let _ = self.task.await;
        if let Err(error) = self.server.close().await {
            eprintln!("lab: warning: dropping the benchmark's database: {error:#}");
        }
    }
}
