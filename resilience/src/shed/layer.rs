use std::sync::Arc;

use tokio::sync::Semaphore;
use tower::Layer;

use super::LoadShed;
use crate::telemetry::{self, DEFAULT_CLIENT, SHED};

/// Applies [`LoadShed`] to a service. Each service it builds has its own limit, shared by that
/// service's clones.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    limit: usize,
    shed: metrics::Counter,
}

impl LoadShedLayer {
    /// A layer allowing `limit` calls in flight (at least 1).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            shed: telemetry::plain(SHED, DEFAULT_CLIENT),
        }
    }

    /// Sets the `client` label of this layer's metrics.
    pub fn client(mut self, client: &str) -> Self {
        self.shed = telemetry::plain(SHED, client);
        self
    }

    pub(super) fn layer_service<S>(&self, inner: S) -> LoadShed<S> {
        LoadShed {
            inner,
            semaphore: Arc::new(Semaphore::new(self.limit)),
            limit: self.limit,
            permit: None,
            shed: self.shed.clone(),
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.layer_service(inner)
    }
}
