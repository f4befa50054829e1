use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one retry layer, shared by all its services and clones.
#[derive(Debug, Clone, Default)]
pub struct RetryStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    not_buffered: AtomicU64,
}

impl RetryStats {
    /// Logical calls that entered the layer.
    pub fn calls(&self) -> u64 {
        self.0.calls.load(Ordering::Relaxed)
    }

    /// Retries scheduled (attempts beyond the first).
    pub fn retries(&self) -> u64 {
        self.0.retries.load(Ordering::Relaxed)
    }

    /// Retries refused because the budget was empty.
    pub fn budget_exhausted(&self) -> u64 {
        self.0.budget_exhausted.load(Ordering::Relaxed)
    }

    /// Calls sent once because their request body exceeded the buffer bound.
    pub fn not_buffered(&self) -> u64 {
        self.0.not_buffered.load(Ordering::Relaxed)
    }

    pub(crate) fn add_call(&self) {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_retry(&self) {
        self.0.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_budget_exhausted(&self) {
        self.0.budget_exhausted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_not_buffered(&self) {
        self.0.not_buffered.fetch_add(1, Ordering::Relaxed);
    }
}
