//! The status of an attempt shed by the concurrency limit.

use std::collections::HashMap;

use tonic::{Code, Status};

use crate::errors::{LocalKind, local, reason, with_reason};

/// The status of an attempt shed by the concurrency limit.
pub fn load_shed(limit: usize) -> Status {
    local(
        LocalKind::LoadShed,
        with_reason(
            Code::ResourceExhausted,
            format!("more than {limit} calls in flight"),
            reason::LOAD_SHED,
            HashMap::from([("limit".to_owned(), limit.to_string())]),
        ),
    )
}
