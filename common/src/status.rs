//! `tonic::Status` values with `google.rpc` error details, the one vocabulary both services use
//! for errors: a precise code, `ErrorInfo` (domain [`DOMAIN`], a [`Reason`]) and, for invalid
//! input, `BadRequest` field violations.
//!
//! The domain and the status builder are the resilience crate's ([`resilience::errors`]),
//! re-exported here so the statuses a service makes and the ones its client stack makes are
//! built, and read, the same way.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

pub use resilience::errors::{DOMAIN, with_reason};

use crate::reason::Reason;

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
    details.set_error_info(Reason::InvalidArgument.as_str(), DOMAIN, HashMap::new());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {summary}"),
        details,
    )
}

/// `INTERNAL` without any detail of the cause: callers log the cause, clients never see it.
pub fn internal() -> Status {
    with_reason(Code::Internal, Reason::Internal, "internal error", [])
}

/// `UNAVAILABLE` for a dependency (such as the database) that is down or overloaded; retryable.
pub fn unavailable(reason: Reason, message: impl Into<String>) -> Status {
    with_reason(Code::Unavailable, reason, message, [])
}

/// The `ErrorInfo.reason` of a status, when it has one.
pub fn reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// How a database error whose SQLSTATE means "try again" should be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryableSqlState {
    /// The transaction lost a race (serialization failure, deadlock, lock timeout) and was rolled
    /// back: retry the whole operation. Answered as ABORTED `TRANSACTION_CONFLICT`.
    Conflict,
    /// The server cannot serve now (connection lost, shutting down, out of resources, read-only
    /// after a failover, statement cancelled): retry later. Answered as UNAVAILABLE
    /// `DATABASE_UNAVAILABLE`.
    Unavailable,
}

/// Classifies a SQLSTATE (PostgreSQL appendix A): `Some` when the failed statement wrote nothing
/// and the same request may succeed if sent again, `None` for everything else (bugs, violated
/// constraints, bad data), which stays INTERNAL.
pub fn retryable_class(sqlstate: &str) -> Option<RetryableSqlState> {
    let class = sqlstate.get(..2)?;
    match (class, sqlstate) {
        // 40002: a deferred constraint failed at commit; the same request fails again.
        ("40", "40002") => None,
        // Transaction rollback: 40000, 40001 serialization, 40P01 deadlock, 40003 completion
        // unknown. 55P03 lock_not_available: lock_timeout or NOWAIT lost to a concurrent holder.
        ("40", _) | (_, "55P03") => Some(RetryableSqlState::Conflict),
        // 08 connection exception; 53 insufficient resources (disk, memory, connections).
        ("08" | "53", _) => Some(RetryableSqlState::Unavailable),
        // 25006 read_only_sql_transaction: after a failover the pool reached a standby or a
        // demoted primary; once it reconnects to the new primary the write succeeds.
        (_, "25006") => Some(RetryableSqlState::Unavailable),
        // 57014 query_canceled (statement timeout, pg_cancel_backend), 57P01 admin shutdown,
        // 57P02 crash shutdown, 57P03 cannot connect now, 57P04 database dropped, 57P05 idle
        // session timeout: the statement was rolled back with its transaction.
        (_, "57014") => Some(RetryableSqlState::Unavailable),
        ("57", code) if code.starts_with("57P") => Some(RetryableSqlState::Unavailable),
        _ => None,
    }
}

/// The status for a database error. Retryable conditions (pool exhausted or closed, connection
/// lost, and every SQLSTATE [`retryable_class`] accepts) become UNAVAILABLE
/// `DATABASE_UNAVAILABLE` or ABORTED `TRANSACTION_CONFLICT`, so resilient clients retry them;
/// anything else is a bare INTERNAL. The cause is logged here and never sent.
pub fn database(error: &sqlx::Error) -> Status {
    let class = match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => Some(RetryableSqlState::Unavailable),
        sqlx::Error::Database(db) => db.code().as_deref().and_then(retryable_class),
        _ => None,
    };
    match class {
        Some(RetryableSqlState::Unavailable) => {
            tracing::warn!(%error, "database unavailable");
            unavailable(
                Reason::DatabaseUnavailable,
                "the database is unavailable; retry",
            )
        }
        Some(RetryableSqlState::Conflict) => {
            tracing::info!(%error, "transaction conflict");
            with_reason(
                Code::Aborted,
                Reason::TransactionConflict,
                "conflicting transaction; retry",
                [],
            )
        }
        None => {
            tracing::error!(%error, "database error");
            internal()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real PostgreSQL error with `sqlstate`, raised by the server itself.
    async fn raised(pool: &sqlx::PgPool, sqlstate: &str) -> sqlx::Error {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DO $$ BEGIN RAISE EXCEPTION 'secret detail' USING ERRCODE = '{sqlstate}'; END $$"
        )))
        .execute(pool)
        .await
        .expect_err("the DO block raises")
    }

    /// Every SQLSTATE class that means "try again" becomes a retryable code, checked on errors a
    /// real server raised; client mistakes and bugs stay INTERNAL. No status carries the
    /// database's message.
    #[tokio::test]
    async fn database_errors_from_a_real_server_map_by_sqlstate() {
        let url = crate::postgres::scratch_database().await.unwrap();
        let pool = crate::postgres::connect(&url, 1).await.unwrap();
        let table = [
            // connection exceptions
            ("08000", Code::Unavailable),
            ("08003", Code::Unavailable),
            ("08006", Code::Unavailable),
            ("08001", Code::Unavailable),
            ("08004", Code::Unavailable),
            // read-only transaction: a write reached a standby, or a primary demoted by failover
            ("25006", Code::Unavailable),
            // transaction rollback: serialization failure, deadlock, outcome unknown
            ("40000", Code::Aborted),
            ("40001", Code::Aborted),
            ("40P01", Code::Aborted),
            ("40003", Code::Aborted),
            // insufficient resources
            ("53000", Code::Unavailable),
            ("53100", Code::Unavailable),
            ("53200", Code::Unavailable),
            ("53300", Code::Unavailable),
            ("53400", Code::Unavailable),
            // lock not available (lock_timeout / NOWAIT)
            ("55P03", Code::Aborted),
            // operator intervention: cancelled statement, shutdowns, cannot connect now
            ("57014", Code::Unavailable),
            ("57P01", Code::Unavailable),
            ("57P02", Code::Unavailable),
            ("57P03", Code::Unavailable),
            ("57P05", Code::Unavailable),
            // not "try again": bugs and violated constraints
            ("23505", Code::Internal),
            ("23514", Code::Internal),
            ("40002", Code::Internal),
            ("42P01", Code::Internal),
            ("25P02", Code::Internal),
            ("22003", Code::Internal),
            ("XX000", Code::Internal),
        ];
        let mut wrong = Vec::new();
        for (sqlstate, expected) in table {
            let error = raised(&pool, sqlstate).await;
            let status = database(&error);
            assert!(
                !status.message().contains("secret"),
                "{sqlstate}: database message leaked"
            );
            if status.code() != expected {
                wrong.push(format!(
                    "{sqlstate}: {:?}, want {expected:?}",
                    status.code()
                ));
            }
        }
        assert!(wrong.is_empty(), "mapped wrongly: {wrong:#?}");
        pool.close().await;
    }

    #[test]
    fn retryable_classes_by_sqlstate() {
        use RetryableSqlState::{Conflict, Unavailable};
        let table = [
            ("08000", Some(Unavailable)),
            ("08P01", Some(Unavailable)),
            ("25006", Some(Unavailable)),
            ("25001", None),
            ("25P02", None),
            ("40000", Some(Conflict)),
            ("40001", Some(Conflict)),
            ("40P01", Some(Conflict)),
            ("40003", Some(Conflict)),
            ("40002", None),
            ("53000", Some(Unavailable)),
            ("53100", Some(Unavailable)),
            ("53200", Some(Unavailable)),
            ("53300", Some(Unavailable)),
            ("53400", Some(Unavailable)),
            ("55P03", Some(Conflict)),
            ("55000", None),
            ("57014", Some(Unavailable)),
            ("57000", None),
            ("57P01", Some(Unavailable)),
            ("57P02", Some(Unavailable)),
            ("57P03", Some(Unavailable)),
            ("57P04", Some(Unavailable)),
            ("57P05", Some(Unavailable)),
            ("23505", None),
            ("22003", None),
            ("42P01", None),
            ("XX000", None),
            ("LB409", None),
            ("", None),
            ("5", None),
        ];
        for (sqlstate, expected) in table {
            assert_eq!(retryable_class(sqlstate), expected, "{sqlstate:?}");
        }
    }

    #[test]
    fn connection_level_failures_are_unavailable() {
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()),
        ] {
            assert_eq!(database(&error).code(), Code::Unavailable, "{error:?}");
        }
        assert_eq!(
            database(&sqlx::Error::RowNotFound).code(),
            Code::Internal,
            "a bug is not retryable"
        );
    }

    /// 25006 as a failover produces it: a write in a read-only transaction.
    #[tokio::test]
    async fn a_write_in_a_read_only_transaction_is_unavailable() {
        let url = crate::postgres::scratch_database().await.unwrap();
        let pool = crate::postgres::connect(&url, 1).await.unwrap();
        let mut connection = pool.acquire().await.unwrap();
        sqlx::query("SET default_transaction_read_only = on")
            .execute(&mut *connection)
            .await
            .unwrap();
        let error = sqlx::query("CREATE TABLE written (id int)")
            .execute(&mut *connection)
            .await
            .unwrap_err();
        let sqlstate = error.as_database_error().and_then(|db| db.code());
        assert_eq!(sqlstate.as_deref(), Some("25006"));
        let status = database(&error);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(reason(&status).as_deref(), Some("DATABASE_UNAVAILABLE"));
        drop(connection);
        pool.close().await;
    }
}
