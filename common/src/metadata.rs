//! Metadata names of the public contract (see `shared/API.md`) and their parsing.
//!
//! The wire-level names the resilience layers read and write too (`idempotency-key`,
//! `grpc-previous-rpc-attempts`, `grpc-timeout`) are defined once in [`resilience::metadata`]
//! and re-exported here, next to the contract's own.

use tonic::metadata::MetadataMap;

use crate::validate::Violations;

pub use resilience::metadata::{GRPC_PREVIOUS_RPC_ATTEMPTS, GRPC_TIMEOUT, IDEMPOTENCY_KEY};

/// Response metadata set to `true` when a stored result is replayed.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Request metadata naming the calling principal; idempotency keys are scoped to it.
pub const CLIENT_ID: &str = "client-id";
/// The `client-id` approval-svc presents to order-svc (order-svc scopes its idempotency keys to
/// it); the checkers look for approval-svc's orders under it.
pub const APPROVAL_CLIENT_ID: &str = "approval-svc";
/// Principal assumed when a request carries no `client-id`.
pub const ANONYMOUS_CLIENT: &str = "anonymous";
/// Request and response metadata carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest accepted idempotency key or client id.
pub const MAX_KEY_LEN: usize = 255;

/// True for 1–255 printable ASCII characters (space to `~`), the contract for keys and ids in
/// metadata.
pub fn is_valid_key(value: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&value.len()) && value.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// Reads the required `idempotency-key`, recording a violation when it is missing or malformed.
pub fn idempotency_key(metadata: &MetadataMap, violations: &mut Violations) -> Option<String> {
    match metadata.get(IDEMPOTENCY_KEY).map(|value| value.to_str()) {
        None => {
            violations.add(IDEMPOTENCY_KEY, "required request metadata is missing");
            None
        }
        Some(Ok(key)) if is_valid_key(key) => Some(key.to_owned()),
        Some(_) => {
            violations.add(IDEMPOTENCY_KEY, "must be 1-255 printable ASCII characters");
            None
        }
    }
}

/// Reads the optional `client-id`, defaulting to [`ANONYMOUS_CLIENT`].
pub fn client_id(metadata: &MetadataMap, violations: &mut Violations) -> String {
    match metadata.get(CLIENT_ID).map(|value| value.to_str()) {
        None => ANONYMOUS_CLIENT.to_owned(),
        Some(Ok(id)) if is_valid_key(id) => id.to_owned(),
        Some(_) => {
            violations.add(CLIENT_ID, "must be 1-255 printable ASCII characters");
            ANONYMOUS_CLIENT.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_short_printable_ascii() {
        assert!(is_valid_key("a"));
        assert!(is_valid_key(&"k".repeat(255)));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key(&"k".repeat(256)));
        assert!(!is_valid_key("tab\there"));
        assert!(!is_valid_key("caf\u{e9}"));
    }

    #[test]
    fn missing_key_is_a_violation() {
        let mut violations = Violations::default();
        assert_eq!(idempotency_key(&MetadataMap::new(), &mut violations), None);
        assert!(violations.into_result().is_err());
    }
}
