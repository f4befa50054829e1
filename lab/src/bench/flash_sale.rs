//! `lab bench flash-sale`: one command that measures the ceiling and the three flash-sale loads
//! in one run, on one machine, so their ratios mean something:
//!
//! 1. `baseline`: a bare tonic server of the same RPC shape, in this process;
//! 2. `hot_item`: order-svc (its binary, as a process), one product, distinct keys;
//! 3. `sold_out`: the same with a product at stock 0;
//! 4. `approval_flood`: approval-svc → order-svc, challenges submitted, then approved by
//!    concurrent callers for fewer units than challenges.
//!
//! Every phase of a round uses the same callers and connections; each service phase gets fresh
//! processes (so their peak RSS is the phase's own) and fresh databases, dropped at the end.
//! After each service phase the product's ledger is checked (I1); a broken check fails the run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use uuid::Uuid;

use super::baseline::BareShop;
use super::calls::{
    MEASURED_KEYS, WARMUP_KEYS, approve, connect, create_orders, create_product, ledger,
    submit_challenges,
};
use super::database::Server;
use super::load::Shape;
use super::process::{Binaries, Service};
use super::report::{DatabaseInfo, Machine, PhaseFigures, Report, StockCheck, durability_mark};

/// Options of `lab bench flash-sale`.
#[derive(Debug, Parser)]
pub(crate) struct FlashSaleArgs {
    /// CreateOrder calls in each order phase (baseline, hot item, sold out).
    #[arg(long, default_value_t = 20_000)]
    calls: usize,

    /// Callers (calls in flight at once). A comma-separated list (e.g. `64,256`) runs every
    /// phase once per value, each against the baseline at the same value.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    concurrency: Vec<usize>,

    /// HTTP/2 connections the callers share (caller i uses connection i mod N), in every phase.
    #[arg(long, default_value_t = 8)]
    connections: usize,

    /// Service phases to run, in this order, after each round's baseline (which always runs:
    /// every figure is a ratio to it).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "hot-item,sold-out,approval-flood"
    )]
    phases: Vec<Phase>,

    /// Stock of the hot item. Default: 3/4 of --calls, rounded up, so the last quarter of the
    /// calls meet a sold-out item.
    #[arg(long)]
    hot_stock: Option<i64>,

    /// ApproveChallenge calls in the approval flood, one per challenge (the challenges are
    /// submitted first, unmeasured).
    #[arg(long, default_value_t = 10_000)]
    approvals: usize,

    /// Stock of the product the flood approves orders for. Default: half of --approvals.
    #[arg(long)]
    approval_stock: Option<i64>,

    /// Unmeasured calls each phase makes first, with the same callers, against a product (and,
    /// in the flood, challenges) of its own with stock for half of them: the figures are then
    /// those of running services (pools connected, statements prepared, both the selling and
    /// the sold-out path taken once) rather than of their first second. The measured calls
    /// still start all at once. 0 turns it off.
    #[arg(long, default_value_t = 2_000)]
    warmup_calls: usize,

    /// Longest any one load loop may run (the flood's submissions included); the calls left
    /// are not made, and the phase is marked cut short.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    max_duration: Duration,

    /// PostgreSQL server to measure against (URL of a maintenance database such as
    /// `postgres`): fresh databases are created on it for each phase and dropped at the end.
    /// Default: the machine's server, postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,

    /// Start a private throwaway PostgreSQL instead of using --database-url. It runs with
    /// fsync=off and synchronous_commit=off, so every line printed is marked NOT DURABLE.
    #[arg(long)]
    throwaway: bool,

    /// Directory holding the order-svc and approval-svc binaries. Default: the directory of
    /// this lab binary (`target/release/lab` finds `target/release/order-svc`).
    #[arg(long, env = "LAB_BIN_DIR")]
    bin_dir: Option<PathBuf>,

    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A service phase of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// order-svc, one product with stock for 3/4 of the calls.
    HotItem,
    /// order-svc, one product at stock 0.
    SoldOut,
    /// approval-svc -> order-svc, more approvals than units.
    ApprovalFlood,
}

/// Runs every phase for every concurrency, prints the table, writes the JSON; exit 1 when a
/// stock check failed.
pub(super) async fn run(args: FlashSaleArgs) -> anyhow::Result<ExitCode> {
    ensure!(
        args.calls > 0 && args.approvals > 0 && args.connections > 0,
        "--calls, --approvals and --connections must be > 0"
    );
    ensure!(
        !args.concurrency.is_empty() && args.concurrency.iter().all(|&c| c > 0),
        "--concurrency must list values > 0"
    );
    let binaries = Binaries::locate(args.bin_dir.as_deref())?;
    let server = Server::open(args.database_url.as_deref(), args.throwaway).await?;
    let log_dir = std::env::temp_dir().join(format!("lab-bench-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;

    let mut report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::current(),
        lifo_slot: lab_common::runtime::lifo_slot_on(),
        binaries: binaries.dir().display().to_string(),
        database: DatabaseInfo {
            server: server.display_url(),
            durable: server.durability.is_durable(),
            durability: server.durability.clone(),
        },
        calls: args.calls,
        approvals: args.approvals,
        warmup_calls: args.warmup_calls,
        connections: args.connections,
        concurrency: args.concurrency.clone(),
        phases: Vec::new(),
        ok: false,
    };
    let mark = durability_mark(&server.durability);
    let print = |lines: Vec<String>| {
        for line in lines {
            println!("{mark}{line}");
        }
    };
    print(report.header_lines());
    let bench = Bench {
        args: &args,
        server: &server,
        binaries: &binaries,
        log_dir: &log_dir,
    };
    let measured = bench.all_rounds(&mut report, &print).await;
    let closed = server.close().await;
    if let Err(error) = measured {
        eprintln!("lab: service logs kept in {}", log_dir.display());
        return Err(error);
    }
    if let Err(error) = closed {
        // The figures stand; only the clean-up failed, and the names say what to drop.
        eprintln!("lab: warning: dropping the benchmark's databases (lab_bench_*): {error:#}");
    }
    report.finish();
    print(report.footer_lines());

    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if report.ok {
        let _ = std::fs::remove_dir_all(&log_dir);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("lab: service logs kept in {}", log_dir.display());
        Ok(ExitCode::FAILURE)
    }
}

/// What every phase needs.
struct Bench<'a> {
    args: &'a FlashSaleArgs,
    server: &'a Server,
    binaries: &'a Binaries,
    log_dir: &'a Path,
}

impl Bench<'_> {
    async fn all_rounds(
        &self,
        report: &mut Report,
        print: &impl Fn(Vec<String>),
    ) -> anyhow::Result<()> {
        let hot_stock = self
            .args
            .hot_stock
            .unwrap_or_else(|| i64::try_from(self.args.calls.div_ceil(4) * 3).unwrap_or(i64::MAX));
        let approval_stock = self
            .args
            .approval_stock
            .unwrap_or_else(|| i64::try_from(self.args.approvals / 2).unwrap_or(i64::MAX));
        for &concurrency in &self.args.concurrency {
            let baseline = self.baseline(concurrency).await?;
            let baseline_calls_per_s = baseline.calls_per_s;
            let mut record = |mut figures: PhaseFigures| {
                figures.set_baseline(baseline_calls_per_s);
                print(figures.lines());
                report.phases.push(figures);
            };
            record(baseline);
            for phase in &self.args.phases {
                record(match phase {
                    Phase::HotItem => self.order_phase(concurrency, "hot_item", hot_stock).await?,
                    Phase::SoldOut => self.order_phase(concurrency, "sold_out", 0).await?,
                    Phase::ApprovalFlood => {
                        self.approval_flood(concurrency, approval_stock).await?
                    }
                });
            }
        }
        Ok(())
    }

    fn shape(&self, calls: usize, concurrency: usize) -> Shape {
        Shape {
            calls,
            concurrency,
            max_duration: self.args.max_duration,
        }
    }

    /// A product of the warm-up's own on a real order-svc, stocked for half the warm-up calls
    /// so both the selling and the sold-out path run; `None` with `--warmup-calls 0`, so
    /// nothing is created then.
    async fn warmup_product(
        &self,
        shop: &OrderServiceClient<tonic::transport::Channel>,
    ) -> anyhow::Result<Option<String>> {
        if self.args.warmup_calls == 0 {
            return Ok(None);
        }
        let stock = i64::try_from(self.args.warmup_calls / 2).unwrap_or(i64::MAX);
        Ok(Some(create_product(shop, "warm-up", stock).await?))
    }

    /// The unmeasured CreateOrder calls before an order phase (none without a warm-up
    /// product), under keys of their own so they never meet the measured ones.
    async fn warm_up_orders(
        &self,
        clients: &[OrderServiceClient<tonic::transport::Channel>],
        concurrency: usize,
        product: Option<String>,
    ) {
        if let Some(product) = product {
            create_orders(
                clients,
                self.shape(self.args.warmup_calls, concurrency),
                "warm-up",
                product,
                WARMUP_KEYS,
            )
            .await;
        }
    }

    /// The unmeasured approvals before the flood: challenges of their own, for a product of
    /// their own.
    async fn warm_up_approvals(
        &self,
        shop: &OrderServiceClient<tonic::transport::Channel>,
        clients: &[ApprovalServiceClient<tonic::transport::Channel>],
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let Some(product) = self.warmup_product(shop).await? else {
            return Ok(());
        };
        let challenges = submit_challenges(
            clients,
            self.shape(self.args.warmup_calls, concurrency),
            &product,
        )
        .await?;
        approve(
            clients,
            self.shape(challenges.len(), concurrency),
            "warm-up",
            challenges,
        )
        .await;
        Ok(())
    }

    async fn baseline(&self, concurrency: usize) -> anyhow::Result<PhaseFigures> {
        let shop = BareShop::start().await?;
        let clients = connect(&shop.url(), self.args.connections, OrderServiceClient::new).await?;
        // The bare server keeps no products: any id is one it sells.
        let warmup_product = (self.args.warmup_calls > 0).then(|| Uuid::now_v7().to_string());
        self.warm_up_orders(&clients, concurrency, warmup_product)
            .await;
        let load = create_orders(
            &clients,
            self.shape(self.args.calls, concurrency),
            "baseline",
            Uuid::now_v7().to_string(),
            MEASURED_KEYS,
        )
        .await;
        drop(clients);
        shop.stop().await;
        Ok(PhaseFigures::new(
            "baseline",
            "a bare tonic server in the lab process answering CreateOrder from memory".into(),
            concurrency,
            self.args.connections,
            &load,
        ))
    }

    /// `hot_item` or `sold_out`: order-svc on a fresh database, one product with `stock`.
    async fn order_phase(
        &self,
        concurrency: usize,
        phase: &'static str,
        stock: i64,
    ) -> anyhow::Result<PhaseFigures> {
        let database = self.server.fresh_database(phase).await?;
        let shop = Service::start(
            self.binaries,
            "order-svc",
            &format!("{phase}-c{concurrency}-order-svc"),
            self.log_dir,
            &["--database-url", &database],
        )
        .await?;
        let clients = connect(&shop.url(), self.args.connections, OrderServiceClient::new).await?;
        let warmup_product = self.warmup_product(&clients[0]).await?;
        self.warm_up_orders(&clients, concurrency, warmup_product)
            .await;
        let product = create_product(&clients[0], phase, stock).await?;
        let label = format!("{phase} x{concurrency}");
        let load = create_orders(
            &clients,
            self.shape(self.args.calls, concurrency),
            &label,
            product.clone(),
            MEASURED_KEYS,
        )
        .await;
        let ledger = ledger(&clients[0], &product).await?;
        let mut figures = PhaseFigures::new(
            phase,
            format!("order-svc, one product with stock {stock}, every call a new key"),
            concurrency,
            self.args.connections,
            &load,
        );
        figures.stock_check = Some(StockCheck::new(
            &ledger,
            figures.outcome("CREATED"),
            figures.error_count(),
        ));
        record_rss(&mut figures, &[&shop]);
        drop(clients);
        shop.stop().await;
        Ok(figures)
    }

    /// approval-svc and order-svc on fresh databases: `approvals` challenges submitted, then
    /// approved by `concurrency` callers, for `stock` units.
    async fn approval_flood(&self, concurrency: usize, stock: i64) -> anyhow::Result<PhaseFigures> {
        let order_db = self.server.fresh_database("flood_order").await?;
        let approval_db = self.server.fresh_database("flood_approval").await?;
        let shop = Service::start(
            self.binaries,
            "order-svc",
            &format!("flood-c{concurrency}-order-svc"),
            self.log_dir,
            &["--database-url", &order_db],
        )
        .await?;
        let approvals_svc = Service::start(
            self.binaries,
            "approval-svc",
            &format!("flood-c{concurrency}-approval-svc"),
            self.log_dir,
            &[
                "--database-url",
                &approval_db,
                "--order-svc-url",
                &shop.url(),
            ],
        )
        .await?;
        let shop_client = connect(&shop.url(), 1, OrderServiceClient::new).await?;
        let clients = connect(
            &approvals_svc.url(),
            self.args.connections,
            ApprovalServiceClient::new,
        )
        .await?;
        self.warm_up_approvals(&shop_client[0], &clients, concurrency)
            .await?;
        let product = create_product(&shop_client[0], "approval_flood", stock).await?;
        let challenges = submit_challenges(
            &clients,
            self.shape(self.args.approvals, concurrency),
            &product,
        )
        .await?;
        let load = approve(
            &clients,
            self.shape(challenges.len(), concurrency),
            &format!("approval_flood x{concurrency}"),
            challenges,
        )
        .await;
        let ledger = ledger(&shop_client[0], &product).await?;
        let mut figures = PhaseFigures::new(
            "approval_flood",
            format!(
                "approval-svc -> order-svc, {} challenges approved for {stock} units",
                self.args.approvals
            ),
            concurrency,
            self.args.connections,
            &load,
        );
        figures.stock_check = Some(StockCheck::new(
            &ledger,
            figures.outcome("APPROVED"),
            figures.error_count(),
        ));
        record_rss(&mut figures, &[&shop, &approvals_svc]);
        drop(clients);
        drop(shop_client);
        approvals_svc.stop().await;
        shop.stop().await;
        Ok(figures)
    }
}

fn record_rss(figures: &mut PhaseFigures, services: &[&Service]) {
    for service in services {
        if let Some(kib) = service.peak_rss_kib() {
            figures.peak_rss_kib.insert(service.name().to_owned(), kib);
        }
    }
}
