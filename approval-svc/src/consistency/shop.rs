//! The checker's side of order-svc: every call it makes, through its public RPCs only and the
//! saga's [`OrderGateway::call`] (approval-svc's `client-id`, which order-svc scopes keys to,
//! and a bounded deadline), and the paging of its listings.

use std::time::Duration;

use lab_common::metadata::APPROVAL_CLIENT_ID;
use lab_proto::order::v1 as order_pb;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::orders::{OrderClient, OrderGateway};

/// Page size of every listing the checker makes.
pub const PAGE: i32 = 500;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const COMPENSATION_REASON: &str = "compensation by the consistency checker";

/// One page of a listing, and the token of the next (`None` on the last page).
#[derive(Debug)]
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
#[derive(Debug, Clone)]
pub struct Shop {
    orders: OrderGateway,
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
    /// Calls through `orders` (the saga's gateway: the same breaker, budgets and `client-id`).
    pub fn new(orders: OrderGateway) -> Self {
        Self { orders }
    }

    /// Sends `message` as approval-svc does ([`OrderGateway::call`]), bounded by the checker's
    /// call timeout.
    async fn call<Req, Resp, F, Fut>(&self, message: Req, send: F) -> Result<Resp, Status>
    where
        F: FnOnce(OrderClient, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.orders
            .call(tonic::Request::new(message), CALL_TIMEOUT, send)
            .await
    }

    /// An order by id.
    pub async fn order(&self, order_id: Uuid) -> Result<Option<order_pb::Order>, Status> {
        let request = order_pb::GetOrderRequest {
            order_id: order_id.to_string(),
        };
        let answer = self
            .call(request, |mut client, request| async move {
                client.get_order(request).await
            })
            .await;
        Ok(found(answer)?.and_then(|response| response.order))
    }

    /// The order holding one of approval-svc's idempotency keys.
    pub async fn order_by_key(&self, key: &str) -> Result<Option<order_pb::Order>, Status> {
        let request = order_pb::LookupOrderRequest {
            idempotency_key: key.to_owned(),
        };
        let answer = self
            .call(request, |mut client, request| async move {
                client.lookup_order(request).await
            })
            .await;
        Ok(found(answer)?.and_then(|response| response.order))
    }

    /// A product's stock counters and CREATED orders from one snapshot (I1 is judged from it:
    /// separate reads can straddle a concurrent cancel and create).
    pub async fn ledger(
        &self,
        product_id: Uuid,
    ) -> Result<Option<order_pb::ProductLedger>, Status> {
        let request = order_pb::GetProductLedgerRequest {
            product_id: product_id.to_string(),
        };
        let answer = self
            .call(request, |mut client, request| async move {
                client.get_product_ledger(request).await
            })
            .await;
        Ok(found(answer)?.and_then(|response| response.ledger))
    }

    /// Cancels an order (compensation); idempotent on order-svc's side.
    pub async fn cancel(&self, order_id: Uuid) -> Result<(), Status> {
        let request = order_pb::CancelOrderRequest {
            order_id: order_id.to_string(),
            reason: COMPENSATION_REASON.to_owned(),
        };
        self.call(request, |mut client, request| async move {
            client.cancel_order(request).await
        })
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
        let request = order_pb::ListOrdersRequest {
            client_id: APPROVAL_CLIENT_ID.to_owned(),
            status: order_pb::OrderStatus::Created.into(),
            created_after: since.map(lab_common::time::to_proto),
            page_size: PAGE,
            page_token,
            ..Default::default()
        };
        let page = self
            .call(request, |mut client, request| async move {
                client.list_orders(request).await
            })
            .await?;
        Ok(Page::new(page.orders, page.next_page_token))
    }

    /// One page of product ids.
    pub async fn product_ids(&self, page_token: String) -> Result<Page<Uuid>, Status> {
        let request = order_pb::ListProductsRequest {
            page_size: PAGE,
            page_token,
        };
        let page = self
            .call(request, |mut client, request| async move {
                client.list_products(request).await
            })
            .await?;
        let ids = page
            .products
            .iter()
            .filter_map(|p| Uuid::try_parse(&p.product_id).ok())
            .collect();
        Ok(Page::new(ids, page.next_page_token))
    }
}
