use std::sync::Arc;

use tower::Layer;

use super::handle::Shared;
use super::{BreakerHandle, CircuitBreaker};
use crate::config::BreakerConfig;
use crate::telemetry::DEFAULT_CLIENT;

/// Applies [`CircuitBreaker`] to a service. The layer owns one breaker: every service it builds
/// (and every clone of those) shares it, so build one layer per backend.
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

impl CircuitBreakerLayer {
    /// A breaker configured by `config`, labelled `default` in metrics.
    pub fn new(config: &BreakerConfig) -> Self {
        Self::with_client(config, DEFAULT_CLIENT)
    }

    /// A breaker configured by `config`, with `client` as its metrics label.
    pub fn with_client(config: &BreakerConfig, client: &str) -> Self {
        Self {
            shared: Shared::new(config, client),
        }
    }

    /// The handle of this layer's breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl std::fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CircuitBreakerLayer")
            .field(&self.handle())
            .finish()
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            shared: self.shared.clone(),
            admission: None,
        }
    }
}
