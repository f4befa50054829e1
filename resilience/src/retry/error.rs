//! How the retry layer says why it stopped retrying a retryable failure.

/// Response metadata key added to the final status when a retryable failure was not retried,
/// saying why: one of the [`stop`] values.
pub const RETRY_STOP_KEY: &str = "lab-retry-stop";

/// Values of [`RETRY_STOP_KEY`].
pub mod stop {
    /// The configured maximum number of attempts was used.
    pub const MAX_ATTEMPTS: &str = "MAX_ATTEMPTS";
    /// The retry budget had no tokens left.
    pub const RETRY_BUDGET_EXHAUSTED: &str = "RETRY_BUDGET_EXHAUSTED";
    /// The backoff (or pushback) would have slept past the deadline.
    pub const DEADLINE: &str = "DEADLINE";
    /// The server sent a negative or malformed `grpc-retry-pushback-ms`.
    pub const PUSHBACK: &str = "PUSHBACK";
    /// No `idempotency-key`, and the request may have reached the server.
    pub const NOT_IDEMPOTENT: &str = "NOT_IDEMPOTENT";
}
