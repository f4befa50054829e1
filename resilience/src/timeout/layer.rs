use std::time::Duration;

use tower::Layer;

use super::AttemptTimeout;
use crate::telemetry::{self, ATTEMPT_TIMEOUTS, ATTEMPTS, DEFAULT_CLIENT};

/// Applies [`AttemptTimeout`] to a service.
#[derive(Debug, Clone)]
pub struct AttemptTimeoutLayer {
    timeout: Duration,
    attempts: metrics::Counter,
    timeouts: metrics::Counter,
}

impl AttemptTimeoutLayer {
    /// A layer giving each attempt at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self::with_client(timeout, DEFAULT_CLIENT)
    }

    /// Sets the `client` label of this layer's metrics.
    pub fn client(self, client: &str) -> Self {
        Self::with_client(self.timeout, client)
    }

    fn with_client(timeout: Duration, client: &str) -> Self {
        Self {
            timeout,
            attempts: telemetry::plain(ATTEMPTS, client),
            timeouts: telemetry::plain(ATTEMPT_TIMEOUTS, client),
        }
    }

    pub(crate) fn wrap<S>(&self, inner: S) -> AttemptTimeout<S> {
        AttemptTimeout {
            inner,
            timeout: self.timeout,
            attempts: self.attempts.clone(),
            timeouts: self.timeouts.clone(),
        }
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.wrap(inner)
    }
}
