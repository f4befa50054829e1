//! Both services as real tonic servers on loopback, each on its own fresh database, plus the
//! invariant checks of DESIGN.md (I1–I6) made through the services' public RPCs.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use approval_svc::{Application, Config, FailurePoints};
use clap::Parser;
use lab_proto::approval::v1 as apb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1 as opb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use resilience::{BreakerHandle, FaultHandle};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use uuid::Uuid;

/// Upper bound of every test.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a test waits for the completer (every 100 ms in [`ApprovalSvc::config`]) or the
/// checker to finish what it started.
pub(crate) const SETTLE: Duration = Duration::from_secs(20);
/// [`SETTLE`] after an outage, or for many challenges at once.
pub(crate) const SETTLE_LONG: Duration = Duration::from_secs(60);
/// How often [`eventually`] polls.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// Tests share the machine: ordinary ones run side by side (read), heavy or timing-sensitive
/// ones run alone (write), so a < 50 ms assertion never measures another test's load.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Runs `test` under [`TEST_TIMEOUT`], alongside other ordinary tests; logs when `TEST_LOG` is
/// set.
pub(crate) async fn bounded<F: Future<Output = ()>>(test: F) {
    let _shared = MACHINE.read().await;
    run_bounded(test).await;
}

/// Runs `test` under [`TEST_TIMEOUT`] with no other test running.
pub(crate) async fn bounded_alone<F: Future<Output = ()>>(test: F) {
    let _exclusive = MACHINE.write().await;
    run_bounded(test).await;
}

async fn run_bounded<F: Future<Output = ()>>(test: F) {
    if std::env::var_os("TEST_LOG").is_some() {
        lab_common::telemetry::init(lab_common::telemetry::LogFormat::Pretty);
    }
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test took too long");
}

/// A fresh, empty database for one service of one test.
pub(crate) async fn fresh_database() -> String {
    lab_common::postgres::scratch_database()
        .await
        .expect("a fresh test database")
}

/// order-svc's test configuration: a free loopback port on `database_url`.
pub(crate) fn order_config(database_url: impl Into<String>) -> order_svc::Config {
    let mut config = order_svc::Config::parse_from(["order-svc"]);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.database_url = Some(database_url.into());
    config.db_pool_size = 16;
    config
}

/// A loopback address nothing listens on (bound, then released).
pub(crate) fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A running order-svc.
pub(crate) struct OrderSvc {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its fault-injection handle (faults off unless set).
    pub faults: FaultHandle,
    /// Its database, for tests that break things behind its back.
    pub database_url: String,
    // How to start it again.
    config: Option<order_svc::Config>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl OrderSvc {
    /// Starts order-svc on a fresh database and a free port.
    pub(crate) async fn start() -> Self {
        Self::start_with(order_config(fresh_database().await)).await
    }

    /// Starts order-svc with `config`.
    pub(crate) async fn start_with(config: order_svc::Config) -> Self {
        let app = order_svc::Application::build(config.clone())
            .await
            .expect("order-svc starts");
        let addr = app.local_addr();
        let faults = app.faults();
        let database_url = app.database_url().to_owned();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            app.run_until(async move {
                let _ = stopped.await;
            })
            .await
            .expect("order-svc serves");
        });
        Self {
            addr,
            faults,
            database_url,
            config: Some(config),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts order-svc on a fresh database; the handle sets server-side faults while it runs
    /// (none at first).
    pub(crate) async fn start_with_faults() -> (Self, FaultHandle) {
        let service = Self::start().await;
        let faults = service.faults.clone();
        (service, faults)
    }

    /// Its URL, for clients and approval-svc's configuration.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client on a connection of its own.
    pub(crate) async fn client(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::connect(self.url()).await.unwrap()
    }

    /// Stops it (graceful), keeping what is needed to start it again.
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Starts it again on the same port and database.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        let mut config = self.config.clone().expect("a restartable order-svc");
        config.listen = self.addr;
        *self = Self::start_with(config).await;
    }

    /// Creates a product.
    pub(crate) async fn product(&self, stock: i64) -> opb::Product {
        self.client()
            .await
            .create_product(opb::CreateProductRequest {
                name: "reward".into(),
                initial_stock: stock,
                max_per_customer: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap()
    }

    /// One product's current state.
    pub(crate) async fn get_product(&self, product_id: &str) -> opb::Product {
        self.client()
            .await
            .get_product(opb::GetProductRequest {
                product_id: product_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap()
    }

    /// Every order of a product, all pages.
    pub(crate) async fn orders(&self, product_id: &str) -> Vec<opb::Order> {
        let mut client = self.client().await;
        let mut orders = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_orders(opb::ListOrdersRequest {
                    product_id: product_id.into(),
                    page_size: 500,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            orders.extend(page.orders);
            if page.next_page_token.is_empty() {
                return orders;
            }
            page_token = page.next_page_token;
        }
    }
}

impl Drop for OrderSvc {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A running approval-svc.
pub(crate) struct ApprovalSvc {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its test failure points.
    pub failure_points: FailurePoints,
    /// Its `/metrics` endpoint, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// The circuit breaker of its order-svc client.
    pub breaker: BreakerHandle,
    /// Its own database pool (the service's role).
    pub pool: PgPool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ApprovalSvc {
    /// The test configuration on a database, calling `order_svc_url`: a free loopback port, a
    /// completer that runs every 100 ms with short leases and retry delays.
    pub(crate) fn config(database_url: &str, order_svc_url: &str) -> Config {
        let mut config = Config::parse_from(["approval-svc"]);
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.database_url = Some(database_url.into());
        config.order_svc_url = vec![order_svc_url.into()];
        config.db_pool_size = 16;
        config.lease = Duration::from_secs(3);
        config.order_call_timeout = Duration::from_secs(2);
        config.completer_period = Duration::from_millis(100);
        config.retry_backoff_base = Duration::from_millis(100);
        config.retry_backoff_cap = Duration::from_millis(500);
        config.breaker_open_base = Duration::from_millis(300);
        config.breaker_open_cap = Duration::from_secs(1);
        config
    }

    /// [`Self::config`] for an instance whose completer never runs after start-up and whose
    /// checker runs only on demand, so the test alone decides every attempt; one attempt per
    /// order-svc call.
    pub(crate) fn driven_by_hand(database_url: &str, order: &OrderSvc) -> Config {
        let mut config = Self::config(database_url, &order.url());
        config.completer_period = Duration::from_secs(3600);
        config.check_interval = Duration::ZERO;
        config.order_call_attempts = 1;
        config
    }

    /// Starts approval-svc with `config`.
    pub(crate) async fn start(config: Config) -> Self {
        let app = Application::build(config)
            .await
            .expect("approval-svc starts");
        let addr = app.local_addr();
        let failure_points = app.failure_points();
        let metrics_addr = app.metrics_addr();
        let breaker = app.breaker();
        let pool = app.pool().clone();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            app.run_until(async move {
                let _ = stopped.await;
            })
            .await
            .expect("approval-svc serves");
        });
        Self {
            addr,
            failure_points,
            metrics_addr,
            breaker,
            pool,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client on a connection of its own.
    pub(crate) async fn client(&self) -> ApprovalServiceClient<Channel> {
        ApprovalServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Stops it (graceful: in-flight calls and the completer's round finish).
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Submits a challenge for `quantity` of `product_id`.
    pub(crate) async fn submit(&self, product_id: &str, quantity: i32) -> apb::Challenge {
        self.client()
            .await
            .submit_challenge(apb::SubmitChallengeRequest {
                user_id: Uuid::now_v7().to_string(),
                product_id: product_id.into(),
                quantity,
                title: "ran a marathon".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap()
    }

    /// One challenge.
    pub(crate) async fn get(&self, challenge_id: &str) -> apb::Challenge {
        self.client()
            .await
            .get_challenge(apb::GetChallengeRequest {
                challenge_id: challenge_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap()
    }

    /// Approves a challenge; the response's challenge.
    pub(crate) async fn approve(&self, challenge_id: &str) -> apb::Challenge {
        self.client()
            .await
            .approve_challenge(apb::ApproveChallengeRequest {
                challenge_id: challenge_id.into(),
                approver: "admin".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap()
    }

    /// RetryApproval of a challenge; the response's challenge.
    pub(crate) async fn retry(&self, challenge_id: &str) -> apb::Challenge {
        self.client()
            .await
            .retry_approval(apb::RetryApprovalRequest {
                challenge_id: challenge_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap()
    }

    /// RevokeApproval of a challenge; the response's challenge.
    pub(crate) async fn revoke(&self, challenge_id: &str) -> apb::Challenge {
        self.client()
            .await
            .revoke_approval(apb::RevokeApprovalRequest {
                challenge_id: challenge_id.into(),
                reason: "cheated".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .challenge
            .unwrap()
    }

    /// Every challenge, all pages.
    pub(crate) async fn all(&self) -> Vec<apb::Challenge> {
        let mut client = self.client().await;
        let mut challenges = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_challenges(apb::ListChallengesRequest {
                    page_size: 500,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            challenges.extend(page.challenges);
            if page.next_page_token.is_empty() {
                return challenges;
            }
            page_token = page.next_page_token;
        }
    }
}

impl Drop for ApprovalSvc {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A challenge's status as the enum.
pub(crate) fn status(challenge: &apb::Challenge) -> apb::ChallengeStatus {
    apb::ChallengeStatus::try_from(challenge.status).unwrap()
}

/// A challenge's failure reason as the enum.
pub(crate) fn failure(challenge: &apb::Challenge) -> apb::ApprovalFailureReason {
    apb::ApprovalFailureReason::try_from(challenge.failure_reason).unwrap()
}

/// Polls `condition` every [`POLL`] until it holds; panics after `within`.
pub(crate) async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until no challenge is in flight (APPROVING, REVOKING) or due for an automatic retry.
pub(crate) async fn settled(approval: &ApprovalSvc, within: Duration) -> Vec<apb::Challenge> {
    eventually(within, "every challenge to settle", || async {
        approval.all().await.iter().all(|challenge| {
            !matches!(
                status(challenge),
                apb::ChallengeStatus::Approving | apb::ChallengeStatus::Revoking
            ) && challenge.next_attempt_at.is_none()
        })
    })
    .await;
    approval.all().await
}

/// Checks I1–I6 over the given products and every challenge; panics listing each violation.
pub(crate) async fn assert_invariants(
    order: &OrderSvc,
    approval: &ApprovalSvc,
    product_ids: &[String],
) {
    let challenges = approval.all().await;
    let mut orders = Vec::new();
    let mut violations = Vec::new();
    for product_id in product_ids {
        let product = order.get_product(product_id).await;
        let product_orders = order.orders(product_id).await;
        let held: i64 = product_orders
            .iter()
            .filter(|o| o.status == i32::from(opb::OrderStatus::Created))
            .map(|o| i64::from(o.quantity))
            .sum();
        // I1: no oversell, and stock accounts for every created order.
        if product.stock < 0 || product.initial_stock + product.restocked - product.stock != held {
            violations.push(format!(
                "I1 product {product_id}: stock {} initial {} restocked {} held {held}",
                product.stock, product.initial_stock, product.restocked
            ));
        }
        orders.extend(product_orders);
    }
    // I2: at most one order per key.
    let mut by_key: HashMap<&str, Vec<&opb::Order>> = HashMap::new();
    for order in &orders {
        by_key
            .entry(&order.idempotency_key)
            .or_default()
            .push(order);
    }
    for (key, orders) in &by_key {
        if orders.len() > 1 {
            violations.push(format!("I2 key {key}: {} orders", orders.len()));
        }
    }
    let keys_of_approved: HashSet<&str> = challenges
        .iter()
        .filter(|c| status(c) == apb::ChallengeStatus::Approved)
        .map(|c| c.idempotency_key.as_str())
        .collect();
    for challenge in &challenges {
        let id = &challenge.challenge_id;
        match status(challenge) {
            // I3: every APPROVED challenge has exactly its one CREATED order.
            apb::ChallengeStatus::Approved => {
                match by_key.get(challenge.idempotency_key.as_str()) {
                    Some(found) if found.len() == 1 => {
                        let o = found[0];
                        if o.order_id != challenge.order_id
                            || o.status != i32::from(opb::OrderStatus::Created)
                            || o.product_id != challenge.product_id
                            || o.quantity != challenge.quantity
                        {
                            violations
                                .push(format!("I3 challenge {id}: order {o:?} does not match"));
                        }
                    }
                    _ => violations.push(format!("I3 challenge {id}: no single order for its key")),
                }
            }
            // I5: nothing stuck in flight once settled.
            apb::ChallengeStatus::Approving | apb::ChallengeStatus::Revoking => {
                violations.push(format!("I5 challenge {id}: still {:?}", status(challenge)));
            }
            // I6: a failure always says why.
            apb::ChallengeStatus::ApproveFailed
                if failure(challenge) == apb::ApprovalFailureReason::Unspecified =>
            {
                violations.push(format!("I6 challenge {id}: failed without a reason"));
            }
            _ => {}
        }
    }
    // I4: no ghost order: every CREATED order belongs to an APPROVED challenge.
    for order in &orders {
        if order.status == i32::from(opb::OrderStatus::Created)
            && !keys_of_approved.contains(order.idempotency_key.as_str())
        {
            violations.push(format!(
                "I4 order {}: no APPROVED challenge",
                order.order_id
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "invariants violated: {violations:#?}"
    );
}

#[test]
fn the_test_configuration_is_valid() {
    ApprovalSvc::config("postgres://x/y", "http://127.0.0.1:1")
        .validate()
        .unwrap();
}
