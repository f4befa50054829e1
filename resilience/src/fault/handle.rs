use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::plan::{FaultParseError, FaultPlan};

/// Environment variable read by [`FaultHandle::from_env`].
pub const FAULTS_ENV: &str = "FAULTS";

/// Changes the faults of a running server; cheap to clone, shared with its [`super::FaultLayer`].
#[derive(Debug, Clone, Default)]
pub struct FaultHandle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    plan: RwLock<Arc<FaultPlan>>,
    injected: AtomicU64,
}

impl FaultHandle {
    /// A handle injecting `plan`.
    pub fn new(plan: FaultPlan) -> Self {
        let handle = Self::default();
        handle.set(plan);
        handle
    }

    /// A handle injecting nothing (until [`set`](Self::set)).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A handle configured from the `FAULTS` environment variable; unset or blank means none.
    pub fn from_env() -> Result<Self, FaultParseError> {
        let text = std::env::var(FAULTS_ENV).unwrap_or_default();
        Ok(Self::new(text.parse()?))
    }

    /// Replaces the plan; requests already past the fault layer keep the old one.
    pub fn set(&self, plan: FaultPlan) {
        if !plan.is_empty() {
            tracing::warn!(faults = %plan, "fault injection enabled");
        }
        *self.inner.plan.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(plan);
    }

    /// Parses `text` (see [`crate::fault`]) and makes it the plan.
    pub fn set_from_str(&self, text: &str) -> Result<(), FaultParseError> {
        self.set(text.parse()?);
        Ok(())
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.set(FaultPlan::default());
    }

    /// The plan in force.
    pub fn plan(&self) -> Arc<FaultPlan> {
        self.inner
            .plan
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many faults fired so far (every kind, delays included).
    pub fn injected(&self) -> u64 {
        self.inner.injected.load(Ordering::Relaxed)
    }

    pub(super) fn count(&self, n: u64) {
        self.inner.injected.fetch_add(n, Ordering::Relaxed);
    }
}
