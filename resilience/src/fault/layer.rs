use tower::Layer;

use super::handle::FaultHandle;
use super::plan::{FaultParseError, FaultPlan};
use super::{Fault, KindCounters};

/// Applies [`Fault`] to a server's service (`Server::builder().layer(...)`).
#[derive(Debug, Clone)]
pub struct FaultLayer {
    handle: FaultHandle,
    counters: KindCounters,
}

impl FaultLayer {
    /// A layer injecting what `handle` says, now and after every change.
    pub fn new(handle: FaultHandle) -> Self {
        Self {
            handle,
            counters: KindCounters::new(),
        }
    }

    /// A layer injecting `plan`.
    pub fn with_plan(plan: FaultPlan) -> Self {
        Self::new(FaultHandle::new(plan))
    }

    /// A layer injecting nothing until its handle says otherwise.
    pub fn disabled() -> Self {
        Self::new(FaultHandle::disabled())
    }

    /// A layer configured from the `FAULTS` environment variable (unset: no faults).
    pub fn from_env() -> Result<Self, FaultParseError> {
        Ok(Self::new(FaultHandle::from_env()?))
    }

    /// The handle that changes this layer's faults at run time.
    pub fn handle(&self) -> FaultHandle {
        self.handle.clone()
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fault {
            inner,
            handle: self.handle.clone(),
            counters: self.counters.clone(),
        }
    }
}
