//! Leader/follower group commit: callers hand in one item each and await their own result;
//! items that arrive while a batch is in the database queue up and become the next batch, which
//! one call of the flush function writes in one transaction (one commit, one WAL flush).
//!
//! There is no timer: an item that finds no batch in flight starts one at once, so at low load a
//! batch is that one item and latency does not grow; under load the batch grows by itself to what
//! arrives during one round trip. At most one batch is in flight per [`GroupCommit`], and a batch
//! holds at most `max_batch` items (the rest wait for the next one).
//!
//! The flusher is a task of its own, so a caller that is dropped while waiting never strands the
//! others. Every item taken is written, even when its caller has gone: a caller may have been
//! dropped after its write was decided, and the write is what the others' answers were computed
//! with.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// The flush function: writes one batch, returning one output per item, in the items' order.
type Flush<I, O> = dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = Vec<O>> + Send>> + Send + Sync;

/// A group-commit queue (cheap to clone: one shared state).
pub struct GroupCommit<I, O> {
    inner: Arc<Inner<I, O>>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<I, O> std::fmt::Debug for GroupCommit<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("GroupCommit")
            .field("max_batch", &self.inner.max_batch)
            .field("waiting", &state.waiting.len())
            .field("flushing", &state.flushing)
            .finish()
    }
}

/// The batch an item was in ended without answering it: the flush function returned fewer
/// outputs than items, or panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the write batch ended without an answer for this item")]
pub struct Unanswered;

struct Inner<I, O> {
    flush: Box<Flush<I, O>>,
    max_batch: usize,
    state: Mutex<State<I, O>>,
}

struct State<I, O> {
    waiting: VecDeque<Waiting<I, O>>,
    /// A flusher task runs: it takes what waits when its batch returns.
    flushing: bool,
}

struct Waiting<I, O> {
    item: I,
    reply: oneshot::Sender<O>,
}

impl<I, O> GroupCommit<I, O>
where
    I: Send + 'static,
    O: Send + 'static,
{
    /// Batches of at most `max_batch` items (at least 1), written by `flush`, which must return
    /// one output per item in the items' order (an item left without one gets [`Unanswered`]).
    pub fn new<F, Fut>(max_batch: usize, flush: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        Self {
            inner: Arc::new(Inner {
                flush: Box::new(move |items| Box::pin(flush(items))),
                max_batch: max_batch.max(1),
                state: Mutex::new(State {
                    waiting: VecDeque::new(),
                    flushing: false,
                }),
            }),
        }
    }

    /// Puts `item` in the next batch and waits for its output.
    pub async fn submit(&self, item: I) -> Result<O, Unanswered> {
        let (reply, answer) = oneshot::channel();
        let start_flusher = {
            let mut state = self.inner.lock();
            state.waiting.push_back(Waiting { item, reply });
            !std::mem::replace(&mut state.flushing, true)
        };
        if start_flusher {
            tokio::spawn(flush(self.inner.clone()));
        }
        // The flusher answers every item it takes; a dropped sender means it could not.
        answer.await.map_err(|_| Unanswered)
    }
}

impl<I, O> Inner<I, O> {
    fn lock(&self) -> MutexGuard<'_, State<I, O>> {
        // Nothing panics while holding the lock; if something did, the queue is still valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch, or `None` (and the flusher's turn over) when nothing waits.
    fn next_batch(&self) -> Option<Vec<Waiting<I, O>>> {
        let mut state = self.lock();
        if state.waiting.is_empty() {
            state.flushing = false;
            return None;
        }
        let take = state.waiting.len().min(self.max_batch);
        Some(state.waiting.drain(..take).collect())
    }
}

/// Ends the flusher's turn if its task stops early (a panic in the flush function): the items
/// still waiting get [`Unanswered`] instead of hanging, and the next item starts a new flusher.
struct FlusherGuard<I, O> {
    inner: Arc<Inner<I, O>>,
    finished: bool,
}

impl<I, O> Drop for FlusherGuard<I, O> {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.inner.lock();
            state.waiting.clear();
            state.flushing = false;
        }
    }
}

async fn flush<I, O>(inner: Arc<Inner<I, O>>) {
    let mut guard = FlusherGuard {
        inner: inner.clone(),
        finished: false,
    };
    while let Some(batch) = inner.next_batch() {
        let (items, replies): (Vec<I>, Vec<oneshot::Sender<O>>) = batch
            .into_iter()
            .map(|waiting| (waiting.item, waiting.reply))
            .unzip();
        let outputs = (inner.flush)(items).await;
        for (reply, output) in replies.into_iter().zip(outputs) {
            // The caller may have gone meanwhile; its answer has nobody to go to.
            let _ = reply.send(output);
        }
    }
    guard.finished = true;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::{Barrier, Notify};

    use super::*;

    #[tokio::test]
    async fn a_lone_item_is_a_batch_of_one() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = GroupCommit::new(8, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move { items.into_iter().map(|n| n * 2).collect::<Vec<_>>() }
        });
        assert_eq!(batcher.submit(1).await, Ok(2));
        assert_eq!(batcher.submit(5).await, Ok(10));
        assert_eq!(*sizes.lock().unwrap(), [1, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn arrivals_during_a_flush_form_the_next_bounded_batch() {
        // The first batch is held in "the database" until every other item is queued.
        let release = Arc::new(Notify::new());
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (seen, gate) = (sizes.clone(), release.clone());
        let batcher = GroupCommit::new(4, move |items: Vec<usize>| {
            let first = seen.lock().unwrap().is_empty();
            seen.lock().unwrap().push(items.len());
            let gate = gate.clone();
            async move {
                if first {
                    gate.notified().await;
                }
                items
            }
        });
        let held = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(0).await }
        });
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let barrier = Arc::new(Barrier::new(10));
        let tasks: Vec<_> = (1..=10)
            .map(|n| {
                let (batcher, barrier) = (batcher.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    batcher.submit(n).await
                })
            })
            .collect();
        while batcher.inner.lock().waiting.len() < 10 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        assert_eq!(held.await.unwrap(), Ok(0));
        for (n, task) in (1..=10).zip(tasks) {
            assert_eq!(
                task.await.unwrap(),
                Ok(n),
                "each caller gets its own output"
            );
        }
        assert_eq!(*sizes.lock().unwrap(), [1, 4, 4, 2]);
    }

    #[tokio::test]
    async fn a_short_or_panicking_flush_answers_unanswered_and_the_queue_survives() {
        let calls = Arc::new(AtomicUsize::new(0));
        let count = calls.clone();
        let batcher = GroupCommit::new(8, move |items: Vec<u32>| {
            let call = count.fetch_add(1, Ordering::SeqCst);
            async move {
                match call {
                    0 => Vec::new(),
                    1 => panic!("flush failed"),
                    _ => items,
                }
            }
        });
        assert_eq!(batcher.submit(1).await, Err(Unanswered));
        assert_eq!(batcher.submit(2).await, Err(Unanswered));
        assert_eq!(
            batcher.submit(3).await,
            Ok(3),
            "a new flusher after the panic"
        );
    }
}
