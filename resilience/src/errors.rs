//! The statuses this crate produces and the failure classification the layers share.
//!
//! The statuses the layers make when they refuse a call ([`circuit_open`], [`load_shed`],
//! [`deadline_exceeded`], [`attempt_timeout`]) and the retry layer's [`stop`] reasons are
//! re-exported here from one leaf module, next to the reason vocabulary and the classification
//! every layer reads.
//!
//! To tell why a call failed, read the `ErrorInfo` reason:
//!
//! ```
//! use resilience::errors::{self, reason};
//! # let status = errors::circuit_open("order-svc");
//! if errors::reason_of(&status).as_deref() == Some(reason::CIRCUIT_OPEN) {
//!     // the breaker refused the call without touching the network
//! }
//! assert_eq!(status.code(), tonic::Code::Unavailable);
//! ```

use std::error::Error as StdError;
use std::fmt;

use tonic::{Code, Status};

use crate::BoxError;
pub use crate::status::{DOMAIN, reason, reason_of, with_reason};
pub(crate) use crate::status::{LocalKind, local_kind};

pub use crate::status::{
    RETRY_STOP_KEY, attempt_timeout, circuit_open, deadline_exceeded, is_circuit_open, load_shed,
    stop,
};

/// Marks the final status of a call one of whose earlier attempts may have reached the
/// server's application code (it was not [`surely_unsent`]): whatever the last attempt
/// answered, the work of that earlier one may be done. Like [`Local`], it rides in the status'
/// `source()`, so only this process can set it.
#[derive(Debug)]
struct MaybeDelivered {
    status: Status,
}

impl fmt::Display for MaybeDelivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (an earlier attempt may have been delivered)",
            self.status
        )
    }
}

impl StdError for MaybeDelivered {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.status)
    }
}

pub(crate) fn mark_maybe_delivered(status: Status) -> Status {
    Status::from_error(Box::new(MaybeDelivered { status }))
}

/// Whether an earlier attempt of the call that ended with `status` may have reached the
/// server's application code (the retry layer saw a timeout, a lost reply, a reset after the
/// request was written, or any answer from the server before this one). Then the call's
/// outcome is unknown whatever `status` says: a non-idempotent effect may have happened. Set
/// only by this crate's retry layer; a server cannot send it.
pub fn earlier_attempt_maybe_delivered(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(e) = source {
        if e.is::<MaybeDelivered>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether the whole call that ended with `status` never left this process: its last attempt
/// was refused by a local layer (open breaker, load shed) and no earlier attempt may have been
/// delivered. Such a call tells nothing about the server and changed nothing there.
pub fn never_left_the_process(status: &Status) -> bool {
    local_kind(status).is_some() && !earlier_attempt_maybe_delivered(status)
}

/// Whether `status` is a refusal of this process' own circuit breaker for a call that never
/// left it (unlike [`is_circuit_open`], which reads the reason a server could also send).
pub fn refused_by_local_breaker(status: &Status) -> bool {
    local_kind(status) == Some(LocalKind::CircuitOpen)
}

/// The status inside a layer error; `None` for an error that carries none (e.g. a raw transport
/// error from a channel used without the [`crate::unary`] layer).
pub fn status_of(err: &BoxError) -> Option<&Status> {
    err.downcast_ref::<Status>()
}

/// The gRPC code of a layer error, as tonic's client would report it.
pub fn code_of(err: &BoxError) -> Code {
    match status_of(err) {
        Some(status) => status.code(),
        None if find_in_chain::<tonic::ConnectError>(err.as_ref()) => Code::Unavailable,
        None => Code::Unknown,
    }
}

/// Turns any inner error into a boxed [`Status`], keeping the original as its source.
///
/// A connection that broke under the call (reset, closed, I/O error) is UNAVAILABLE, as gRPC's
/// status-code guide prescribes ("some data transmitted before connection breaks"); tonic would
/// report UNKNOWN, which nothing retries, though a reply lost this way is exactly what the
/// idempotency key is for. Whether it may be re-sent is still decided by [`surely_unsent`] and
/// the idempotency rule, since the request may have been processed.
pub(crate) fn into_status_error(err: impl Into<BoxError>) -> BoxError {
    let err: BoxError = err.into();
    if err.is::<Status>() {
        return err;
    }
    let connection_broke =
        find_in_chain::<std::io::Error>(err.as_ref()) || find_in_chain::<h2::Error>(err.as_ref());
    let unsent = surely_unsent(&err);
    let status = Status::from_error(err);
    // A request the connection never took (it closed, or the server's GOAWAY refused the
    // stream) reads CANCELLED, UNKNOWN or INTERNAL from tonic; it is UNAVAILABLE, and still surely unsent,
    // so the retry layer sends it elsewhere.
    if unsent && status.code() != Code::Unavailable {
        let mut unavailable =
            Status::unavailable(format!("the request was not sent: {}", status.message()));
        unavailable.set_source(std::sync::Arc::new(status));
        return Box::new(unavailable);
    }
    if status.code() == Code::Unknown && connection_broke {
        return Box::new(Status::unavailable(format!(
            "connection to the server broke: {}",
            status.message()
        )));
    }
    Box::new(status)
}

/// Codes a retry may fix (DESIGN.md): the server was unreachable, overloaded, too slow for one
/// attempt, or lost a concurrency race.
pub fn is_retryable_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
    )
}

/// Codes that say the server (or the path to it) is unhealthy; the breaker counts only these.
pub fn is_server_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
    )
}

/// Whether the failed attempt surely never reached the server's application code, so even a
/// non-idempotent call may be sent again:
/// - refused by a local layer (load shed, open breaker);
/// - the connection could not be established (`tonic::ConnectError`);
/// - the server refused the HTTP/2 stream (`RST_STREAM` `REFUSED_STREAM`, which RFC 9113 §8.7
///   defines as "not processed"), or its graceful `GOAWAY` (`NO_ERROR`) named a last stream
///   below this one (RFC 9113 §6.8: such streams were not processed);
/// - the connection closed before it took the request (hyper's "canceled": the request never
///   reached the connection).
///
/// Everything else — a gRPC status from the server, a timeout, a reset or closed connection
/// after the request was written — may have been processed.
pub fn surely_unsent(err: &BoxError) -> bool {
    if let Some(status) = status_of(err)
        && local_kind(status).is_some()
    {
        return true;
    }
    let mut source: Option<&(dyn StdError + 'static)> = Some(err.as_ref());
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && h2.is_remote()
            && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR)))
        {
            return true;
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        source = e.source();
    }
    false
}

fn find_in_chain<T: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<T>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_statuses_keep_code_details_and_marker() {
        let status = circuit_open("c");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(is_circuit_open(&status));
        assert_eq!(local_kind(&status), Some(LocalKind::CircuitOpen));

        let shed = load_shed(3);
        assert_eq!(shed.code(), Code::ResourceExhausted);
        assert_eq!(reason_of(&shed).as_deref(), Some(reason::LOAD_SHED));
        assert!(surely_unsent(&(Box::new(shed) as BoxError)));
    }

    #[test]
    fn the_maybe_delivered_marker_keeps_the_status_and_the_local_kind_below_it() {
        let refused = circuit_open("c");
        assert!(never_left_the_process(&refused));
        assert!(refused_by_local_breaker(&refused));
        let marked = mark_maybe_delivered(refused);
        assert_eq!(marked.code(), Code::Unavailable);
        assert_eq!(reason_of(&marked).as_deref(), Some(reason::CIRCUIT_OPEN));
        assert!(earlier_attempt_maybe_delivered(&marked));
        assert!(
            !never_left_the_process(&marked),
            "an earlier attempt left the process"
        );
        assert!(!earlier_attempt_maybe_delivered(&Status::internal("x")));
    }

    #[test]
    fn a_remote_status_is_never_local() {
        let remote = with_reason(Code::Unavailable, reason::CIRCUIT_OPEN, "x", []);
        let mut headers = http::HeaderMap::new();
        remote.add_header(&mut headers).unwrap();
        let parsed = Status::from_header_map(&headers).unwrap();
        assert_eq!(local_kind(&parsed), None);
        assert!(!never_left_the_process(&parsed) && !refused_by_local_breaker(&parsed));
        assert!(!earlier_attempt_maybe_delivered(&parsed));
        assert!(!surely_unsent(&(Box::new(parsed) as BoxError)));
    }

    #[test]
    fn a_broken_connection_is_unavailable_but_maybe_sent() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let wrapped = into_status_error(reset);
        assert_eq!(code_of(&wrapped), Code::Unavailable);
        assert!(
            !surely_unsent(&wrapped),
            "the request may have been processed"
        );
        let other = into_status_error(std::fmt::Error);
        assert_eq!(
            code_of(&other),
            Code::Unknown,
            "only transport failures are reclassified"
        );
    }

    #[test]
    fn connect_errors_are_unsent_and_unavailable() {
        let err: BoxError = Box::new(tonic::ConnectError("refused".into()));
        assert_eq!(code_of(&err), Code::Unavailable);
        assert!(surely_unsent(&err));
        let wrapped = into_status_error(err);
        assert_eq!(code_of(&wrapped), Code::Unavailable);
        assert!(surely_unsent(&wrapped));
    }

    #[test]
    fn classification_tables() {
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::NotFound,
        ] {
            assert!(!is_retryable_code(code));
            assert!(!is_server_failure(code));
        }
        assert!(!is_server_failure(Code::AlreadyExists));
        assert!(is_retryable_code(Code::Aborted) && !is_server_failure(Code::Aborted));
        assert!(is_server_failure(Code::Internal) && !is_retryable_code(Code::Internal));
    }
}
