//! The status of one attempt cut by the per-attempt timeout.

use std::time::Duration;

use tonic::{Code, Status};

use crate::errors::{reason, with_reason};

/// The status of one attempt cut by the per-attempt timeout.
pub fn attempt_timeout(timeout: Duration) -> Status {
    with_reason(
        Code::DeadlineExceeded,
        reason::ATTEMPT_TIMEOUT,
        format!("attempt timed out after {timeout:?}"),
        [("timeout_ms", timeout.as_millis().to_string())],
    )
}
