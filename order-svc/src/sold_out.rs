//! Sold-out flags: which products this instance knows to be sold out, so CreateOrder can answer
//! OUT_OF_STOCK from memory instead of spending a transaction on each of the many calls of a
//! flash sale that arrive after the last unit went.
//!
//! The database stays the only truth; a flag may only refuse, never sell. It is set from what a
//! committed batch saw (stock 0), and dropped when the product's stock may have come back:
//! Restock and CancelOrder notify [`crate::repository::STOCK_CHANNEL`] in their transaction, and
//! [`crate::stock_listener`] hears it on every instance. Two rules keep a flag from outliving
//! the sold-out state:
//!
//! - A flag is set only if no invalidation of that product (nor a change of the listener's
//!   connection) happened since before the batch that saw stock 0 was sent: a restock that
//!   commits after that batch and is heard before its answer would otherwise be undone by it.
//!   Invalidations are remembered per bucket of product ids (a fixed array, so memory stays
//!   bounded); a collision only means a flag is not set this time.
//! - Every flag expires: after [`LISTENING_TTL`] while the listener is connected (a bound on any
//!   loss nobody noticed), after the short disconnected TTL otherwise, since notifications
//!   are lost then. A new connection drops every flag, as notifications may have been missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How long a flag lives while the listener is connected.
pub const LISTENING_TTL: Duration = Duration::from_secs(5);
/// How many products may be flagged at once; beyond it no new flag is set (refusals then go to
/// the database, which is always correct).
const MAX_FLAGS: usize = 65_536;
/// Buckets of product ids that remember their latest invalidation.
const BUCKETS: usize = 1_024;

/// The sold-out flags of one instance (cheap to clone: one shared state).
#[derive(Debug, Clone)]
pub struct SoldOutFlags {
    state: Arc<Mutex<State>>,
    enabled: bool,
    disconnected_ttl: Duration,
}

/// A point in the sequence of invalidations, taken before a batch is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence(u64);

#[derive(Debug)]
struct State {
    /// Bumped by every invalidation and every change of the listener's connection.
    sequence: u64,
    /// The sequence of the latest change of the listener's connection.
    reset_at: u64,
    /// Per bucket of product ids, the sequence of its latest invalidation.
    invalidated_at: Vec<u64>,
    /// Flagged products and when their flag expires.
    flags: HashMap<Uuid, Instant>,
    listening: bool,
}

impl SoldOutFlags {
    /// Flags that answer from memory when `enabled`; set while the listener is disconnected,
    /// they expire after `disconnected_ttl`. They start disconnected.
    pub fn new(enabled: bool, disconnected_ttl: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                sequence: 0,
                reset_at: 0,
                invalidated_at: vec![0; BUCKETS],
                flags: HashMap::new(),
                listening: false,
            })),
            enabled,
            disconnected_ttl,
        }
    }

    /// True when this instance knows `product_id` is sold out (an unexpired flag).
    pub fn is_sold_out(&self, product_id: Uuid) -> bool {
        if !self.enabled {
            return false;
        }
        let mut state = self.lock();
        match state.flags.get(&product_id) {
            Some(expires) if *expires > Instant::now() => true,
            Some(_) => {
                state.flags.remove(&product_id);
                false
            }
            None => false,
        }
    }

    /// The current point of the invalidation sequence; take it before sending a batch and give
    /// it to [`SoldOutFlags::saw_sold_out`] with what the batch saw.
    pub fn sequence(&self) -> Sequence {
        Sequence(self.lock().sequence)
    }

    /// A batch sent at `sent_at` committed with `product_id`'s stock at 0: flag it, unless its
    /// stock may have come back since (an invalidation of its bucket, or a connection change,
    /// after `sent_at`). Returns whether the flag was set.
    pub fn saw_sold_out(&self, product_id: Uuid, sent_at: Sequence) -> bool {
        if !self.enabled {
            return false;
        }
        let mut state = self.lock();
        let bucket = bucket(product_id);
        if state.reset_at > sent_at.0 || state.invalidated_at[bucket] > sent_at.0 {
            return false;
        }
        if state.flags.len() >= MAX_FLAGS && !state.flags.contains_key(&product_id) {
            let now = Instant::now();
            state.flags.retain(|_, expires| *expires > now);
            if state.flags.len() >= MAX_FLAGS {
                return false;
            }
        }
        let ttl = if state.listening {
            LISTENING_TTL
        } else {
            self.disconnected_ttl
        };
        state.flags.insert(product_id, Instant::now() + ttl);
        true
    }

    /// `product_id`'s stock may have come back (a notification): drop its flag.
    pub fn invalidate(&self, product_id: Uuid) {
        let mut state = self.lock();
        state.sequence += 1;
        let sequence = state.sequence;
        state.invalidated_at[bucket(product_id)] = sequence;
        state.flags.remove(&product_id);
    }

    /// The listener connected (`true`, LISTEN active) or lost its connection (`false`). Either
    /// way notifications may have been missed, so every flag goes.
    pub fn set_listening(&self, listening: bool) {
        let mut state = self.lock();
        state.sequence += 1;
        state.reset_at = state.sequence;
        state.listening = listening;
        state.flags.clear();
    }

    /// Whether the listener is connected and listening.
    pub fn is_listening(&self) -> bool {
        self.lock().listening
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn bucket(product_id: Uuid) -> usize {
    // The low bits of a UUID v7 are random.
    (product_id.as_u128() % BUCKETS as u128) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listening_flags() -> SoldOutFlags {
        let flags = SoldOutFlags::new(true, Duration::from_millis(250));
        flags.set_listening(true);
        flags
    }

    #[test]
    fn a_batch_that_saw_stock_zero_flags_the_product() {
        let flags = listening_flags();
        let product = Uuid::now_v7();
        let sent = flags.sequence();
        assert!(flags.saw_sold_out(product, sent));
        assert!(flags.is_sold_out(product));
        assert!(!flags.is_sold_out(Uuid::now_v7()));
    }

    #[test]
    fn a_restock_heard_before_the_batch_answered_wins() {
        let flags = listening_flags();
        let product = Uuid::now_v7();
        let sent = flags.sequence();
        flags.invalidate(product);
        assert!(!flags.saw_sold_out(product, sent));
        assert!(!flags.is_sold_out(product));
        // A batch sent after the restock was heard may flag it again.
        assert!(flags.saw_sold_out(product, flags.sequence()));
    }

    #[test]
    fn a_notification_drops_the_flag() {
        let flags = listening_flags();
        let product = Uuid::now_v7();
        flags.saw_sold_out(product, flags.sequence());
        flags.invalidate(product);
        assert!(!flags.is_sold_out(product));
    }

    #[test]
    fn a_connection_change_drops_every_flag_and_every_batch_in_flight() {
        let flags = listening_flags();
        let (product, other) = (Uuid::now_v7(), Uuid::now_v7());
        flags.saw_sold_out(product, flags.sequence());
        let sent = flags.sequence();
        flags.set_listening(false);
        assert!(!flags.is_sold_out(product));
        assert!(!flags.saw_sold_out(other, sent));
    }

    #[test]
    fn flags_set_while_disconnected_expire_quickly() {
        let flags = SoldOutFlags::new(true, Duration::from_millis(20));
        let product = Uuid::now_v7();
        assert!(flags.saw_sold_out(product, flags.sequence()));
        assert!(flags.is_sold_out(product));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!flags.is_sold_out(product));
    }

    #[test]
    fn disabled_flags_never_refuse() {
        let flags = SoldOutFlags::new(false, Duration::from_secs(1));
        let product = Uuid::now_v7();
        assert!(!flags.saw_sold_out(product, flags.sequence()));
        assert!(!flags.is_sold_out(product));
    }
}
