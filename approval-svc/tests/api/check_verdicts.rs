//! The checker's verdicts under a moving shop: I1 is judged from one consistent read, so a
//! cancel and a create that commit around the checker's reads never page; and an incident
//! resolves only when a check sees its invariant holding, never because a check reached no
//! verdict.
//!
//! approval-svc talks to order-svc through [`Interposer`], a forwarding `OrderService` that
//! makes the shop's own traffic commit exactly between the checker's reads.

use std::sync::{Arc, Mutex};

use lab_proto::approval::v1 as apb;
use lab_proto::order::v1 as opb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use lab_proto::order::v1::order_service_server::{OrderService, OrderServiceServer};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::consistency::{Inbox, approval_at, check, violations_of, webhook_receiver};
use crate::helpers::*;

/// Which read of a product's stock a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// `GetProduct`: the counters alone.
    Counters,
    /// `ListOrders` of one product: its orders alone.
    Orders,
    /// `GetProductLedger`: both, from one snapshot.
    Ledger,
}

/// What the interposer does around the checker's stock reads of one product.
#[derive(Debug, Clone)]
enum Interleave {
    /// Nothing: plain forwarding.
    None,
    /// Once, at the first read of the product's orders (alone or in its ledger): the shop
    /// cancels `cancel` just before the read and re-orders the same quantity just after it.
    /// The stock ends where it started; the read sits in the middle.
    Straddle { product_id: String, cancel: String },
    /// Every read of the stock (alone or in its ledger): a restock of one unit commits first,
    /// so the stock never holds still.
    Churn { product_id: String },
    /// Every read of the stock: the product is not found (as if the shop's data were gone).
    Hide { product_id: String },
    /// Every call: order-svc is unreachable.
    Down,
}

/// A forwarding order-svc that applies an [`Interleave`].
#[derive(Clone)]
struct Interposer {
    shop: OrderServiceClient<Channel>,
    plan: Arc<Mutex<Interleave>>,
    fired: Arc<Mutex<usize>>,
}

/// The shop's own client id: its orders count for I1 only.
const SHOP: &str = "shop";

fn as_shop<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("client-id", SHOP.parse().unwrap());
    request
}

impl Interposer {
    async fn start(order: &OrderSvc) -> (String, Self) {
        let interposer = Self {
            shop: order.client().await,
            plan: Arc::new(Mutex::new(Interleave::None)),
            fired: Arc::default(),
        };
        let listener = lab_common::grpc::bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let addr = listener.local_addr;
        let server = OrderServiceServer::new(interposer.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(listener.incoming)
                .await
                .unwrap();
        });
        (format!("http://{addr}"), interposer)
    }

    fn set(&self, plan: Interleave) {
        *self.plan.lock().unwrap() = plan;
    }

    fn fired(&self) -> usize {
        *self.fired.lock().unwrap()
    }

    /// Runs `read` (a `kind` read of `product_id`) inside the interleaving in force.
    async fn stock_read<T>(
        &self,
        kind: Read,
        product_id: &str,
        read: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<Response<T>, Status> {
        let plan = self.plan.lock().unwrap().clone();
        let mut shop = self.shop.clone();
        match plan {
            Interleave::Straddle {
                product_id: target,
                cancel,
            } if target == product_id && kind != Read::Counters => {
                self.set(Interleave::None);
                let cancelled = shop
                    .cancel_order(as_shop(opb::CancelOrderRequest {
                        order_id: cancel,
                        reason: "the customer changed their mind".into(),
                    }))
                    .await
                    .expect("the shop's cancel")
                    .into_inner()
                    .order
                    .unwrap();
                let answer = read.await;
                let mut again = as_shop(opb::CreateOrderRequest {
                    product_id: target,
                    quantity: cancelled.quantity,
                    customer_id: cancelled.customer_id,
                });
                again.metadata_mut().insert(
                    "idempotency-key",
                    Uuid::now_v7().to_string().parse().unwrap(),
                );
                shop.create_order(again).await.expect("the shop's re-order");
                *self.fired.lock().unwrap() += 1;
                answer
            }
            Interleave::Churn { product_id: target }
                if target == product_id && kind != Read::Orders =>
            {
                shop.restock(as_shop(opb::RestockRequest {
                    product_id: target,
                    quantity: 1,
                }))
                .await
                .expect("the shop's restock");
                *self.fired.lock().unwrap() += 1;
                read.await
            }
            Interleave::Hide { product_id: target }
                if target == product_id && kind != Read::Orders =>
            {
                *self.fired.lock().unwrap() += 1;
                Err(Status::not_found("product not found"))
            }
            _ => read.await,
        }
    }

    fn down(&self) -> Result<(), Status> {
        if matches!(*self.plan.lock().unwrap(), Interleave::Down) {
            *self.fired.lock().unwrap() += 1;
            return Err(Status::unavailable("order-svc is down"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl OrderService for Interposer {
    async fn create_product(
        &self,
        request: Request<opb::CreateProductRequest>,
    ) -> Result<Response<opb::CreateProductResponse>, Status> {
        self.down()?;
        self.shop.clone().create_product(request).await
    }

    async fn get_product(
        &self,
        request: Request<opb::GetProductRequest>,
    ) -> Result<Response<opb::GetProductResponse>, Status> {
        self.down()?;
        let product_id = request.get_ref().product_id.clone();
        let mut shop = self.shop.clone();
        let read = shop.get_product(request);
        self.stock_read(Read::Counters, &product_id, read).await
    }

    async fn list_products(
        &self,
        request: Request<opb::ListProductsRequest>,
    ) -> Result<Response<opb::ListProductsResponse>, Status> {
        self.down()?;
        self.shop.clone().list_products(request).await
    }

    async fn restock(
        &self,
        request: Request<opb::RestockRequest>,
    ) -> Result<Response<opb::RestockResponse>, Status> {
        self.down()?;
        self.shop.clone().restock(request).await
    }

    async fn create_order(
        &self,
        request: Request<opb::CreateOrderRequest>,
    ) -> Result<Response<opb::CreateOrderResponse>, Status> {
        self.down()?;
        self.shop.clone().create_order(request).await
    }

    async fn get_order(
        &self,
        request: Request<opb::GetOrderRequest>,
    ) -> Result<Response<opb::GetOrderResponse>, Status> {
        self.down()?;
        self.shop.clone().get_order(request).await
    }

    async fn lookup_order(
        &self,
        request: Request<opb::LookupOrderRequest>,
    ) -> Result<Response<opb::LookupOrderResponse>, Status> {
        self.down()?;
        self.shop.clone().lookup_order(request).await
    }

    async fn list_orders(
        &self,
        request: Request<opb::ListOrdersRequest>,
    ) -> Result<Response<opb::ListOrdersResponse>, Status> {
        self.down()?;
        let product_id = request.get_ref().product_id.clone();
        let mut shop = self.shop.clone();
        let read = shop.list_orders(request);
        if product_id.is_empty() {
            return read.await;
        }
        self.stock_read(Read::Orders, &product_id, read).await
    }

    async fn cancel_order(
        &self,
        request: Request<opb::CancelOrderRequest>,
    ) -> Result<Response<opb::CancelOrderResponse>, Status> {
        self.down()?;
        self.shop.clone().cancel_order(request).await
    }

    async fn get_product_ledger(
        &self,
        request: Request<opb::GetProductLedgerRequest>,
    ) -> Result<Response<opb::GetProductLedgerResponse>, Status> {
        self.down()?;
        let product_id = request.get_ref().product_id.clone();
        let mut shop = self.shop.clone();
        let read = shop.get_product_ledger(request);
        self.stock_read(Read::Ledger, &product_id, read).await
    }
}

/// Pages (PagerDuty events) with `action`, by dedup key.
fn pages(inbox: &Inbox, action: &str) -> Vec<String> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, body)| path == "v2/enqueue" && body["event_action"] == action)
        .map(|(_, body)| body["dedup_key"].as_str().unwrap().to_owned())
        .collect()
}

async fn open_incidents(approval_db: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT dedup_key FROM consistency_incidents WHERE resolved_at IS NULL ORDER BY 1",
    )
    .fetch_all(approval_db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_and_a_create_around_the_checkers_read_never_page() {
    bounded(async {
        let (receiver, inbox) = webhook_receiver().await;
        let order = OrderSvc::start().await;
        let (url, interposer) = Interposer::start(&order).await;
        let approval = approval_at(&fresh_database().await, &url, receiver).await;
        let product = order.product(10).await;
        let mut shop = order.client().await;
        let mut first = as_shop(opb::CreateOrderRequest {
            product_id: product.product_id.clone(),
            quantity: 2,
            customer_id: Uuid::now_v7().to_string(),
        });
        first.metadata_mut().insert(
            "idempotency-key",
            Uuid::now_v7().to_string().parse().unwrap(),
        );
        let first = shop
            .create_order(first)
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();

        interposer.set(Interleave::Straddle {
            product_id: product.product_id.clone(),
            cancel: first.order_id.clone(),
        });
        let report = check(&approval, true, false).await;
        assert_eq!(
            interposer.fired(),
            1,
            "the shop's cancel and create straddled a read"
        );
        assert!(
            violations_of(&report, apb::Invariant::NoOversell).is_empty(),
            "nothing was oversold: {report:#?}"
        );
        assert!(
            pages(&inbox, "trigger").is_empty(),
            "{:#?}",
            inbox.lock().unwrap()
        );
        assert_eq!(order.get_product(&product.product_id).await.stock, 8);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_resolves_only_when_a_check_sees_it_holding() {
    bounded(async {
        let (receiver, inbox) = webhook_receiver().await;
        let order = OrderSvc::start().await;
        let (url, interposer) = Interposer::start(&order).await;
        let approval_db = fresh_database().await;
        let approval = approval_at(&approval_db, &url, receiver).await;
        let approval_sql = lab_common::postgres::connect(&approval_db, 1)
            .await
            .unwrap();
        let drifting = order.product(5).await;
        let shop_db = lab_common::postgres::connect(&order.database_url, 1)
            .await
            .unwrap();
        let drift = |delta: i64| {
            sqlx::query("UPDATE products SET stock = stock + $2 WHERE product_id = $1")
                .bind(Uuid::parse_str(&drifting.product_id).unwrap())
                .bind(delta)
                .execute(&shop_db)
        };
        drift(-1).await.unwrap();
        let incident = format!("lab:I1:{}", drifting.product_id);

        let opened = check(&approval, true, false).await;
        assert_eq!(violations_of(&opened, apb::Invariant::NoOversell).len(), 1);
        assert_eq!(pages(&inbox, "trigger"), std::slice::from_ref(&incident));

        // The stock moving under every read (no verdict from separate reads; the ledger still
        // sees the drift), the product unknown to order-svc, order-svc down: none of these
        // checks sees the invariant holding, so the incident stays open.
        for inconclusive in [
            Interleave::Churn {
                product_id: drifting.product_id.clone(),
            },
            Interleave::Hide {
                product_id: drifting.product_id.clone(),
            },
            Interleave::Down,
        ] {
            interposer.set(inconclusive.clone());
            let fired = interposer.fired();
            let _ = ops_check(&approval).await;
            assert!(interposer.fired() > fired, "{inconclusive:?} took effect");
            assert_eq!(
                open_incidents(&approval_sql).await,
                std::slice::from_ref(&incident),
                "after a check under {inconclusive:?} the incident must stay open"
            );
            assert!(
                pages(&inbox, "resolve").is_empty(),
                "{inconclusive:?}: {:#?}",
                inbox.lock().unwrap()
            );
        }

        // Seen holding: resolved, once; and nothing pages again.
        interposer.set(Interleave::None);
        drift(1).await.unwrap();
        let fixed = check(&approval, true, false).await;
        assert!(fixed.violations.is_empty(), "{fixed:#?}");
        assert!(open_incidents(&approval_sql).await.is_empty());
        assert_eq!(pages(&inbox, "resolve"), std::slice::from_ref(&incident));
        let _ = check(&approval, true, false).await;
        assert_eq!(pages(&inbox, "trigger"), [incident]);
    })
    .await;
}

/// A full check that may fail (order-svc down): its answer, not a panic.
async fn ops_check(approval: &ApprovalSvc) -> Result<apb::ConsistencyReport, Status> {
    lab_proto::approval::v1::ops_service_client::OpsServiceClient::connect(format!(
        "http://{}",
        approval.addr
    ))
    .await
    .unwrap()
    .run_consistency_check(apb::RunConsistencyCheckRequest {
        full: true,
        dry_run: false,
    })
    .await
    .map(|response| response.into_inner().report.unwrap())
}
