use std::sync::Arc;

use tower::Layer;

use super::GrpcMetrics;

/// Applies [`GrpcMetrics`] to a server's services.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    known_services: Arc<[&'static str]>,
}

impl GrpcMetricsLayer {
    /// Labels calls of `known_services` (full names, e.g. `lab.order.v1.OrderService`) by
    /// service and method; other paths are counted as `unknown`.
    pub fn new(known_services: &[&'static str]) -> Self {
        super::describe();
        Self {
            known_services: Arc::from(known_services),
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics::new(inner, self.known_services.clone())
    }
}
