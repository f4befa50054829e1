//! Names and codecs of the gRPC metadata the layers read and write (API.md, gRFC A6).

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tonic::{Code, Status};

/// Request metadata: the call's remaining budget, `TimeoutValue TimeoutUnit` (PROTOCOL-HTTP2).
pub const GRPC_TIMEOUT: &str = "grpc-timeout";
/// Request metadata: how many attempts preceded this one; absent on the first attempt.
pub const GRPC_PREVIOUS_RPC_ATTEMPTS: &str = "grpc-previous-rpc-attempts";
/// Response metadata: the server asks the client to wait this many milliseconds before retrying;
/// negative or malformed means "do not retry".
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";
/// Request metadata: the caller's idempotency key, sent unchanged on every attempt.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

const MAX_TIMEOUT_DIGITS: u128 = 99_999_999;

/// Encodes a duration as a `grpc-timeout` value, in the finest unit that fits the protocol's
/// eight digits. Rounds down: the server must not wait longer than the client does.
pub fn encode_timeout(timeout: Duration) -> HeaderValue {
    let nanos = timeout.as_nanos();
    let (value, unit) = [
        (1u128, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ]
    .into_iter()
    .map(|(per, unit)| (nanos / per, unit))
    .find(|(value, _)| *value <= MAX_TIMEOUT_DIGITS)
    .unwrap_or((MAX_TIMEOUT_DIGITS, 'H'));
    // Written by hand: this runs twice per call, and `format!` would allocate a String first.
    let mut text = [0u8; 9];
    let mut start = 8;
    text[8] = unit as u8;
    let mut rest = value;
    loop {
        start -= 1;
        text[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&text[start..]).expect("digits and a unit letter are ASCII")
}

/// Decodes a `grpc-timeout` value; `None` when malformed.
pub fn decode_timeout(value: &HeaderValue) -> Option<Duration> {
    decode_timeout_text(value.to_str().ok()?)
}

/// Decodes the text of a `grpc-timeout` value (at most eight digits and a unit among
/// `H M S m u n`), e.g. from a server's `tonic::metadata::MetadataMap`; `None` when malformed.
pub fn decode_timeout_text(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    // Eight digits of hours fit a u64 of seconds; checked all the same, so a future change to
    // the digit limit cannot turn into an overflow panic.
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// What a `grpc-retry-pushback-ms` value asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// No pushback: use the client's own backoff.
    Absent,
    /// Retry after exactly this long (no jitter).
    After(Duration),
    /// Negative or malformed: do not retry.
    Stop,
}

/// Reads `grpc-retry-pushback-ms` from a status' metadata.
pub fn pushback(status: &Status) -> Pushback {
    let Some(value) = status.metadata().get(GRPC_RETRY_PUSHBACK_MS) else {
        return Pushback::Absent;
    };
    match value.to_str().ok().map(str::trim).map(str::parse::<i64>) {
        Some(Ok(ms)) if ms >= 0 => Pushback::After(Duration::from_millis(ms as u64)),
        _ => Pushback::Stop,
    }
}

/// The status of a Trailers-Only response (gRPC status in the headers), when not OK.
pub fn error_status_in(headers: &HeaderMap) -> Option<Status> {
    let code = headers.get(Status::GRPC_STATUS)?;
    if Code::from_bytes(code.as_bytes()) == Code::Ok {
        return None;
    }
    Status::from_header_map(headers)
}

/// The gRPC code a response's headers carry, `Ok` when none is present yet.
pub(crate) fn code_in(headers: &HeaderMap) -> Code {
    headers
        .get(Status::GRPC_STATUS)
        .map_or(Code::Ok, |value| Code::from_bytes(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_trip_within_unit_precision() {
        for (duration, text) in [
            (Duration::from_millis(300), "300000u"),
            (Duration::from_nanos(1500), "1500n"),
            (Duration::from_secs(2), "2000000u"),
            (Duration::from_secs(1000), "1000000m"),
            (Duration::ZERO, "0n"),
        ] {
            let value = encode_timeout(duration);
            assert_eq!(value, text);
            assert_eq!(decode_timeout(&value), Some(duration));
        }
        let long = Duration::from_secs(100 * 86_400 * 365);
        let decoded = decode_timeout(&encode_timeout(long)).unwrap();
        assert!(decoded <= long && long - decoded < Duration::from_secs(3600));
    }

    #[test]
    fn the_largest_timeouts_decode_without_overflow() {
        assert_eq!(
            decode_timeout(&HeaderValue::from_static("99999999H")),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(
            decode_timeout_text("99999999M"),
            Some(Duration::from_secs(99_999_999 * 60))
        );
        for (text, duration) in [
            ("2S", Duration::from_secs(2)),
            ("1H", Duration::from_secs(3600)),
            ("3M", Duration::from_secs(180)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ] {
            assert_eq!(decode_timeout_text(text), Some(duration), "{text}");
        }
    }

    #[test]
    fn malformed_timeouts_are_rejected() {
        for bad in ["", "m", "10", "123456789m", "10x", "-5m", "1.5S"] {
            assert_eq!(
                decode_timeout(&HeaderValue::from_static(bad)),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn pushback_values() {
        let with = |v: &'static str| {
            let mut status = Status::unavailable("x");
            status
                .metadata_mut()
                .insert(GRPC_RETRY_PUSHBACK_MS, v.parse().unwrap());
            pushback(&status)
        };
        assert_eq!(with("150"), Pushback::After(Duration::from_millis(150)));
        assert_eq!(with("0"), Pushback::After(Duration::ZERO));
        assert_eq!(with("-1"), Pushback::Stop);
        assert_eq!(with("soon"), Pushback::Stop);
        assert_eq!(pushback(&Status::unavailable("x")), Pushback::Absent);
    }
}
