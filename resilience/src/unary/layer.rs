use tower::Layer;

use super::Unary;

/// Applies [`Unary`] to a service.
#[derive(Debug, Clone, Copy)]
pub struct UnaryLayer {
    max_response_bytes: usize,
}

impl UnaryLayer {
    /// A layer buffering responses of up to `max_response_bytes`.
    pub fn new(max_response_bytes: usize) -> Self {
        Self { max_response_bytes }
    }
}

impl<S> Layer<S> for UnaryLayer {
    type Service = Unary<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Unary::new(inner, self.max_response_bytes)
    }
}
