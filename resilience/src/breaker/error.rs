//! The status of a call the breaker refused, and how to recognise one.

use tonic::{Code, Status};

use crate::errors::{LocalKind, local, reason, reason_of, with_reason};

/// The status of a call refused by an open breaker.
pub fn circuit_open(client: &str) -> Status {
    local(
        LocalKind::CircuitOpen,
        with_reason(
            Code::Unavailable,
            reason::CIRCUIT_OPEN,
            "circuit breaker is open",
            [("client", client.to_owned())],
        ),
    )
}

/// Whether `status` is a breaker rejection ([`reason::CIRCUIT_OPEN`]).
pub fn is_circuit_open(status: &Status) -> bool {
    status.code() == Code::Unavailable && reason_of(status).as_deref() == Some(reason::CIRCUIT_OPEN)
}
