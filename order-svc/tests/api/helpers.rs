//! A real order-svc on loopback against a fresh PostgreSQL database, per test; the timings
//! every test waits with; and the machine the tests share.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use lab_proto::order::v1 as pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use order_svc::{Application, Config};
use sqlx::PgPool;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, oneshot};
use tonic::transport::Channel;
use uuid::Uuid;

/// How long a test waits for what should happen soon (a listener connecting, calls queueing,
/// the reaper's next round) before it fails.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// How often a test polls in-memory state (flags, queues) while it waits.
pub(crate) const POLL: Duration = Duration::from_millis(2);
/// How often a test polls the database while it waits.
pub(crate) const DB_POLL: Duration = Duration::from_millis(5);

/// Tests share the machine: ordinary ones run side by side (read); the few that assert a
/// latency in milliseconds run alone (write), so they never measure another test's load.
static MACHINE: RwLock<()> = RwLock::const_new(());

/// Held by an ordinary test for its whole run.
pub(crate) async fn shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

/// Held by a latency-asserting test for its whole run: no other test runs meanwhile.
pub(crate) async fn alone() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// order-svc's test configuration: a free loopback port on `database_url`.
pub(crate) fn config(database_url: impl Into<String>) -> Config {
    let mut config = Config::parse_from(["order-svc"]);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.database_url = Some(database_url.into());
    config.db_pool_size = 16;
    config
}

/// A running shop and what tests need to poke it.
pub(crate) struct TestShop {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub database_url: String,
    pub faults: resilience::FaultHandle,
    pub pool: PgPool,
    pub client: OrderServiceClient<Channel>,
    pub sold_out: order_svc::sold_out::SoldOutFlags,
    pub group_commit: order_svc::group_commit::GroupCommit,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestShop {
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub(crate) async fn spawn_with(customize: impl FnOnce(&mut Config)) -> Self {
        // Logs only on request: RUST_LOG=info cargo test … shows the service's own lines.
        if std::env::var_os("RUST_LOG").is_some() {
            lab_common::telemetry::init(lab_common::telemetry::LogFormat::Pretty);
        }
        let url = lab_common::postgres::scratch_database()
            .await
            .expect("a fresh test database");
        Self::spawn_on(url, customize).await
    }

    /// Another instance on the database at `url` (e.g. a second one beside `shop.database_url`).
    pub(crate) async fn spawn_on(url: String, customize: impl FnOnce(&mut Config)) -> Self {
        let mut config = config(url);
        customize(&mut config);
        let application = Application::build(config).await.expect("order-svc builds");
        let addr = application.local_addr();
        let metrics_addr = application.metrics_addr();
        let database_url = application.database_url().to_owned();
        let faults = application.faults();
        let pool = application.pool().clone();
        let sold_out = application.sold_out_flags();
        let group_commit = application.group_commit();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            application
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
                .expect("order-svc serves");
        });
        let client = connect(addr).await;
        Self {
            addr,
            metrics_addr,
            database_url,
            faults,
            pool,
            client,
            sold_out,
            group_commit,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// A new client on its own connection.
    pub(crate) async fn new_client(&self) -> OrderServiceClient<Channel> {
        connect(self.addr).await
    }

    pub(crate) async fn create_product(&self, stock: i64) -> pb::Product {
        self.create_limited_product(stock, 0).await
    }

    /// A product whose customers may each hold at most `max_per_customer` units (0 = no limit).
    pub(crate) async fn create_limited_product(
        &self,
        stock: i64,
        max_per_customer: i32,
    ) -> pb::Product {
        self.client
            .clone()
            .create_product(pb::CreateProductRequest {
                name: "hot item".into(),
                initial_stock: stock,
                max_per_customer,
            })
            .await
            .expect("CreateProduct")
            .into_inner()
            .product
            .expect("product")
    }

    pub(crate) async fn product(&self, product_id: &str) -> pb::Product {
        self.client
            .clone()
            .get_product(pb::GetProductRequest {
                product_id: product_id.into(),
            })
            .await
            .expect("GetProduct")
            .into_inner()
            .product
            .expect("product")
    }

    /// Row counts of every table: "nothing written" means these do not move.
    pub(crate) async fn table_counts(&self) -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM orders),
                    (SELECT count(*) FROM idempotency_keys)",
        )
        .fetch_one(&self.pool)
        .await
        .expect("counts")
    }

    /// I1: stock is never negative and initial + restocked - stock = Σ CREATED quantities.
    pub(crate) async fn assert_no_oversell(&self, product_id: &str) {
        let id = Uuid::parse_str(product_id).unwrap();
        let (stock, supplied, ordered): (i64, i64, i64) = sqlx::query_as(
            "SELECT p.stock, p.initial_stock + p.restocked,
                    COALESCE((SELECT sum(quantity) FROM orders o
                              WHERE o.product_id = p.product_id AND o.status = 'CREATED'), 0)::bigint
             FROM products p WHERE p.product_id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .expect("I1 query");
        assert!(stock >= 0, "negative stock {stock}");
        assert_eq!(supplied - stock, ordered, "I1 violated for {product_id}");
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
    }
}

impl Drop for TestShop {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) async fn connect(addr: SocketAddr) -> OrderServiceClient<Channel> {
    try_connect(addr).await.expect("connect to order-svc")
}

pub(crate) async fn try_connect(
    addr: SocketAddr,
) -> Result<OrderServiceClient<Channel>, tonic::transport::Error> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await?;
    Ok(OrderServiceClient::new(channel))
}

/// A new connection to `shop`, for the clients of its other services (OpsService, health,
/// reflection).
pub(crate) async fn client_channel(shop: &TestShop) -> Channel {
    Channel::from_shared(format!("http://{}", shop.addr))
        .unwrap()
        .connect()
        .await
        .expect("connect to order-svc")
}

/// Waits until `condition` holds, polling every [`POLL`], for at most `within`.
pub(crate) async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// A CreateOrder request carrying `key` as its idempotency key.
pub(crate) fn order_request(
    product_id: &str,
    quantity: i32,
    customer_id: Uuid,
    key: &str,
) -> tonic::Request<pb::CreateOrderRequest> {
    let mut request = tonic::Request::new(pb::CreateOrderRequest {
        product_id: product_id.into(),
        quantity,
        customer_id: customer_id.to_string(),
    });
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    request
}

/// [`order_request`] as a retry: `grpc-previous-rpc-attempts: attempts`, which API.md asks
/// clients to set on every re-send of a request, and which keeps it off the sold-out fast path
/// (only the database can tell that its order exists).
pub(crate) fn retried_order_request(
    product_id: &str,
    quantity: i32,
    customer_id: Uuid,
    key: &str,
    attempts: u32,
) -> tonic::Request<pb::CreateOrderRequest> {
    let mut request = order_request(product_id, quantity, customer_id, key);
    request.metadata_mut().insert(
        "grpc-previous-rpc-attempts",
        attempts.to_string().parse().unwrap(),
    );
    request
}

/// The `ErrorInfo.reason` of a status.
pub(crate) fn reason(status: &tonic::Status) -> String {
    lab_common::status::reason(status).unwrap_or_default()
}
