//! Group commit of the approval saga's two writes: the intents (phase 1) and the outcomes
//! (phase 3) of approvals that arrive while the previous batch of their kind is in the database
//! are written together, each batch in one transaction with one commit, instead of one commit
//! (one WAL flush under durable settings) per approval. The saga's guarantees are those of the
//! single writes: each intent is committed before its caller calls order-svc, each outcome is
//! fenced by `attempts`, and each caller gets exactly its own answer (see
//! [`attempts::start_attempts`] and [`attempts::finish_attempts`]). A batch's transaction also
//! writes its requests' audit events, in one insert (see [`crate::audit`]).
//!
//! No timer at low load: a batch is then one request; under load a batch waits briefly for the
//! callers of the previous one (`--write-batch-refill-wait`; lab-common's `batch` module says
//! why). A failed batch fails each of its requests with
//! the batch's database error; the next batch starts afresh.
//!
//! **Lanes.** Each kind of write has `--write-batch-lanes` queues, a challenge always in the same
//! one (by its id), each with at most one batch in flight. One queue kept one PostgreSQL backend
//! busy while the others idled: under a flood of approvals the intents, the order call and the
//! outcomes moved in lock-step waves, one batch of 256 at a time, so a round cost three batch
//! times in a row. Lanes split a wave into batches written in parallel, on as many backends (and
//! cores). They cannot deadlock or contend: lanes hold disjoint challenges, and a lane's batch
//! locks its rows in id order. Two requests for one challenge meet in one lane, so a batch still
//! answers them as if they ran one after the other.

use std::sync::Arc;
use std::time::Duration;

use lab_common::batch::{Batching, GroupCommit, Refill};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Challenge, Transition};
use crate::repository::attempts::{self, BatchError, FinishRequest, StartRequest};

/// Largest batch of one kind: large enough for every caller of a busy instance, small enough
/// that one statement's arrays stay modest.
pub const DEFAULT_MAX_BATCH: usize = 256;

/// Default number of lanes per kind of write: one per core of a small machine.
pub const DEFAULT_LANES: u16 = 2;

type StartAnswer = Result<Transition, BatchError>;
type FinishAnswer = Result<Option<Challenge>, BatchError>;

/// The two group-commit queues of one instance (cheap to clone).
#[derive(Debug, Clone)]
pub struct WriteBatches {
    starts: GroupCommit<StartRequest, StartAnswer, Lane>,
    finishes: GroupCommit<FinishRequest, FinishAnswer, Lane>,
    lanes: usize,
}

/// The queue a challenge's writes go through.
type Lane = u64;

impl WriteBatches {
    /// `lanes` queues per kind over `pool` (at least one), batches of at most `max_batch`
    /// requests each, refilled under load for at most `refill_wait`.
    pub fn new(pool: PgPool, lanes: usize, max_batch: usize, refill_wait: Duration) -> Self {
        let batching = Batching {
            max_batch,
            refill: Refill {
                max_wait: refill_wait,
            },
        };
        let start_pool = pool.clone();
        let starts = GroupCommit::keyed(batching, move |_: Lane, requests: Vec<StartRequest>| {
            let pool = start_pool.clone();
            async move {
                crate::metrics::write_batch("start", requests.len());
                let written = async {
                    let mut tx = pool.begin().await?;
                    let transitions = attempts::start_attempts(&mut tx, &requests).await?;
                    tx.commit().await?;
                    Ok(transitions)
                }
                .await;
                answers(written, requests.len())
            }
        });
        let finishes =
            GroupCommit::keyed(batching, move |_: Lane, requests: Vec<FinishRequest>| {
                let pool = pool.clone();
                async move {
                    crate::metrics::write_batch("finish", requests.len());
                    let written = async {
                        let mut tx = pool.begin().await?;
                        let rows = attempts::finish_attempts(&mut tx, &requests).await?;
                        tx.commit().await?;
                        Ok(rows)
                    }
                    .await;
                    answers(written, requests.len())
                }
            });
        Self {
            starts,
            finishes,
            lanes: lanes.max(1),
        }
    }

    /// The lane of challenge `id`: the low bits of a UUID v7 are random, so lanes fill evenly.
    fn lane(&self, id: Uuid) -> Lane {
        id.as_u64_pair().1 % self.lanes as u64
    }

    /// [`attempts::start_attempt`], committed with whatever other intents arrive meanwhile.
    pub async fn start_attempt(&self, request: StartRequest) -> Result<Transition, BatchError> {
        self.starts
            .submit_to(self.lane(request.id), request)
            .await?
    }

    /// [`attempts::finish_attempt`] (without a failure point), committed with whatever other
    /// outcomes arrive meanwhile.
    pub async fn finish_attempt(
        &self,
        request: FinishRequest,
    ) -> Result<Option<Challenge>, BatchError> {
        self.finishes
            .submit_to(self.lane(request.id), request)
            .await?
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
