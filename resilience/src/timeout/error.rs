//! The status of one attempt cut by the per-attempt timeout.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};

use crate::errors::{reason, with_reason};

/// The status of one attempt cut by the per-attempt timeout.
pub fn attempt_timeout(timeout: Duration) -> Status {
    with_reason(
        Code::DeadlineExceeded,
        format!("attempt timed out after {timeout:?}"),
        reason::ATTEMPT_TIMEOUT,
        HashMap::from([("timeout_ms".to_owned(), timeout.as_millis().to_string())]),
    )
}
