//! Group commit on the hot row: CreateOrders for one product that arrive while the previous
//! batch for that product is in the database wait together and form the next batch, which
//! [`repository::place_orders`] settles in one transaction (one lock of the product row, one
//! WAL flush). With durable commits a hot product was capped near one order per flush; a batch
//! shares the flush.
//!
//! The queueing is [`lab_common::batch::GroupCommit`] keyed by product (no timer, bounded
//! batches, a flusher task per busy product, callers already gone left out, a panicking batch
//! answered [`OrderError::Unanswered`]); this module is what a batch of orders does. Batches of
//! one product run one after the other within an instance; across instances each batches its
//! own requests and the product row lock orders the batches. A failed call fails only its
//! batch's requests, each with the mapped database status.

use std::sync::Arc;
use std::time::Duration;

use lab_common::batch;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::OrderError;
use crate::repository::{self, CreateOutcome, PlaceRequest};
use crate::sold_out::SoldOutFlags;

/// One request's answer.
type Answer = Result<CreateOutcome, OrderError>;

/// The per-product batching of CreateOrder (cheap to clone: one shared state).
#[derive(Debug, Clone)]
pub struct GroupCommit {
    batches: batch::GroupCommit<PlaceRequest, Answer, Uuid>,
}

impl GroupCommit {
    /// Batches shaped by `batching` on `pool`; keys' claims are kept for `retention`; a batch
    /// that leaves a product at stock 0 tells `sold_out`.
    pub fn new(
        pool: PgPool,
        retention: Duration,
        batching: batch::Batching,
        sold_out: SoldOutFlags,
    ) -> Self {
        let batches = batch::GroupCommit::keyed(batching, move |product_id, requests| {
            settle(
                pool.clone(),
                retention,
                sold_out.clone(),
                product_id,
                requests,
            )
        });
        Self { batches }
    }

    /// Places one CreateOrder in its product's next batch and waits for its answer.
    pub async fn place(&self, request: PlaceRequest) -> Answer {
        let product_id = request.order.product_id;
        self.batches
            .submit_to(product_id, request)
            .await
            .unwrap_or(Err(OrderError::Unanswered))
    }

    /// How many requests for `product_id` wait for a batch (not those in the database now).
    pub fn waiting(&self, product_id: Uuid) -> usize {
        self.batches.waiting(&product_id)
    }
}

/// Sends one batch of `product_id`: one answer per request, in the requests' order.
async fn settle(
    pool: PgPool,
    retention: Duration,
    sold_out: SoldOutFlags,
    product_id: Uuid,
    requests: Vec<PlaceRequest>,
) -> Vec<Answer> {
    crate::metrics::batch_sent(requests.len());
    let sent_at = sold_out.sequence();
    match repository::place_orders(&pool, product_id, &requests, retention).await {
        Ok(placed) => {
            if placed.stock_after == Some(0) && sold_out.saw_sold_out(product_id, sent_at) {
                tracing::debug!(%product_id, "sold out; refusing from memory until restocked");
            }
            placed.outcomes
        }
        Err(error) => {
            let error = Arc::new(error);
            requests
                .iter()
                .map(|_| Err(OrderError::Database(error.clone())))
                .collect()
        }
    }
}
