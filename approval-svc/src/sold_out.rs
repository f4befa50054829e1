//! What this instance last heard from order-svc about products with nothing left, so that the
//! many approvals of a flash sale that arrive after the last unit went are refused as
//! APPROVE_FAILED `OUT_OF_STOCK` in the intent's own write, without an intent, a call and an
//! outcome each (see [`crate::repository::attempts::start_attempts`]).
//!
//! order-svc stays the only truth and a memory may only refuse, never sell. approval-svc does
//! not hear order-svc's stock changes (its database may be another server), so every memory is
//! short-lived: it is set from an OUT_OF_STOCK answer that said nothing is left (`available`
//! 0), forgotten when an order for the product is created or this instance cancels one of its
//! orders, and otherwise lives at most its time to live. A restock at order-svc is therefore
//! seen by the approvals that start at most that long after the answer that set the memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How many products may be remembered at once; beyond it nothing new is remembered (those
/// approvals call order-svc, which is always right).
const MAX_PRODUCTS: usize = 4_096;

/// The sold-out memory of one instance (cheap to clone: one shared state).
#[derive(Debug, Clone)]
pub struct SoldOutMemory {
    /// When each remembered product's memory expires.
    until: Arc<Mutex<HashMap<Uuid, Instant>>>,
    ttl: Duration,
}

impl SoldOutMemory {
    /// A memory whose entries live `ttl`; a zero `ttl` remembers nothing (every approval calls
    /// order-svc).
    pub fn new(ttl: Duration) -> Self {
        Self {
            until: Arc::new(Mutex::new(HashMap::new())),
            ttl,
        }
    }

    /// Records that order-svc just answered that `product_id` has nothing left.
    pub fn remember(&self, product_id: Uuid) {
        self.remember_at(product_id, Instant::now());
    }

    fn remember_at(&self, product_id: Uuid, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut until = self.lock();
        if until.len() >= MAX_PRODUCTS {
            until.retain(|_, expires| *expires > now);
        }
        if until.len() < MAX_PRODUCTS || until.contains_key(&product_id) {
            until.insert(product_id, now + self.ttl);
        }
    }

    /// Drops what is remembered of `product_id`: its stock may have come back.
    pub fn forget(&self, product_id: Uuid) {
        if self.ttl.is_zero() {
            return;
        }
        self.lock().remove(&product_id);
    }

    /// The products remembered as sold out now (expired memories are dropped on the way).
    pub fn sold_out(&self) -> Vec<Uuid> {
        self.sold_out_at(Instant::now())
    }

    fn sold_out_at(&self, now: Instant) -> Vec<Uuid> {
        if self.ttl.is_zero() {
            return Vec::new();
        }
        let mut until = self.lock();
        until.retain(|_, expires| *expires > now);
        until.keys().copied().collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Instant>> {
        self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_its_time_to_live_only() {
        let ttl = Duration::from_millis(100);
        let memory = SoldOutMemory::new(ttl);
        let (product, heard) = (Uuid::now_v7(), Instant::now());
        memory.remember_at(product, heard);
        assert_eq!(memory.sold_out_at(heard + ttl / 2), vec![product]);
        assert!(memory.sold_out_at(heard + ttl).is_empty(), "expired");
    }

    #[test]
    fn forgets_a_product_whose_stock_may_be_back() {
        let memory = SoldOutMemory::new(Duration::from_secs(60));
        let (gone, other) = (Uuid::now_v7(), Uuid::now_v7());
        memory.remember(gone);
        memory.remember(other);
        memory.forget(gone);
        assert_eq!(memory.sold_out(), vec![other]);
    }

    #[test]
    fn a_zero_time_to_live_remembers_nothing() {
        let memory = SoldOutMemory::new(Duration::ZERO);
        memory.remember(Uuid::now_v7());
        assert!(memory.sold_out().is_empty());
    }

    #[test]
    fn stays_bounded() {
        let memory = SoldOutMemory::new(Duration::from_secs(60));
        for _ in 0..MAX_PRODUCTS + 10 {
            memory.remember(Uuid::now_v7());
        }
        assert_eq!(memory.sold_out().len(), MAX_PRODUCTS);
    }
}
