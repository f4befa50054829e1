//! Group commit of the approval saga's two writes: the intents (phase 1) and the outcomes
//! (phase 3) of approvals that arrive while the previous batch of their kind is in the database
//! are written together, each batch in one statement that commits by itself (one round trip,
//! one WAL flush under durable settings) instead of one commit per approval. The saga's
//! guarantees are those of the single writes: each intent is committed before its caller calls
//! order-svc, each outcome is fenced by `attempts`, and each caller gets exactly its own answer
//! (see [`attempts::start_attempts`] and [`attempts::finish_attempts`]). A batch also writes
//! its requests' audit events, in one insert (see [`crate::audit`]).
//!
//! No timer at low load: a batch is then one request; under load a batch waits briefly for the
//! callers of the previous one (`--write-batch-refill-wait`; lab-common's `batch` module says
//! why). A failed batch fails each of its requests with
//! the batch's database error; the next batch starts afresh.

use std::sync::Arc;
use std::time::Duration;

use lab_common::batch::{Batching, GroupCommit, Refill};
use sqlx::PgPool;

use crate::domain::{Challenge, Transition};
use crate::repository::attempts::{self, BatchError, FinishRequest, StartRequest};
use crate::sold_out::SoldOutMemory;

/// Largest batch of one kind: large enough for every caller of a busy instance, small enough
/// that one statement's arrays stay modest.
pub const DEFAULT_MAX_BATCH: usize = 256;

type StartAnswer = Result<Transition, BatchError>;
type FinishAnswer = Result<Option<Challenge>, BatchError>;

/// The two group-commit queues of one instance (cheap to clone).
#[derive(Debug, Clone)]
pub struct WriteBatches {
    starts: GroupCommit<StartRequest, StartAnswer>,
    finishes: GroupCommit<FinishRequest, FinishAnswer>,
}

impl WriteBatches {
    /// Queues over `pool`, batches of at most `max_batch` requests each, refilled under load for
    /// at most `refill_wait`; an intent batch refuses the approvals of the products `sold_out`
    /// remembers as it is sent.
    pub fn new(
        pool: PgPool,
        max_batch: usize,
        refill_wait: Duration,
        sold_out: SoldOutMemory,
    ) -> Self {
        let batching = Batching {
            max_batch,
            refill: Refill {
                max_wait: refill_wait,
            },
        };
        let start_pool = pool.clone();
        let starts = GroupCommit::new(batching, move |requests: Vec<StartRequest>| {
            let pool = start_pool.clone();
            let sold_out = sold_out.clone();
            async move {
                crate::metrics::write_batch("start", requests.len());
                let written = async {
                    let mut conn = pool.acquire().await?;
                    attempts::start_attempts(&mut conn, &requests, &sold_out.sold_out()).await
                }
                .await;
                answers(written, requests.len())
            }
        });
        let finishes = GroupCommit::new(batching, move |requests: Vec<FinishRequest>| {
            let pool = pool.clone();
            async move {
                crate::metrics::write_batch("finish", requests.len());
                let written = async {
                    let mut conn = pool.acquire().await?;
                    attempts::finish_attempts(&mut conn, &requests).await
                }
                .await;
                answers(written, requests.len())
            }
        });
        Self { starts, finishes }
    }

    /// [`attempts::start_attempt`], committed with whatever other intents arrive meanwhile.
    pub async fn start_attempt(&self, request: StartRequest) -> Result<Transition, BatchError> {
        self.starts.submit(request).await?
    }

    /// [`attempts::finish_attempt`] (without a failure point), committed with whatever other
    /// outcomes arrive meanwhile.
    pub async fn finish_attempt(
        &self,
        request: FinishRequest,
    ) -> Result<Option<Challenge>, BatchError> {
        self.finishes.submit(request).await?
    }
}

/// One answer per request: its own on success, the batch's error for each on failure.
fn answers<T>(written: sqlx::Result<Vec<T>>, requests: usize) -> Vec<Result<T, BatchError>> {
    match written {
        Ok(answers) => answers.into_iter().map(Ok).collect(),
        Err(error) => {
            tracing::warn!(%error, requests, "write batch failed");
            let error = Arc::new(error);
            (0..requests)
                .map(|_| Err(BatchError::Database(error.clone())))
                .collect()
        }
    }
}
