//! The status of a logical call whose overall budget is spent.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};

use crate::errors::{reason, with_reason};

/// The status of a logical call whose overall budget is spent.
pub fn deadline_exceeded(budget: Duration) -> Status {
    with_reason(
        Code::DeadlineExceeded,
        format!("deadline of {budget:?} exceeded"),
        reason::DEADLINE_EXCEEDED,
        HashMap::from([("budget_ms".to_owned(), budget.as_millis().to_string())]),
    )
}
