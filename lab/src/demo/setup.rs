//! What every demo run starts from and ends with: a fresh cluster (both services as release
//! processes on new databases, order-svc behind the fault proxy), a product, challenges, calls
//! to order-svc as a given client, an in-flight gauge, and the checker's verdict.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use lab_common::metadata::{CLIENT_ID, IDEMPOTENCY_KEY};
use lab_drill::check::{CheckOptions, Report};
use lab_drill::cluster::{Cluster, ClusterOptions, lazy_channel};
use lab_drill::load;
use lab_proto::order::v1 as order_pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tonic::transport::Channel;

/// The `client-id` of orders the demo places for itself (stock-race): not approval-svc's, so
/// the checker counts them for I1 only.
pub(super) const DEMO_CLIENT_ID: &str = "lab-demo";

/// One run (unsafe or safe) as the table, report.json and report.html show it.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    /// What happened, one line each (counts of outcomes, proxy counters, …).
    pub happened: Vec<String>,
    /// The checker's report on this run's databases.
    pub report: Report,
    /// 99th percentile latency of the approvals, when the problem is about latency.
    pub p99_ms: Option<f64>,
    /// Most approvals in flight at once, when the problem is about latency.
    pub max_in_flight: Option<u64>,
}

/// A cluster for one run. Every run gets its own databases, so the checker sees that run only.
///
/// approval-svc may retry 30 times before a dead letter: a dead letter whose order was in fact
/// created is a ghost that only the periodic consistency checker would heal, and that checker is
/// off in drills ([`lab_drill::cluster::FAST_APPROVAL_ENV`]), so the safe runs give the completer
/// room to roll every approval forward once the fault is gone.
pub(super) async fn cluster() -> anyhow::Result<Cluster> {
    Cluster::start(ClusterOptions::default().approval_env("MAX_ATTEMPTS", "30"))
        .await
        .context("starting order-svc, the proxy and approval-svc")
}

/// Creates a product with `stock` units; returns its id.
pub(super) async fn product(cluster: &Cluster, stock: i64) -> anyhow::Result<String> {
    let product = load::create_product(&mut cluster.order_client(), "demo reward", stock)
        .await
        .context("CreateProduct")?;
    Ok(product.product_id)
}

/// Submits `count` challenges for one unit of `product` (distinct users); returns their ids.
pub(super) async fn challenges(
    cluster: &Cluster,
    product: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    load::submit_challenges(&cluster.approval_client(), product, count, 1, 16, 7)
        .await
        .context("SubmitChallenge")
}

/// A pool on one service's database, for the naive code that replaces its safeguard.
pub(super) async fn pool(database_url: &str, size: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
        .context("connecting to the service's database")
}

/// A client of order-svc at `url` (the proxy's, to meet its faults).
pub(super) fn shop(url: &str) -> OrderServiceClient<Channel> {
    OrderServiceClient::new(lazy_channel(url))
}

/// CreateOrder as `client_id` with `key`; `deadline` as `grpc-timeout` when given (none: wait
/// as long as it takes, as a client without a deadline does).
pub(super) async fn create_order(
    mut shop: OrderServiceClient<Channel>,
    client_id: &str,
    key: &str,
    order: order_pb::CreateOrderRequest,
    deadline: Option<Duration>,
) -> Result<order_pb::Order, tonic::Status> {
    let mut request = tonic::Request::new(order);
    let metadata = request.metadata_mut();
    metadata.insert(
        CLIENT_ID,
        client_id
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("client id"))?,
    );
    metadata.insert(
        IDEMPOTENCY_KEY,
        key.parse()
            .map_err(|_| tonic::Status::invalid_argument("key"))?,
    );
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    shop.create_order(request)
        .await?
        .into_inner()
        .order
        .ok_or_else(|| tonic::Status::internal("CreateOrder answered without an order"))
}

/// A fresh idempotency key: what a client without a stable key sends on every call.
pub(super) fn fresh_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Calls in flight now, and the most at once.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    now: AtomicU64,
    max: AtomicU64,
}

impl InFlight {
    /// Counts one call until the guard drops.
    pub(super) fn enter(self: &Arc<Self>) -> InFlightGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// The most calls in flight at once.
    pub(super) fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }
}

/// One call in flight (see [`InFlight::enter`]).
#[derive(Debug)]
pub(super) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The 99th percentile of `latencies`, in milliseconds (0 when empty).
pub(super) fn p99_ms(latencies: &[Duration]) -> f64 {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => 0.0,
        n => sorted[((n - 1) as f64 * 0.99).round() as usize].as_secs_f64() * 1000.0,
    }
}

/// The checker's verdict (the one `lab check` uses): once when `settle` is zero, else until the
/// system settles clean or `settle` passes. `accepted` are approvals answered OK (for I6).
pub(super) async fn verdict(
    cluster: &Cluster,
    settle: Duration,
    accepted: Vec<String>,
) -> anyhow::Result<Report> {
    let options = CheckOptions {
        accepted,
        ..CheckOptions::default()
    };
    let report = if settle.is_zero() {
        cluster.check(&options).await
    } else {
        cluster.check_settled(&options, settle).await
    };
    report.context("checking invariants I1-I6")
}

/// `label=count` pairs of a tally, for a "what happened" line.
pub(super) fn tally_line(prefix: &str, outcomes: &load::Outcomes) -> String {
    format!("{prefix}: {outcomes}")
}

/// The proxy's counters in one phrase.
pub(super) fn proxy_line(cluster: &Cluster) -> String {
    let stats = cluster.proxy().handle().stats();
    format!(
        "proxy: {} requests, {} replies lost, {} answered UNAVAILABLE",
        stats.requests, stats.responses_lost, stats.unavailable_answers
    )
}
