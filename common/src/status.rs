//! `tonic::Status` values with `google.rpc` error details, the one vocabulary both services use
//! for errors: a precise code, `ErrorInfo` (domain [`ERROR_DOMAIN`], an UPPER_SNAKE reason) and,
//! for invalid input, `BadRequest` field violations.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `ErrorInfo.domain` of every error this project returns.
pub const ERROR_DOMAIN: &str = "lab";

/// A status with an `ErrorInfo` detail carrying `reason` and `metadata`.
pub fn with_reason<'a>(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (&'a str, String)>,
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// `INVALID_ARGUMENT` with `BadRequest` field violations and `ErrorInfo` reason
/// `INVALID_ARGUMENT`.
pub fn invalid_argument(violations: Vec<(String, String)>) -> Status {
    let summary = violations
        .iter()
        .map(|(field, description)| format!("{field} {description}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::with_bad_request(
        violations
            .into_iter()
            .map(|(field, description)| FieldViolation::new(field, description))
            .collect::<Vec<_>>(),
    );
    details.set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {summary}"),
        details,
    )
}

/// `INTERNAL` without any detail of the cause: callers log the cause, clients never see it.
pub fn internal() -> Status {
    with_reason(Code::Internal, "INTERNAL", "internal error", [])
}

/// `UNAVAILABLE` for a dependency (such as the database) that is down or overloaded; retryable.
pub fn unavailable(reason: &str, message: impl Into<String>) -> Status {
    with_reason(Code::Unavailable, reason, message, [])
}

/// The `ErrorInfo.reason` of a status, when it has one.
pub fn reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// The status for a database error. Retryable conditions (pool exhausted or closed, connection
/// lost, server shutting down) become UNAVAILABLE `DATABASE_UNAVAILABLE`, and serialization
/// failures, deadlocks and lock timeouts ABORTED `TRANSACTION_CONFLICT`, so resilient clients
/// retry them; anything else is a bare INTERNAL. The cause is logged here and never sent.
pub fn database(error: &sqlx::Error) -> Status {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            tracing::warn!(%error, "database unavailable");
            unavailable("DATABASE_UNAVAILABLE", "the database is unavailable; retry")
        }
        sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("40001" | "40P01" | "55P03")) =>
        {
            tracing::info!(%error, "transaction conflict");
            with_reason(
                Code::Aborted,
                "TRANSACTION_CONFLICT",
                "conflicting transaction; retry",
                [],
            )
        }
        sqlx::Error::Database(db)
            if db
                .code()
                .as_deref()
                .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")) =>
        {
            tracing::warn!(%error, "database connection lost");
            unavailable("DATABASE_UNAVAILABLE", "the database is unavailable; retry")
        }
        _ => {
            tracing::error!(%error, "database error");
            internal()
        }
    }
}
