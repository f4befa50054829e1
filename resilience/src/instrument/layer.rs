use std::sync::Arc;

use tower::Layer;

use super::{CallMetrics, Instrument};
use crate::telemetry::{self, DEFAULT_CLIENT};

/// Applies [`Instrument`] to a service.
#[derive(Debug, Clone)]
pub struct InstrumentLayer {
    client: Arc<str>,
    metrics: Arc<CallMetrics>,
}

impl InstrumentLayer {
    /// A layer whose metrics carry `client = "default"`.
    pub fn new() -> Self {
        Self::with_client(DEFAULT_CLIENT)
    }

    /// A layer whose metrics carry `client`.
    pub fn with_client(client: &str) -> Self {
        let (calls, duration) = telemetry::calls(client);
        Self {
            client: client.into(),
            metrics: Arc::new(CallMetrics { calls, duration }),
        }
    }
}

impl Default for InstrumentLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for InstrumentLayer {
    type Service = Instrument<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Instrument {
            inner,
            client: self.client.clone(),
            metrics: self.metrics.clone(),
        }
    }
}
