//! Both services as separate release processes, each on a fresh database, with order-svc behind
//! a [`Proxy`] when asked: the set-up every scenario starts from.
//!
//! ```text
//!   test ──gRPC──▶ approval-svc ──gRPC──▶ fault proxy ──▶ order-svc
//!                      │                                     │
//!                  PostgreSQL (db A)                  PostgreSQL (db B)
//! ```
//!
//! Databases come from `lab_common::postgres::fresh_test_database` (a new database on
//! `DATABASE_URL`'s server, or on a throwaway server when it is unset).

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
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            proxy: true,
            seed: 0,
            approval_env: Vec::new(),
            order_env: Vec::new(),
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

/// order-svc, approval-svc and (optionally) the proxy between them. Dropping it kills both
/// processes.
#[derive(Debug)]
pub struct Cluster {
    /// order-svc.
    pub order: ServiceProcess,
    /// approval-svc.
    pub approval: ServiceProcess,
    /// The fault proxy in front of order-svc, when started with one.
    pub proxy: Option<Proxy>,
}

impl Cluster {
    /// Starts order-svc, the proxy and approval-svc, each service on a fresh database.
    pub async fn start(options: ClusterOptions) -> Result<Self, ClusterError> {
        let order_db = lab_common::postgres::fresh_test_database().await?;
        let approval_db = lab_common::postgres::fresh_test_database().await?;
        let order_env: Vec<(&str, &str)> = options
            .order_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let order = ServiceProcess::start(Binary::OrderSvc, &order_db, &order_env).await?;
        let proxy = if options.proxy {
            Some(
                Proxy::start_seeded(
                    "127.0.0.1:0".parse().expect("a socket address"),
                    order.addr().to_string(),
                    options.seed,
                )
                .await?,
            )
        } else {
            None
        };
        let order_url = proxy.as_ref().map_or_else(|| order.url(), Proxy::url);
        let mut approval_env: Vec<(&str, &str)> = FAST_APPROVAL_ENV.to_vec();
        approval_env.push(("ORDER_SVC_URL", &order_url));
        approval_env.extend(
            options
                .approval_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let approval =
            ServiceProcess::start(Binary::ApprovalSvc, &approval_db, &approval_env).await?;
        Ok(Self {
            order,
            approval,
            proxy,
        })
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

/// A lazily connecting channel with a short connect timeout.
pub fn lazy_channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_owned())
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy()
}
