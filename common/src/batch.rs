//! Leader/follower group commit (DESIGN.md, "Hot row, group commit"): callers hand in one item
//! each and await their own output; the items that arrive while a batch is in the database queue
//! up and become the next batch, which one call of the flush function writes in one transaction
//! (one commit, one WAL flush, one lock of a hot row) instead of one per item.
//!
//! - **No timer.** An item that finds no batch of its queue in flight starts one at once, so at
//!   low load a batch is that one item and latency does not grow; under load a batch grows by
//!   itself to what arrives during one round trip.
//! - **Bounded.** A batch holds at most `max_batch` items; the rest wait for the next one.
//! - **Refill under load.** A batch answers its callers all at once, and a closed loop of callers
//!   sends their next requests a moment later: without care the first of them finds the queue
//!   idle and goes alone, the rest form the batch after it, and every round pays two commits (on
//!   a hot row, measured: 194 of 479 batches held one request). So after a batch of `n > 1`
//!   items the next batch waits until `n` items are queued, or at most [`Refill::max_wait`]
//!   (and never more than half the last batch's time in the database). After a batch of one, or
//!   with refill off, nothing waits: low load keeps its latency.
//! - **Queues.** [`GroupCommit::new`] has one queue; [`GroupCommit::keyed`] has one per key (say
//!   a product: only requests for the same row share a transaction), created by the key's first
//!   item and gone once its flusher finds nothing left. At most one batch per queue is in flight;
//!   the queues of different keys do not wait for each other.
//! - **Own task.** A queue's flusher is a task of its own, so a caller that gives up (deadline,
//!   disconnect) never strands the others.
//! - **Abandoned items are left out.** An item whose caller is gone when its batch is formed is
//!   not sent: nobody waits for its answer, and a caller that stopped waiting cannot have relied
//!   on the write. An item already sent is written even if its caller goes meanwhile: the batch's
//!   other answers were computed with it.
//! - **Answers.** The flush function returns one output per item, in the items' order; to fail a
//!   batch it answers each item with the error (say, the batch's database error mapped for each
//!   caller). An item left without an output, or in a batch whose flush function panicked, gets
//!   [`Unanswered`]; the queue goes on with the next item.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use lab_common::batch::GroupCommit;
//!
//! // One queue per product; a batch is one "transaction" of that product's requests.
//! let orders = GroupCommit::keyed(64, |product: u32, quantities: Vec<u32>| async move {
//!     quantities.iter().map(|quantity| product * 100 + quantity).collect::<Vec<_>>()
//! });
//! assert_eq!(orders.submit_to(7, 2).await, Ok(702));
//! # }
//! ```

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// The flush function: writes one batch of one key, returning one output per item, in order.
type Flush<I, O, K> =
    dyn Fn(K, Vec<I>) -> Pin<Box<dyn Future<Output = Vec<O>> + Send>> + Send + Sync;

/// Group-commit queues: items `I` answered with outputs `O`, one queue per key `K` (`()` for a
/// single queue). Cheap to clone: one shared state.
pub struct GroupCommit<I, O, K = ()> {
    inner: Arc<Inner<I, O, K>>,
}

impl<I, O, K> Clone for GroupCommit<I, O, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<I, O, K> std::fmt::Debug for GroupCommit<I, O, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queues = self.inner.lock();
        f.debug_struct("GroupCommit")
            .field("max_batch", &self.inner.max_batch)
            .field("flushing", &queues.len())
            .field("refill", &self.inner.refill)
            .field(
                "waiting",
                &queues
                    .values()
                    .map(|queue| queue.waiting.len())
                    .sum::<usize>(),
            )
            .finish()
    }
}

/// The batch an item was in ended without answering it: the flush function returned fewer
/// outputs than items, or panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the write batch ended without an answer for this item")]
pub struct Unanswered;

/// The shape of a queue's batches: [`GroupCommit::new`] and [`GroupCommit::keyed`] take one, or
/// just a `usize` (the largest batch, refill off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Most items in one batch (at least 1).
    pub max_batch: usize,
    /// Waiting for the previous batch's callers under load.
    pub refill: Refill,
}

impl From<usize> for Batching {
    fn from(max_batch: usize) -> Self {
        Self {
            max_batch,
            refill: Refill::OFF,
        }
    }
}

/// How long a batch may wait for the callers of the previous one (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    /// The longest wait, whatever the last batch took. Zero turns refill off.
    pub max_wait: Duration,
}

impl Refill {
    /// No waiting: every batch takes what is queued when the previous one is answered.
    pub const OFF: Self = Self {
        max_wait: Duration::ZERO,
    };

    /// How long to wait for `target` items after a batch of `last_size` that spent `last_took`
    /// in the flush function; `None` when the next batch should go at once.
    fn wait_after(self, last_size: usize, last_took: Duration) -> Option<Duration> {
        let wait = self.max_wait.min(last_took / 2);
        (last_size > 1 && !wait.is_zero()).then_some(wait)
    }
}

struct Inner<I, O, K> {
    flush: Box<Flush<I, O, K>>,
    max_batch: usize,
    refill: Refill,
    /// The items waiting for the next batch of each key. A key has an entry exactly while its
    /// flusher runs; the flusher removes it once it finds nothing left to send.
    queues: Mutex<HashMap<K, Queue<I, O>>>,
}

struct Queue<I, O> {
    waiting: VecDeque<Waiting<I, O>>,
    /// Woken on every arrival, for a flusher refilling its next batch.
    arrivals: Arc<Notify>,
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
    /// One queue: batches shaped by `batching` (or at most that many items), written by `flush`,
    /// which returns one output per item in the items' order.
    pub fn new<F, Fut>(batching: impl Into<Batching>, flush: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        Self::keyed(batching, move |(), items| flush(items))
    }

    /// Puts `item` in the next batch and waits for its output.
    pub async fn submit(&self, item: I) -> Result<O, Unanswered> {
        self.submit_to((), item).await
    }
}

impl<I, O, K> GroupCommit<I, O, K>
where
    I: Send + 'static,
    O: Send + 'static,
    K: Eq + Hash + Clone + Send + 'static,
{
    /// One queue per key: batches of one key shaped by `batching` (or at most that many items),
    /// written by `flush(key, items)`, which returns one output per item in the items' order.
    pub fn keyed<F, Fut>(batching: impl Into<Batching>, flush: F) -> Self
    where
        F: Fn(K, Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let batching = batching.into();
        Self {
            inner: Arc::new(Inner {
                flush: Box::new(move |key, items| Box::pin(flush(key, items))),
                max_batch: batching.max_batch.max(1),
                refill: batching.refill,
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Puts `item` in the next batch of `key` and waits for its output.
    pub async fn submit_to(&self, key: K, item: I) -> Result<O, Unanswered> {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting { item, reply };
        let new_queue = match self.inner.lock().entry(key) {
            Entry::Occupied(mut queue) => {
                let queue = queue.get_mut();
                queue.waiting.push_back(waiting);
                queue.arrivals.notify_one();
                None
            }
            Entry::Vacant(slot) => {
                let key = slot.key().clone();
                slot.insert(Queue {
                    waiting: VecDeque::from([waiting]),
                    arrivals: Arc::new(Notify::new()),
                });
                Some(key)
            }
        };
        // The item that creates its key's queue starts the key's flusher.
        if let Some(key) = new_queue {
            tokio::spawn(flush(self.inner.clone(), key));
        }
        // The flusher answers every item it sends; a dropped sender means it could not.
        answer.await.map_err(|_| Unanswered)
    }

    /// How many items of `key` wait for a batch (not those in the database now).
    pub fn waiting(&self, key: &K) -> usize {
        self.inner
            .lock()
            .get(key)
            .map_or(0, |queue| queue.waiting.len())
    }
}

impl<I, O, K> Inner<I, O, K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Queue<I, O>>> {
        // Nothing panics while holding the lock; if something did, the queues are still valid.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<I, O, K: Eq + Hash> Inner<I, O, K> {
    /// The next batch of `key`, its abandoned items left out; `None` (and the key's queue gone,
    /// ending its flusher's turn) when nothing is left to send.
    fn next_batch(&self, key: &K) -> Option<(Vec<I>, Vec<oneshot::Sender<O>>)> {
        let mut queues = self.lock();
        let queue = queues.get_mut(key)?;
        let (mut items, mut replies) = (Vec::new(), Vec::new());
        while replies.len() < self.max_batch {
            let Some(waiting) = queue.waiting.pop_front() else {
                break;
            };
            if !waiting.reply.is_closed() {
                items.push(waiting.item);
                replies.push(waiting.reply);
            }
        }
        if replies.is_empty() {
            queues.remove(key);
            return None;
        }
        Some((items, replies))
    }

    /// Waits until `target` items of `key` are queued (capped at a full batch), or for `wait`.
    async fn refill(&self, key: K, target: usize, wait: Duration) {
        let deadline = Instant::now() + wait;
        let target = target.min(self.max_batch);
        loop {
            let arrivals = {
                let queues = self.lock();
                let Some(queue) = queues.get(&key) else {
                    return;
                };
                if queue.waiting.len() >= target {
                    return;
                }
                queue.arrivals.clone()
            };
            // An arrival between the check and here leaves a permit: notify_one stores one.
            if tokio::time::timeout_at(deadline, arrivals.notified())
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Removes the key's queue if its flusher stops early (a panic in the flush function): the items
/// still waiting get [`Unanswered`] instead of hanging, and the key's next item starts a new
/// flusher.
struct FlusherGuard<I, O, K: Eq + Hash> {
    inner: Arc<Inner<I, O, K>>,
    key: K,
    finished: bool,
}

impl<I, O, K: Eq + Hash> Drop for FlusherGuard<I, O, K> {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped after the lock is released: waking the callers needs no lock.
            let _abandoned = self.inner.lock().remove(&self.key);
        }
    }
}

async fn flush<I, O, K: Eq + Hash + Clone>(inner: Arc<Inner<I, O, K>>, key: K) {
    let mut guard = FlusherGuard {
        inner,
        key,
        finished: false,
    };
    let mut last: Option<(usize, Duration)> = None;
    loop {
        if let Some((size, took)) = last
            && let Some(wait) = guard.inner.refill.wait_after(size, took)
        {
            guard.inner.refill(guard.key.clone(), size, wait).await;
        }
        let Some((items, replies)) = guard.inner.next_batch(&guard.key) else {
            break;
        };
        let size = items.len();
        let started = Instant::now();
        let outputs = (guard.inner.flush)(guard.key.clone(), items).await;
        last = Some((size, started.elapsed()));
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

    /// Waits (yielding) until `condition` holds.
    async fn until(condition: impl Fn() -> bool) {
        while !condition() {
            tokio::task::yield_now().await;
        }
    }

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
        assert_eq!(batcher.waiting(&()), 0);
    }

    /// Three callers in a closed loop: each sends, and `think[i]` after its answer sends again.
    /// The first batch (item 0) is in "the database" while the three queue. Returns the batch
    /// sizes and when each batch was sent.
    async fn closed_loop(refill: Refill, think: [u64; 3]) -> Vec<(usize, Duration)> {
        let start = Instant::now();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let seen = sent.clone();
        let batching = Batching {
            max_batch: 8,
            refill,
        };
        let batcher = GroupCommit::new(batching, move |items: Vec<u64>| {
            seen.lock().unwrap().push((items.len(), start.elapsed()));
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                items
            }
        });
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(0).await }
        });
        until(|| !sent.lock().unwrap().is_empty()).await;
        let callers: Vec<_> = (0..3)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move {
                    assert_eq!(batcher.submit(i + 1).await, Ok(i + 1));
                    tokio::time::sleep(Duration::from_millis(think[i as usize])).await;
                    assert_eq!(batcher.submit(i + 4).await, Ok(i + 4));
                })
            })
            .collect();
        assert_eq!(first.await.unwrap(), Ok(0));
        for caller in callers {
            caller.await.unwrap();
        }
        sent.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn without_refill_the_first_caller_back_goes_alone() {
        let sent = closed_loop(Refill::OFF, [1, 2, 3]).await;
        let sizes: Vec<_> = sent.iter().map(|(size, _)| *size).collect();
        assert_eq!(sizes, [1, 3, 1, 2], "the round split in two commits");
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_the_next_batch_waits_for_the_callers_of_the_last() {
        let refill = Refill {
            max_wait: Duration::from_millis(5),
        };
        let sent = closed_loop(refill, [1, 2, 3]).await;
        let ms = |millis| Duration::from_millis(millis);
        // [0] at 0; [1, 2, 3] at 10 ms (after a batch of one nothing waits); answered at 20 ms,
        // they come back at 21, 22 and 23 ms and go together.
        assert_eq!(sent, [(1, ms(0)), (3, ms(10)), (3, ms(23))]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_for_callers_is_bounded() {
        let refill = Refill {
            max_wait: Duration::from_millis(4),
        };
        let sent = closed_loop(refill, [1, 2, 50]).await;
        let ms = |millis| Duration::from_millis(millis);
        // Two of three come back in time; the batch goes 4 ms after the last was answered, and
        // the late caller is a batch of one later.
        assert_eq!(sent, [(1, ms(0)), (3, ms(10)), (2, ms(24)), (1, ms(70))]);
    }

    #[tokio::test(start_paused = true)]
    async fn at_low_load_nothing_waits() {
        let refill = Refill {
            max_wait: Duration::from_secs(1),
        };
        let batching = Batching {
            max_batch: 8,
            refill,
        };
        let batcher = GroupCommit::new(batching, |items: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            items
        });
        let start = Instant::now();
        for n in 0..5 {
            assert_eq!(batcher.submit(n).await, Ok(n));
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(50),
            "five lone items, no wait"
        );
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
        until(|| !sizes.lock().unwrap().is_empty()).await;
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
        until(|| batcher.waiting(&()) == 10).await;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn items_whose_callers_are_gone_are_left_out_of_the_batch() {
        let release = Arc::new(Notify::new());
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (seen, gate) = (batches.clone(), release.clone());
        let batcher = GroupCommit::new(8, move |items: Vec<u32>| {
            let first = seen.lock().unwrap().is_empty();
            seen.lock().unwrap().push(items.clone());
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
        until(|| !batches.lock().unwrap().is_empty()).await;
        let tasks: Vec<_> = (1..=6)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.submit(n).await })
            })
            .collect();
        until(|| batcher.waiting(&()) == 6).await;
        // Callers 2, 4 and 6 give up while their items wait.
        let mut kept = Vec::new();
        for (n, task) in (1..=6).zip(tasks) {
            if n % 2 == 0 {
                task.abort();
                assert!(task.await.unwrap_err().is_cancelled());
            } else {
                kept.push((n, task));
            }
        }
        release.notify_one();
        assert_eq!(held.await.unwrap(), Ok(0));
        for (n, task) in kept {
            assert_eq!(task.await.unwrap(), Ok(n));
        }
        // The six callers were spawned at once, so their arrival order is the scheduler's.
        let mut sent = batches.lock().unwrap().clone();
        sent[1].sort_unstable();
        assert_eq!(
            sent,
            [vec![0], vec![1, 3, 5]],
            "the abandoned items were not sent"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_batch_apart_and_a_held_key_does_not_hold_the_others() {
        // Key 0's first batch is held until the end; key 1 batches meanwhile.
        let release = Arc::new(Notify::new());
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (seen, gate) = (batches.clone(), release.clone());
        let batcher = GroupCommit::keyed(8, move |key: u8, items: Vec<u32>| {
            let held = key == 0 && !seen.lock().unwrap().iter().any(|(k, _)| *k == 0);
            seen.lock().unwrap().push((key, items.clone()));
            let gate = gate.clone();
            async move {
                if held {
                    gate.notified().await;
                }
                items.into_iter().map(|n| (key, n)).collect::<Vec<_>>()
            }
        });
        let submit = |key: u8, n: u32| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit_to(key, n).await })
        };
        let held = submit(0, 0);
        until(|| !batches.lock().unwrap().is_empty()).await;
        let barrier = Arc::new(Barrier::new(6));
        let queued: Vec<_> = (1..=6)
            .map(|n| {
                let (batcher, barrier) = (batcher.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    batcher.submit_to(0, n).await
                })
            })
            .collect();
        until(|| batcher.waiting(&0) == 6).await;
        assert_eq!(submit(1, 7).await.unwrap(), Ok((1, 7)), "key 1 is not held");
        assert_eq!(submit(1, 8).await.unwrap(), Ok((1, 8)));
        assert_eq!(batcher.waiting(&0), 6, "key 0 still waits");
        release.notify_one();
        assert_eq!(held.await.unwrap(), Ok((0, 0)));
        for (n, task) in (1..=6).zip(queued) {
            assert_eq!(task.await.unwrap(), Ok((0, n)));
        }
        let batches = batches.lock().unwrap().clone();
        assert_eq!(
            batches
                .iter()
                .map(|(key, items)| (*key, items.len()))
                .collect::<Vec<_>>(),
            [(0, 1), (1, 1), (1, 1), (0, 6)],
            "key 0's waiting items form one batch of their own"
        );
        until(|| format!("{batcher:?}").contains("flushing: 0")).await;
    }
}
