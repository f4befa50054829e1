use std::sync::Arc;

use tower::Layer;

use super::Instrument;
use crate::telemetry::{self, DEFAULT_CLIENT, PerCode};

/// Applies [`Instrument`] to a service.
#[derive(Debug, Clone)]
pub struct InstrumentLayer {
    client: Arc<str>,
    calls: PerCode,
    duration: metrics::Histogram,
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
            calls,
            duration,
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
            calls: self.calls.clone(),
            duration: self.duration.clone(),
        }
    }
}
