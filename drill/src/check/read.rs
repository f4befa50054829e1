//! Reading both sides through their public RPCs, page by page, each call under a deadline.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use lab_proto::approval::v1 as approval_pb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1 as order_pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use approval_pb::ChallengeStatus as CStatus;

use super::CheckError;

pub(super) fn clients(
    approval_url: &str,
    order_url: &str,
) -> Result<(ApprovalServiceClient<Channel>, OrderServiceClient<Channel>), CheckError> {
    let channel = |url: &str| {
        // `host:port` is accepted too, as operators type it.
        let url = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        Endpoint::from_shared(url.clone())
            .map(|endpoint| {
                endpoint
                    .connect_timeout(Duration::from_secs(5))
                    .connect_lazy()
            })
            .map_err(|source| CheckError::Connect { url, source })
    };
    Ok((
        ApprovalServiceClient::new(channel(approval_url)?),
        OrderServiceClient::new(channel(order_url)?),
    ))
}

fn rpc_error(rpc: &'static str) -> impl Fn(tonic::Status) -> CheckError {
    move |status| CheckError::Rpc {
        rpc,
        status: Box::new(status),
    }
}

/// What every call of one check carries: its deadline and, against secured services, the
/// bearer token (parsed once, so a token that cannot be a header fails before any call).
#[derive(Clone)]
pub(super) struct Call {
    timeout: Duration,
    authorization: Option<MetadataValue<Ascii>>,
}

impl Call {
    pub(super) fn new(timeout: Duration, token: Option<&str>) -> Result<Self, CheckError> {
        let authorization = token
            .map(|token| format!("Bearer {}", token.trim()).parse())
            .transpose()
            .map_err(|_| CheckError::BadToken)?;
        Ok(Self {
            timeout,
            authorization,
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        request
    }
}

pub(super) async fn read_challenges(
    client: &mut ApprovalServiceClient<Channel>,
    call: &Call,
) -> Result<Vec<approval_pb::Challenge>, CheckError> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_challenges(call.request(approval_pb::ListChallengesRequest {
                status: CStatus::Unspecified as i32,
                page_size: 500,
                page_token,
            }))
            .await
            .map_err(rpc_error("ListChallenges"))?
            .into_inner();
        all.extend(page.challenges);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

pub(super) async fn read_products(
    client: &mut OrderServiceClient<Channel>,
    call: &Call,
) -> Result<Vec<order_pb::Product>, CheckError> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_products(call.request(order_pb::ListProductsRequest {
                page_size: 500,
                page_token,
            }))
            .await
            .map_err(rpc_error("ListProducts"))?
            .into_inner();
        all.extend(page.products);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

pub(super) async fn read_orders(
    client: &mut OrderServiceClient<Channel>,
    call: &Call,
) -> Result<Vec<order_pb::Order>, CheckError> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_orders(call.request(order_pb::ListOrdersRequest {
                page_size: 500,
                page_token,
                ..Default::default()
            }))
            .await
            .map_err(rpc_error("ListOrders"))?
            .into_inner();
        all.extend(page.orders);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// How many ledgers are read at once.
const LEDGER_READS_IN_FLIGHT: usize = 16;

/// Each product's ledger (stock counters and CREATED orders from one snapshot).
pub(super) async fn read_ledgers(
    client: &OrderServiceClient<Channel>,
    products: &[order_pb::Product],
    call: &Call,
) -> Result<Vec<order_pb::ProductLedger>, CheckError> {
    // Owned ids: a stream over references makes this future's `Send` unprovable where a
    // drill's hook (a higher-ranked closure) awaits a check.
    let ids: Vec<String> = products.iter().map(|p| p.product_id.clone()).collect();
    futures::stream::iter(ids)
        .map(|product_id| {
            let mut client = client.clone();
            let call = call.clone();
            async move {
                client
                    .get_product_ledger(
                        call.request(order_pb::GetProductLedgerRequest { product_id }),
                    )
                    .await
                    .map_err(rpc_error("GetProductLedger"))?
                    .into_inner()
                    .ledger
                    .ok_or_else(|| CheckError::Rpc {
                        rpc: "GetProductLedger",
                        status: Box::new(tonic::Status::internal("answered without a ledger")),
                    })
            }
        })
        .buffered(LEDGER_READS_IN_FLIGHT)
        .try_collect()
        .await
}
