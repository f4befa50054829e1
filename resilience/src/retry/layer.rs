use std::sync::Arc;

use rand::RngCore;
use tower::Layer;

use super::policy::Shared;
use super::{Retry, RetryPolicy, RetryStats};
use crate::backoff::JitterRng;
use crate::config::RetryConfig;
use crate::telemetry::DEFAULT_CLIENT;

/// Applies [`Retry`] to a service. The budget and counters belong to the layer and are shared
/// by every service it builds.
#[derive(Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
    max_request_bytes: usize,
}

impl RetryLayer {
    /// A retry layer configured by `config`, labelled `default` in metrics.
    pub fn new(config: &RetryConfig) -> Self {
        Self::with_client(config, DEFAULT_CLIENT)
    }

    /// A retry layer configured by `config`, with `client` as its metrics label.
    ///
    /// # Panics
    ///
    /// When `config` is out of range ([`RetryConfig::validate`]).
    pub fn with_client(config: &RetryConfig, client: &str) -> Self {
        Self::with_jitter(config, client, JitterRng::thread())
    }

    /// Like [`with_client`](Self::with_client), with backoff drawn from a generator seeded from
    /// `rng` (as tower's `Balance::from_rng`), e.g. a seeded `StdRng` in tests.
    pub fn from_rng<R: RngCore + ?Sized>(config: &RetryConfig, client: &str, rng: &mut R) -> Self {
        Self::with_jitter(config, client, JitterRng::from_rng(rng))
    }

    /// Like [`with_client`](Self::with_client), drawing the backoff from `rng`.
    pub fn with_jitter(config: &RetryConfig, client: &str, rng: JitterRng) -> Self {
        Self {
            shared: Shared::new(config, client, rng),
            max_request_bytes: config.max_request_bytes,
        }
    }

    /// The counters of this layer.
    pub fn stats(&self) -> RetryStats {
        self.shared.stats.clone()
    }
}

impl std::fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("max_attempts", &self.shared.max_attempts)
            .field("backoff", &self.shared.backoff)
            .finish()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner: tower::retry::Retry::new(RetryPolicy::new(self.shared.clone()), inner),
            shared: self.shared.clone(),
            max_request_bytes: self.max_request_bytes,
        }
    }
}
