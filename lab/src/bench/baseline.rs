//! The ceiling every figure is divided by: a bare tonic server, in this process, answering
//! `lab.order.v1.OrderService/CreateOrder` from memory. Same messages and metadata as order-svc
//! (the `idempotency-key` header, the same validation of the request, an `Order` back, the
//! replay marker for a repeated key); no database, no middleware. What remains is the cost of
//! gRPC, HTTP/2 and loopback TCP on this machine, shared with the load driver as the real
//! services share it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use lab_common::metadata::{self, IDEMPOTENT_REPLAYED};
use lab_common::validate::Violations;
use lab_proto::order::v1 as pb;
use lab_proto::order::v1::order_service_server::{OrderService, OrderServiceServer};
use tokio::sync::oneshot;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

/// The bare server, serving until [`BareShop::stop`].
pub(super) struct BareShop {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl BareShop {
    /// Binds a free loopback port (with `TCP_NODELAY`, as the services) and serves.
    pub(super) async fn start() -> anyhow::Result<Self> {
        let listener = lab_common::grpc::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr;
        let (stop, stopped) = oneshot::channel();
        let server = tonic::transport::Server::builder()
            .add_service(OrderServiceServer::new(MemoryShop::default()))
            .serve_with_incoming_shutdown(listener.incoming, async {
                let _ = stopped.await;
            });
        Ok(Self {
            addr,
            stop,
            task: tokio::spawn(server),
        })
    }

    /// `http://<addr>`.
    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the server to finish.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Orders by idempotency key, in memory.
#[derive(Default)]
struct MemoryShop {
    orders: Mutex<HashMap<(String, String), pb::Order>>,
}

#[tonic::async_trait]
impl OrderService for MemoryShop {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let mut violations = Violations::default();
        let key = metadata::idempotency_key(request.metadata(), &mut violations);
        let client_id = metadata::client_id(request.metadata(), &mut violations);
        let body = request.get_ref();
        violations.uuid("product_id", &body.product_id);
        violations.uuid("customer_id", &body.customer_id);
        violations.range("quantity", body.quantity, 1, 1_000_000);
        violations.into_result()?;
        let key = key.unwrap_or_default();
        let now = prost_types::Timestamp::from(SystemTime::now());
        let (order, replayed) = {
            let mut orders = self
                .orders
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut replayed = true;
            let order = orders
                .entry((client_id.clone(), key.clone()))
                .or_insert_with(|| {
                    replayed = false;
                    pb::Order {
                        order_id: uuid::Uuid::now_v7().to_string(),
                        product_id: body.product_id.clone(),
                        quantity: body.quantity,
                        customer_id: body.customer_id.clone(),
                        status: pb::OrderStatus::Created as i32,
                        idempotency_key: key,
                        created_at: Some(now),
                        updated_at: Some(now),
                        client_id,
                        ..Default::default()
                    }
                })
                .clone();
            (order, replayed)
        };
        let mut response = Response::new(pb::CreateOrderResponse { order: Some(order) });
        if replayed {
            response
                .metadata_mut()
                .insert(IDEMPOTENT_REPLAYED, MetadataValue::from_static("true"));
        }
        Ok(response)
    }

    async fn create_product(
        &self,
        _: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        Err(unimplemented())
    }

    async fn get_product(
        &self,
        _: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        Err(unimplemented())
    }

    async fn list_products(
        &self,
        _: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        Err(unimplemented())
    }

    async fn restock(
        &self,
        _: Request<pb::RestockRequest>,
    ) -> Result<Response<pb::RestockResponse>, Status> {
        Err(unimplemented())
    }

    async fn get_order(
        &self,
        _: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        Err(unimplemented())
    }

    async fn lookup_order(
        &self,
        _: Request<pb::LookupOrderRequest>,
    ) -> Result<Response<pb::LookupOrderResponse>, Status> {
        Err(unimplemented())
    }

    async fn list_orders(
        &self,
        _: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        Err(unimplemented())
    }

    async fn cancel_order(
        &self,
        _: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        Err(unimplemented())
    }

    async fn get_product_ledger(
        &self,
        _: Request<pb::GetProductLedgerRequest>,
    ) -> Result<Response<pb::GetProductLedgerResponse>, Status> {
        Err(unimplemented())
    }
}

fn unimplemented() -> Status {
    Status::unimplemented("the benchmark's bare server answers CreateOrder only")
}
