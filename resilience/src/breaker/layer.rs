use std::sync::Arc;

use rand::RngCore;
use tower::Layer;

use super::handle::Shared;
use super::{BreakerHandle, CircuitBreaker};
use crate::backoff::JitterRng;
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

    /// A breaker configured by `config`, with `client` as its metrics label. `config` should be
    /// valid ([`BreakerConfig::validate`]); out-of-range values are not corrected.
    pub fn with_client(config: &BreakerConfig, client: &str) -> Self {
        Self::with_jitter(config, client, JitterRng::thread())
    }

    /// Like [`with_client`](Self::with_client), with open periods jittered by a generator
    /// seeded from `rng` (as tower's `Balance::from_rng`), e.g. a seeded `StdRng` in tests.
    pub fn from_rng<R: RngCore + ?Sized>(
        config: &BreakerConfig,
        client: &str,
        rng: &mut R,
    ) -> Self {
        Self::with_jitter(config, client, JitterRng::from_rng(rng))
    }

    /// Like [`with_client`](Self::with_client), drawing the open periods' jitter from `rng`.
    pub fn with_jitter(config: &BreakerConfig, client: &str, rng: JitterRng) -> Self {
        Self {
            shared: Shared::new(config, client, rng),
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
