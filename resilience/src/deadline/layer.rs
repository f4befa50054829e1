use std::time::Duration;

use tower::Layer;

use super::Deadline;
use crate::telemetry::{self, DEADLINE_EXCEEDED, DEFAULT_CLIENT};

/// Applies [`Deadline`] to a service.
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    budget: Duration,
    expired: metrics::Counter,
}

impl DeadlineLayer {
    /// A layer giving each call at most `budget`.
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            expired: telemetry::plain(DEADLINE_EXCEEDED, DEFAULT_CLIENT),
        }
    }

    /// Sets the `client` label of this layer's metrics.
    pub fn client(mut self, client: &str) -> Self {
        self.expired = telemetry::plain(DEADLINE_EXCEEDED, client);
        self
    }

    pub(super) fn wrap<S>(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            budget: self.budget,
            expired: self.expired.clone(),
        }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.wrap(inner)
    }
}
