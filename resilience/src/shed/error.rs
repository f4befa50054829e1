//! The status of an attempt shed by the concurrency limit.

use tonic::{Code, Status};

use crate::errors::{LocalKind, local, reason, with_reason};

/// The status of an attempt shed by the concurrency limit.
pub fn load_shed(limit: usize) -> Status {
    local(
        LocalKind::LoadShed,
        with_reason(
            Code::ResourceExhausted,
            reason::LOAD_SHED,
            format!("more than {limit} calls in flight"),
            [("limit", limit.to_string())],
        ),
    )
}
