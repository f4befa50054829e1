//! The gRPC handlers of `lab.order.v1.OrderService`: parse, call the repository, convert; and
//! of `lab.order.v1.OpsService` ([`ops`]). State-changing handlers read their [`Caller`] first
//! and hand it to the repository, which records the call's audit event with the change
//! ([`repository::audited`] says which calls are recorded and which are not).

pub mod access;
mod convert;
pub mod ops;
mod parse;

use lab_common::audit::Caller;
use lab_common::metadata::{self, IDEMPOTENT_REPLAYED};
use lab_proto::order::v1 as pb;
use lab_proto::order::v1::order_service_server::OrderService;
use sqlx::PgPool;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::domain::Limits;
use crate::error::OrderError;
use crate::group_commit::GroupCommit;
use crate::repository::{self, CreateOutcome, PlaceRequest};
use crate::sold_out::SoldOutFlags;

/// The OrderService implementation.
#[derive(Debug, Clone)]
pub struct OrderApi {
    pool: PgPool,
    limits: Limits,
    orders: GroupCommit,
    sold_out: SoldOutFlags,
}

impl OrderApi {
    /// Serves requests from `pool`, enforcing `limits`; CreateOrder goes through `orders` (group
    /// commit) unless `sold_out` already knows the product is gone.
    pub fn new(pool: PgPool, limits: Limits, orders: GroupCommit, sold_out: SoldOutFlags) -> Self {
        Self {
            pool,
            limits,
            orders,
            sold_out,
        }
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    #[tracing::instrument(skip_all, fields(initial_stock = request.get_ref().initial_stock))]
    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        let caller = caller(&request);
        let new_product = parse::new_product(request.get_ref(), self.limits)?;
        let product = repository::create_product(&self.pool, &caller, &new_product).await?;
        tracing::info!(product_id = %product.product_id, "product created");
        Ok(Response::new(pb::CreateProductResponse {
            product: Some(product.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(product_id = %request.get_ref().product_id))]
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let product_id = parse::product_id(&request.get_ref().product_id)?;
        let product = repository::get_product(&self.pool, product_id).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let page = parse::list_products(request.get_ref())?;
        let (products, next_page_token) = repository::list_products(&self.pool, page).await?;
        Ok(Response::new(pb::ListProductsResponse {
            products: products.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(product_id = %request.get_ref().product_id, quantity = request.get_ref().quantity))]
    async fn restock(
        &self,
        request: Request<pb::RestockRequest>,
    ) -> Result<Response<pb::RestockResponse>, Status> {
        let caller = caller(&request);
        let (product_id, quantity) = parse::restock(request.get_ref(), self.limits)?;
        let product = repository::restock(&self.pool, &caller, product_id, quantity).await?;
        tracing::info!(stock = product.stock, "restocked");
        Ok(Response::new(pb::RestockResponse {
            product: Some(product.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(product_id = %request.get_ref().product_id, quantity = request.get_ref().quantity))]
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let caller = caller(&request);
        let (scope, order) =
            parse::create_order(request.metadata(), request.get_ref(), self.limits)?;
        // Only a first attempt may be refused from memory: a retry may be the re-send of a
        // request whose order exists, and must replay it (the database decides).
        if parse::is_first_attempt(request.metadata())
            && self.sold_out.is_sold_out(order.product_id)
        {
            crate::metrics::sold_out_fast_path();
            let refusal = OrderError::OutOfStock {
                product_id: order.product_id,
                requested: order.quantity,
                available: 0,
            };
            crate::metrics::order_refused(&refusal);
            return Err(refusal.into());
        }
        let outcome = self
            .orders
            .place(PlaceRequest {
                scope,
                order,
                caller,
            })
            .await
            .inspect_err(crate::metrics::order_refused)?;
        let (order, replayed) = match outcome {
            CreateOutcome::Created(order) => (order, false),
            CreateOutcome::Replayed(order) => (order, true),
        };
        crate::metrics::order_placed(replayed);
        // In the audit trail and the metrics already; a line per order would cost the hot
        // item a tenth of the service's CPU (refusals log at DEBUG for the same reason).
        tracing::debug!(order_id = %order.order_id, replayed, "order placed");
        let mut response = Response::new(pb::CreateOrderResponse {
            order: Some(order.into()),
        });
        if replayed {
            response
                .metadata_mut()
                .insert(IDEMPOTENT_REPLAYED, MetadataValue::from_static("true"));
        }
        Ok(response)
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let order_id = parse::order_id(&request.get_ref().order_id)?;
        let order = repository::get_order(&self.pool, order_id).await?;
        owned(&request, &order)?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(order.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn lookup_order(
        &self,
        request: Request<pb::LookupOrderRequest>,
    ) -> Result<Response<pb::LookupOrderResponse>, Status> {
        let scope = parse::lookup(request.metadata(), request.get_ref())?;
        let order = repository::lookup_order(&self.pool, &scope).await?;
        Ok(Response::new(pb::LookupOrderResponse {
            order: Some(order.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let (mut filter, page) = parse::list_orders(request.get_ref())?;
        if let Some(own) = access::own_orders_only(&request) {
            match filter.client_id.as_deref() {
                Some(asked) if asked != own => return Err(access::not_owner(asked).into()),
                _ => filter.client_id = Some(own.to_owned()),
            }
        }
        let (orders, next_page_token) = repository::list_orders(&self.pool, filter, page).await?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let caller = caller(&request);
        let (order_id, reason) = parse::cancel(request.get_ref())?;
        let owner = access::own_orders_only(&request);
        let (order, restored) =
            repository::cancel_order(&self.pool, &caller, order_id, &reason, owner).await?;
        if restored {
            crate::metrics::order_cancelled();
        }
        tracing::info!(restored, "order cancelled");
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(order.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(product_id = %request.get_ref().product_id))]
    async fn get_product_ledger(
        &self,
        request: Request<pb::GetProductLedgerRequest>,
    ) -> Result<Response<pb::GetProductLedgerResponse>, Status> {
        let product_id = parse::product_id(&request.get_ref().product_id)?;
        let ledger = repository::get_product_ledger(&self.pool, product_id).await?;
        Ok(Response::new(pb::GetProductLedgerResponse {
            ledger: Some(ledger.into()),
        }))
    }
}

/// The audit trail's caller: the token's subject; in open mode the `client-id` the service
/// scopes keys by (`anonymous` when absent or not a valid one).
fn caller<T>(request: &Request<T>) -> Caller {
    Caller::of(request, || {
        request
            .metadata()
            .get(metadata::CLIENT_ID)
            .and_then(|value| value.to_str().ok())
            .filter(|client_id| metadata::is_valid_key(client_id))
            .unwrap_or(metadata::ANONYMOUS_CLIENT)
            .to_owned()
    })
}

/// Another client's order is NOT_FOUND to a shop-client: its existence is not its business.
fn owned<T>(request: &Request<T>, order: &crate::domain::Order) -> Result<(), OrderError> {
    match access::own_orders_only(request) {
        Some(own) if own != order.client_id => Err(OrderError::OrderNotFound(order.order_id)),
        _ => Ok(()),
    }
}
