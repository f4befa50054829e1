//! The status of a logical call whose overall budget is spent.

use std::time::Duration;

use tonic::{Code, Status};

use crate::errors::{reason, with_reason};

/// The status of a logical call whose overall budget is spent.
pub fn deadline_exceeded(budget: Duration) -> Status {
    with_reason(
        Code::DeadlineExceeded,
        reason::DEADLINE_EXCEEDED,
        format!("deadline of {budget:?} exceeded"),
        [("budget_ms", budget.as_millis().to_string())],
    )
}
