//! The checker's side of order-svc: every call it makes, through its public RPCs only, each
//! with approval-svc's `client-id` (order-svc scopes keys to it) and a bounded deadline, and
//! the paging of its listings.

use std::time::Duration;

use lab_common::metadata::CLIENT_ID;
use lab_proto::order::v1 as order_pb;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::orders::{CLIENT_NAME, OrderClient};

/// Page size of every listing the checker makes.
pub const PAGE: i32 = 500;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const COMPENSATION_REASON: &str = "compensation by the consistency checker";

/// One page of a listing, and the token of the next (`None` on the last page).
pub struct Page<T> {
    /// What the page holds.
    pub items: Vec<T>,
    /// Where the next page starts.
    pub next: Option<String>,
}

impl<T> Page<T> {
    fn new(items: Vec<T>, next_page_token: String) -> Self {
        Self {
            items,
            next: (!next_page_token.is_empty()).then_some(next_page_token),
        }
    }
}

/// order-svc as the checker sees it.
#[derive(Clone)]
pub struct Shop {
    orders: OrderClient,
}

/// A request as approval-svc sends it.
fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        CLIENT_ID,
        tonic::metadata::MetadataValue::from_static(CLIENT_NAME),
    );
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// NOT_FOUND is an answer (`None`), every other failure an error.
fn found<T>(answer: Result<T, Status>) -> Result<Option<T>, Status> {
    match answer {
        Ok(found) => Ok(Some(found)),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(status),
    }
}

impl Shop {
    /// Calls through `orders` (the saga's client: the same breaker and budgets).
    pub fn new(orders: OrderClient) -> Self {
        Self { orders }
    }

    /// An order by id.
    pub async fn order(&self, order_id: Uuid) -> Result<Option<order_pb::Order>, Status> {
        let answer = self
            .orders
            .clone()
            .get_order(request(order_pb::GetOrderRequest {
                order_id: order_id.to_string(),
            }))
            .await;
        Ok(found(answer)?.and_then(|response| response.into_inner().order))
    }

    /// The order holding one of approval-svc's idempotency keys.
    pub async fn order_by_key(&self, key: &str) -> Result<Option<order_pb::Order>, Status> {
        let answer = self
            .orders
            .clone()
            .lookup_order(request(order_pb::LookupOrderRequest {
                idempotency_key: key.to_owned(),
            }))
            .await;
        Ok(found(answer)?.and_then(|response| response.into_inner().order))
    }

    /// A product's stock counters and CREATED orders from one snapshot (I1 is judged from it:
    /// separate reads can straddle a concurrent cancel and create).
    pub async fn ledger(
        &self,
        product_id: Uuid,
    ) -> Result<Option<order_pb::ProductLedger>, Status> {
        let answer = self
            .orders
            .clone()
            .get_product_ledger(request(order_pb::GetProductLedgerRequest {
                product_id: product_id.to_string(),
            }))
            .await;
        Ok(found(answer)?.and_then(|response| response.into_inner().ledger))
    }

    /// Cancels an order (compensation); idempotent on order-svc's side.
    pub async fn cancel(&self, order_id: Uuid) -> Result<(), Status> {
        self.orders
            .clone()
            .cancel_order(request(order_pb::CancelOrderRequest {
                order_id: order_id.to_string(),
                reason: COMPENSATION_REASON.to_owned(),
            }))
            .await
            .map(drop)
    }

    /// One page of approval-svc's CREATED orders created at or after `since` (all when
    /// `None`).
    pub async fn live_orders_since(
        &self,
        since: Option<chrono::DateTime<chrono::Utc>>,
        page_token: String,
    ) -> Result<Page<order_pb::Order>, Status> {
        let page = self
            .orders
            .clone()
            .list_orders(request(order_pb::ListOrdersRequest {
                client_id: CLIENT_NAME.to_owned(),
                status: order_pb::OrderStatus::Created.into(),
                created_after: since.map(lab_common::time::to_proto),
                page_size: PAGE,
                page_token,
                ..Default::default()
            }))
            .await?
            .into_inner();
        Ok(Page::new(page.orders, page.next_page_token))
    }

    /// One page of product ids.
    pub async fn product_ids(&self, page_token: String) -> Result<Page<Uuid>, Status> {
        let page = self
            .orders
            .clone()
            .list_products(request(order_pb::ListProductsRequest {
                page_size: PAGE,
                page_token,
            }))
            .await?
            .into_inner();
        let ids = page
            .products
            .iter()
            .filter_map(|p| Uuid::try_parse(&p.product_id).ok())
            .collect();
        Ok(Page::new(ids, page.next_page_token))
    }
}
