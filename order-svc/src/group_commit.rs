//! Group commit on the hot row: CreateOrders for one product that arrive while the previous
//! batch for that product is in the database wait together and form the next batch, which
//! [`repository::place_orders`] settles in one transaction (one lock of the product row, one
//! WAL flush). With durable commits a hot product was capped near one order per flush; a batch
//! shares the flush.
//!
//! There is no timer: a request that finds no batch of its product in flight starts one at
//! once, so at low load a batch is that one request and latency does not grow. Batches of one
//! product run one after the other within an instance (its queue has one flusher); across
//! instances each batches its own requests and the product row lock orders the batches.
//!
//! A flusher is a task of its own, so a caller that gives up (deadline, disconnect) never strands
//! the others; a request whose caller is already gone when its batch is formed is left out
//! rather than written for nobody. A failed call fails only its batch's requests, each with the
//! mapped database status.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::OrderError;
use crate::repository::{self, CreateOutcome, PlaceRequest};
use crate::sold_out::SoldOutFlags;

/// One request's answer.
type Answer = Result<CreateOutcome, OrderError>;

/// The per-product batching of CreateOrder (cheap to clone: one shared state).
#[derive(Debug, Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    retention: Duration,
    max_batch: usize,
    sold_out: SoldOutFlags,
    /// Requests waiting for the next batch of each product. A product has an entry exactly while
    /// its flusher runs; the flusher removes it once it finds nothing left to send.
    queues: Mutex<HashMap<Uuid, VecDeque<Waiting>>>,
}

#[derive(Debug)]
struct Waiting {
    request: PlaceRequest,
    reply: oneshot::Sender<Answer>,
}

impl GroupCommit {
    /// Batches of at most `max_batch` requests (at least 1) on `pool`; keys' claims are kept for
    /// `retention`; a batch that leaves a product at stock 0 tells `sold_out`.
    pub fn new(
        pool: PgPool,
        retention: Duration,
        max_batch: usize,
        sold_out: SoldOutFlags,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                retention,
                max_batch: max_batch.max(1),
                sold_out,
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Places one CreateOrder in its product's next batch and waits for its answer.
    pub async fn place(&self, request: PlaceRequest) -> Answer {
        let product_id = request.order.product_id;
        let (reply, answer) = oneshot::channel();
        let start_flusher = match self.inner.lock().entry(product_id) {
            Entry::Occupied(mut queue) => {
                queue.get_mut().push_back(Waiting { request, reply });
                false
            }
            Entry::Vacant(slot) => {
                slot.insert(VecDeque::from([Waiting { request, reply }]));
                true
            }
        };
        if start_flusher {
            tokio::spawn(flush(self.inner.clone(), product_id));
        }
        // The flusher answers every request it takes; a dropped sender means it died.
        answer.await.unwrap_or(Err(OrderError::Unanswered))
    }

    /// How many requests for `product_id` wait for a batch (not those in the database now).
    pub fn waiting(&self, product_id: Uuid) -> usize {
        self.inner.lock().get(&product_id).map_or(0, VecDeque::len)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, VecDeque<Waiting>>> {
        // Nothing panics while holding the lock; if something did, the queues are still valid.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch of `product_id`, or `None` (and the queue gone) when nothing waits.
    fn next_batch(&self, product_id: Uuid) -> Option<Vec<Waiting>> {
        let mut queues = self.lock();
        let queue = queues.get_mut(&product_id)?;
        let mut batch = Vec::new();
        while batch.len() < self.max_batch {
            let Some(waiting) = queue.pop_front() else {
                break;
            };
            if !waiting.reply.is_closed() {
                batch.push(waiting);
            }
        }
        if batch.is_empty() {
            queues.remove(&product_id);
            return None;
        }
        Some(batch)
    }
}

/// Removes the product's queue if its flusher ends early (a panic): the requests still waiting
/// then get [`OrderError::Unanswered`] instead of hanging, and the next request starts a new
/// flusher.
struct FlusherGuard {
    inner: Arc<Inner>,
    product_id: Uuid,
    finished: bool,
}

impl Drop for FlusherGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.lock().remove(&self.product_id);
        }
    }
}

async fn flush(inner: Arc<Inner>, product_id: Uuid) {
    let mut guard = FlusherGuard {
        inner: inner.clone(),
        product_id,
        finished: false,
    };
    while let Some(batch) = inner.next_batch(product_id) {
        settle(&inner, product_id, batch).await;
    }
    guard.finished = true;
}

/// Sends one batch and answers each of its requests.
async fn settle(inner: &Inner, product_id: Uuid, batch: Vec<Waiting>) {
    crate::metrics::batch_sent(batch.len());
    let (requests, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|waiting| (waiting.request, waiting.reply))
        .unzip();
    let sent_at = inner.sold_out.sequence();
    match repository::place_orders(&inner.pool, product_id, &requests, inner.retention).await {
        Ok(placed) => {
            if placed.stock_after == Some(0) && inner.sold_out.saw_sold_out(product_id, sent_at) {
                tracing::debug!(%product_id, "sold out; refusing from memory until restocked");
            }
            for (reply, outcome) in replies.into_iter().zip(placed.outcomes) {
                // The caller may have gone meanwhile; its answer has nobody to go to.
                let _ = reply.send(outcome);
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(OrderError::Database(error.clone())));
            }
        }
    }
}
