//! Both services as separate release processes, each on a fresh database, with order-svc behind
//! a [`Proxy`] when asked: the set-up every scenario starts from.
//!
//! ```text
//!   test ──gRPC──▶ approval-svc ──gRPC──▶ fault proxy ──▶ order-svc
//!                      │                                     │
//!                  PostgreSQL (db A)                  PostgreSQL (db B)
//! ```
//!
//! Databases come from `lab_common::postgres::scratch_database` (a new database on
//! `DATABASE_URL`'s server, or on a throwaway server when it is unset).
//!
//! Several instances of each service ([`ClusterOptions::order_instances`],
//! [`ClusterOptions::approval_instances`]) share their service's one database, as replicas
//! behind a balancer do; every approval-svc gets the comma-separated list of every order-svc
//! instance as `ORDER_SVC_URL`, so it balances over them itself.
//!
//! ```text
//!   test ──▶ approval-svc #0 ─┬─▶ order-svc #0 ─┐
//!       └──▶ approval-svc #1 ─┼─▶ order-svc #1 ─┼─ PostgreSQL (db B)
//!              (db A)         └─▶ order-svc #2 ─┘
//! ```

use std::time::Duration;

use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::check::{self, CheckError, CheckOptions, Report};
use crate::metrics::ResilienceCounts;
use crate::process::{Binary, ProcessError, ServiceProcess};
use crate::proxy::Proxy;

/// approval-svc settings that make its timers test-sized: a 3 s lease, a completer every
/// 100 ms, automatic retries after 100 ms doubling to 1 s (8 attempts before a dead letter), a
/// 2 s order-call budget with 1 s attempts, a breaker open for 300 ms growing to 1 s, and
/// `/metrics` on a free port.
///
/// Consistency checks run on demand only (`CHECK_INTERVAL=0s`): the periodic checker heals
/// what the completer leaves, so with it on a scenario could not tell a repair by the
/// completer from one by the checker. (The [`check`] module reads, it never heals.)
pub const FAST_APPROVAL_ENV: &[(&str, &str)] = &[
    ("CHECK_INTERVAL", "0s"),
    ("APPROVAL_LEASE", "3s"),
    ("COMPLETER_PERIOD", "100ms"),
    ("RETRY_BACKOFF_BASE", "100ms"),
    ("RETRY_BACKOFF_CAP", "1s"),
    ("MAX_ATTEMPTS", "8"),
    ("ORDER_CALL_TIMEOUT", "2s"),
    ("ORDER_ATTEMPT_TIMEOUT", "1s"),
    ("BREAKER_OPEN_BASE", "300ms"),
    ("BREAKER_OPEN_CAP", "1s"),
    ("DB_POOL_SIZE", "16"),
    ("METRICS_ADDR", "127.0.0.1:0"),
];

/// How to start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Put a fault proxy between approval-svc and order-svc. Default true.
    pub proxy: bool,
    /// Seed of the proxy's random draws. Default 0.
    pub seed: u64,
    /// approval-svc environment on top of [`FAST_APPROVAL_ENV`] (later entries win).
    pub approval_env: Vec<(String, String)>,
    /// order-svc environment.
    pub order_env: Vec<(String, String)>,
    /// order-svc instances on the one shop database. Default 1.
    pub order_instances: usize,
    /// approval-svc instances on the one approvals database. Default 1.
    pub approval_instances: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            proxy: true,
            seed: 0,
            approval_env: Vec::new(),
            order_env: Vec::new(),
            order_instances: 1,
            approval_instances: 1,
        }
    }
}

impl ClusterOptions {
    /// Adds an approval-svc environment variable (overriding [`FAST_APPROVAL_ENV`]).
    pub fn approval_env(mut self, key: &str, value: &str) -> Self {
        self.approval_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds an order-svc environment variable.
    pub fn order_env(mut self, key: &str, value: &str) -> Self {
        self.order_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets the proxy's seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Without a proxy: approval-svc talks to order-svc directly.
    pub fn without_proxy(mut self) -> Self {
        self.proxy = false;
        self
    }

    /// Runs `n` (at least 1) order-svc instances on one database. With more than one there is
    /// no proxy: the proxy stands for one faulty link, while these scenarios are about the
    /// client balancing over real endpoints, each of which can be killed on its own.
    pub fn order_instances(mut self, n: usize) -> Self {
        self.order_instances = n.max(1);
        if self.order_instances > 1 {
            self.proxy = false;
        }
        self
    }

    /// Runs `n` (at least 1) approval-svc instances on one database.
    pub fn approval_instances(mut self, n: usize) -> Self {
        self.approval_instances = n.max(1);
        self
    }
}

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No database.
    #[error("database: {0}")]
    Database(#[from] lab_common::postgres::PostgresError),
    /// A service did not start.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The proxy could not listen.
    #[error("proxy: {0}")]
    Proxy(#[from] std::io::Error),
}

/// order-svc, approval-svc and (optionally) the proxy between them. Dropping it kills every
/// process.
#[derive(Debug)]
pub struct Cluster {
    /// order-svc (instance 0; the checker and [`Cluster::order_client`] use it).
    pub order: ServiceProcess,
    /// approval-svc (instance 0; the checker and [`Cluster::approval_client`] use it).
    pub approval: ServiceProcess,
    /// order-svc instances 1.. (empty unless [`ClusterOptions::order_instances`] asked for more).
    pub more_orders: Vec<ServiceProcess>,
    /// approval-svc instances 1.. (empty unless [`ClusterOptions::approval_instances`] asked
    /// for more).
    pub more_approvals: Vec<ServiceProcess>,
    /// The fault proxy in front of order-svc, when started with one.
    pub proxy: Option<Proxy>,
}

impl Cluster {
    /// Starts order-svc, the proxy and approval-svc, each service on a fresh database (and as
    /// many instances of each as asked, one after the other so that migrations never race).
    pub async fn start(options: ClusterOptions) -> Result<Self, ClusterError> {
        let order_db = lab_common::postgres::scratch_database().await?;
        let approval_db = lab_common::postgres::scratch_database().await?;
        let order_env: Vec<(&str, &str)> = options
            .order_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut orders = Vec::with_capacity(options.order_instances.max(1));
        for _ in 0..options.order_instances.max(1) {
            orders.push(ServiceProcess::start(Binary::OrderSvc, &order_db, &order_env).await?);
        }
        let proxy = if options.proxy && orders.len() == 1 {
            Some(
                Proxy::start_seeded(
                    "127.0.0.1:0".parse().expect("a socket address"),
                    orders[0].addr().to_string(),
                    options.seed,
                )
                .await?,
            )
        } else {
            None
        };
        let order_url = proxy.as_ref().map_or_else(|| urls(&orders), Proxy::url);
        let mut approval_env: Vec<(&str, &str)> = FAST_APPROVAL_ENV.to_vec();
        approval_env.push(("ORDER_SVC_URL", &order_url));
        approval_env.extend(
            options
                .approval_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let mut approvals = Vec::with_capacity(options.approval_instances.max(1));
        for _ in 0..options.approval_instances.max(1) {
            approvals.push(
                ServiceProcess::start(Binary::ApprovalSvc, &approval_db, &approval_env).await?,
            );
        }
        let (order, more_orders) = first_and_rest(orders);
        let (approval, more_approvals) = first_and_rest(approvals);
        Ok(Self {
            order,
            approval,
            more_orders,
            more_approvals,
            proxy,
        })
    }

    /// How many order-svc instances the cluster has.
    pub fn order_instances(&self) -> usize {
        1 + self.more_orders.len()
    }

    /// order-svc instance `n` (0 is [`Cluster::order`]); panics past the last.
    pub fn order_instance(&mut self, n: usize) -> &mut ServiceProcess {
        match n {
            0 => &mut self.order,
            n => &mut self.more_orders[n - 1],
        }
    }

    /// approval-svc instance `n` (0 is [`Cluster::approval`]); panics past the last.
    pub fn approval_instance(&mut self, n: usize) -> &mut ServiceProcess {
        match n {
            0 => &mut self.approval,
            n => &mut self.more_approvals[n - 1],
        }
    }

    /// Every approval-svc instance, 0 first.
    pub fn approvals(&self) -> impl Iterator<Item = &ServiceProcess> {
        std::iter::once(&self.approval).chain(&self.more_approvals)
    }

    /// Every order-svc instance's URL, comma-separated (what approval-svc was given, unless a
    /// proxy stands in front of the one instance).
    pub fn order_urls(&self) -> String {
        urls(std::iter::once(&self.order).chain(&self.more_orders))
    }

    /// A client of approval-svc instance `n` on a new (lazy) connection.
    pub fn approval_client_of(&self, n: usize) -> ApprovalServiceClient<Channel> {
        let instance = match n {
            0 => &self.approval,
            n => &self.more_approvals[n - 1],
        };
        ApprovalServiceClient::new(lazy_channel(&instance.url()))
    }

    /// The proxy; panics when the cluster was started without one.
    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("the cluster was started with a proxy")
    }

    /// A client of approval-svc on a new (lazy) connection.
    pub fn approval_client(&self) -> ApprovalServiceClient<Channel> {
        ApprovalServiceClient::new(lazy_channel(&self.approval.url()))
    }

    /// A client of order-svc (directly, not through the proxy) on a new (lazy) connection.
    pub fn order_client(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(lazy_channel(&self.order.url()))
    }

    /// approval-svc's resilience counters since its last start (zero when unreadable).
    pub async fn approval_counts(&self) -> ResilienceCounts {
        match self.approval.metrics().await {
            Ok(metrics) => metrics.resilience(),
            Err(error) => {
                tracing::warn!(%error, "approval-svc metrics unreadable");
                ResilienceCounts::default()
            }
        }
    }

    /// How many violations approval-svc's own consistency checker healed since its last start
    /// (`consistency_healed_total`); `None` when its metrics are unreadable.
    pub async fn checker_healed(&self) -> Option<u64> {
        match self.approval.metrics().await {
            Ok(metrics) => Some(metrics.sum("consistency_healed_total") as u64),
            Err(error) => {
                tracing::warn!(%error, "approval-svc metrics unreadable");
                None
            }
        }
    }

    /// Checks I1–I6 once (order-svc read directly).
    pub async fn check(&self, options: &CheckOptions) -> Result<Report, CheckError> {
        check::check(&self.approval.url(), &self.order.url(), options).await
    }

    /// Checks I1–I6 until settled and clean or `timeout` passes.
    pub async fn check_settled(
        &self,
        options: &CheckOptions,
        timeout: Duration,
    ) -> Result<Report, CheckError> {
        check::check_settled(&self.approval.url(), &self.order.url(), options, timeout).await
    }
}

/// Comma-separated URLs of `processes`.
fn urls<'a>(processes: impl IntoIterator<Item = &'a ServiceProcess>) -> String {
    processes
        .into_iter()
        .map(ServiceProcess::url)
        .collect::<Vec<_>>()
        .join(",")
}

/// Splits a non-empty list into its first element and the rest.
fn first_and_rest(mut all: Vec<ServiceProcess>) -> (ServiceProcess, Vec<ServiceProcess>) {
    let rest = all.split_off(1);
    let first = all.pop().expect("at least one instance");
    (first, rest)
}

/// A lazily connecting channel with a short connect timeout.
pub fn lazy_channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_owned())
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy()
}
