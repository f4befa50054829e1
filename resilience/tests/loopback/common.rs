//! A scripted `OrderService` on loopback: answers with chosen codes and delays, counts calls and
//! records the metadata each call carried. A test server, not a shop.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_proto::order::v1::order_service_client::OrderServiceClient;
use lab_proto::order::v1::order_service_server::{OrderService, OrderServiceServer};
use lab_proto::order::v1::*;
use resilience::errors::with_reason;
use resilience::{FaultHandle, FaultLayer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status};

/// How the server answers one call.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub delay: Duration,
    pub code: Code,
    pub pushback: Option<&'static str>,
}

impl Step {
    pub(crate) fn ok() -> Self {
        Self {
            delay: Duration::ZERO,
            code: Code::Ok,
            pushback: None,
        }
    }

    pub(crate) fn fail(code: Code) -> Self {
        Self { code, ..Self::ok() }
    }

    pub(crate) fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub(crate) fn pushback(mut self, value: &'static str) -> Self {
        self.pushback = Some(value);
        self
    }
}

/// Metadata one call carried.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub rpc: &'static str,
    pub key: Option<String>,
    pub previous_attempts: Option<String>,
    pub grpc_timeout: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Script {
    steps: Mutex<VecDeque<Step>>,
    default: Mutex<Step>,
    seen: Mutex<Vec<Seen>>,
}

impl Script {
    /// A script that answers OK to everything until told otherwise.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            steps: Mutex::new(VecDeque::new()),
            default: Mutex::new(Step::ok()),
            seen: Mutex::new(Vec::new()),
        })
    }

    /// The answers to the next calls, in order; after them, the default.
    pub(crate) fn push(&self, steps: impl IntoIterator<Item = Step>) {
        self.steps.lock().unwrap().extend(steps);
    }

    pub(crate) fn set_default(&self, step: Step) {
        *self.default.lock().unwrap() = step;
    }

    pub(crate) fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn answer<T>(&self, rpc: &'static str, req: &Request<T>) -> Result<(), Status> {
        let text = |name: &str| {
            req.metadata()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        self.seen.lock().unwrap().push(Seen {
            rpc,
            key: text("idempotency-key"),
            previous_attempts: text("grpc-previous-rpc-attempts"),
            grpc_timeout: text("grpc-timeout"),
        });
        let step = self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        tokio::time::sleep(step.delay).await;
        if step.code == Code::Ok {
            return Ok(());
        }
        let mut status = with_reason(step.code, "SCRIPTED", "scripted", []);
        if let Some(value) = step.pushback {
            status
                .metadata_mut()
                .insert("grpc-retry-pushback-ms", value.parse().unwrap());
        }
        Err(status)
    }
}

struct Scripted(Arc<Script>);

/// The scripted order service, for servers built elsewhere (see `fleet`).
pub(crate) fn order_service(script: Arc<Script>) -> OrderServiceServer<impl OrderService> {
    OrderServiceServer::new(Scripted(script))
}

fn order(key: Option<String>) -> Option<Order> {
    Some(Order {
        order_id: "0190b2a4-0000-7000-8000-000000000000".into(),
        idempotency_key: key.unwrap_or_default(),
        quantity: 1,
        ..Order::default()
    })
}

#[tonic::async_trait]
impl OrderService for Scripted {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        self.0.answer("CreateOrder", &request).await?;
        let key = request
            .metadata()
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap().to_owned());
        Ok(Response::new(CreateOrderResponse { order: order(key) }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        self.0.answer("GetOrder", &request).await?;
        Ok(Response::new(GetOrderResponse { order: order(None) }))
    }

    async fn create_product(
        &self,
        _: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn get_product(
        &self,
        _: Request<GetProductRequest>,
    ) -> Result<Response<GetProductResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn list_products(
        &self,
        _: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn restock(
        &self,
        _: Request<RestockRequest>,
    ) -> Result<Response<RestockResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn lookup_order(
        &self,
        _: Request<LookupOrderRequest>,
    ) -> Result<Response<LookupOrderResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn list_orders(
        &self,
        _: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn cancel_order(
        &self,
        _: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }

    async fn get_product_ledger(
        &self,
        _: Request<lab_proto::order::v1::GetProductLedgerRequest>,
    ) -> Result<Response<lab_proto::order::v1::GetProductLedgerResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }
}

/// A running test server; stops when dropped.
pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub script: Arc<Script>,
    pub faults: FaultHandle,
    _stop: oneshot::Sender<()>,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Script::new();
        let faults = FaultLayer::disabled();
        let handle = faults.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = OrderServiceServer::new(Scripted(script.clone()));
        tokio::spawn(
            Server::builder()
                .layer(faults)
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Self {
            addr,
            script,
            faults: handle,
            _stop: stop,
        }
    }

    pub(crate) fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr)).unwrap()
    }

    pub(crate) fn channel(&self) -> Channel {
        self.endpoint().connect_lazy()
    }

    /// A plain generated client over the bare channel (no resilience).
    pub(crate) fn bare_client(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel())
    }
}

pub(crate) fn create_order(key: Option<&str>) -> Request<CreateOrderRequest> {
    let mut request = Request::new(CreateOrderRequest {
        product_id: "0190b2a4-0000-7000-8000-000000000001".into(),
        quantity: 1,
        customer_id: "0190b2a4-0000-7000-8000-000000000002".into(),
    });
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
    }
    request
}

pub(crate) fn get_order() -> Request<GetOrderRequest> {
    Request::new(GetOrderRequest {
        order_id: "0190b2a4-0000-7000-8000-000000000000".into(),
    })
}

/// A fast config for loopback tests: tiny backoff, roomy budget.
pub(crate) fn config() -> resilience::ResilienceConfig {
    let mut config = resilience::ResilienceConfig::default();
    config.retry.backoff_base = Duration::from_millis(1);
    config.retry.backoff_cap = Duration::from_millis(5);
    config
}
