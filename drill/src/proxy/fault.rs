//! [`Fault`]: what the proxy does to traffic, and its one-line text form.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What the proxy does to the connections that pass through it. One fault is active at a time;
/// changing it takes effect at once, on new and on live connections.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Fault {
    /// Pass everything through unchanged (text form `none`; `clear` also parses to it).
    #[default]
    None,
    /// Hold every chunk of the response direction (upstream → client) for `base` ± a uniform
    /// `jitter`, keeping byte order, like a slow server: requests arrive on time, so the upstream
    /// does the work and its answer arrives late. Text: `latency 200ms 50ms`.
    Latency {
        /// Delay added to every response chunk.
        base: Duration,
        /// Largest deviation from `base`, either way (never below zero).
        jitter: Duration,
    },
    /// Accept connections but never answer: bytes in both directions are swallowed. Live
    /// connections go silent too; every connection that swallowed bytes is reset when the fault
    /// changes (its HTTP/2 framing is broken). Text: `blackhole`.
    Blackhole,
    /// Reset (TCP RST) every live connection and every new one as soon as it is accepted.
    /// Text: `reset`.
    Reset,
    /// Forward at most `bytes` bytes of response per connection, then reset it. Text: `cut 100`.
    CutAfter {
        /// Response bytes forwarded on each connection before it is reset.
        bytes: u64,
    },
    /// Lose responses after the upstream did the work: when the upstream starts a response
    /// (the first HTTP/2 HEADERS frame of a stream), reset the connection instead of forwarding
    /// it, with this probability (1.0 = every response). Every call in flight on that connection
    /// is lost with it. Text: `lose 0.5`.
    LoseResponses {
        /// Probability, 0.0–1.0, that a response is lost.
        probability: f64,
    },
    /// Answer every gRPC call with `UNAVAILABLE` from the proxy itself (the upstream is not
    /// contacted), optionally with `grpc-retry-pushback-ms`. Live connections are reset so that
    /// clients reconnect to the responder. Text: `unavailable` or `unavailable 100ms`.
    Unavailable {
        /// Sent as `grpc-retry-pushback-ms` when set.
        pushback: Option<Duration>,
    },
    /// Stop listening: connection attempts are refused (ECONNREFUSED) and live connections are
    /// reset; the proxy listens again on the same address when the fault changes.
    /// Text: `refuse`.
    Refuse,
}

impl Fault {
    /// True when traffic passes unchanged.
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One token per duration (humantime would write `1s 500ms`, two words).
        let d = |duration: &Duration| {
            if duration.subsec_nanos().is_multiple_of(1_000_000) {
                format!("{}ms", duration.as_millis())
            } else {
                format!("{}us", duration.as_micros())
            }
        };
        match self {
            Self::None => write!(f, "none"),
            Self::Latency { base, jitter } => write!(f, "latency {} {}", d(base), d(jitter)),
            Self::Blackhole => write!(f, "blackhole"),
            Self::Reset => write!(f, "reset"),
            Self::CutAfter { bytes } => write!(f, "cut {bytes}"),
            Self::LoseResponses { probability } => write!(f, "lose {probability}"),
            Self::Unavailable { pushback: None } => write!(f, "unavailable"),
            Self::Unavailable {
                pushback: Some(pushback),
            } => write!(f, "unavailable {}", d(pushback)),
            Self::Refuse => write!(f, "refuse"),
        }
    }
}

/// Why a fault's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseFaultError(String);

impl FromStr for Fault {
    type Err = ParseFaultError;

    /// Parses the text forms documented on each variant, e.g. `latency 1s 100ms`, `cut 64`,
    /// `lose 0.25`, `unavailable 50ms`, `clear`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let duration = |word: &str| {
            humantime::parse_duration(word)
                .map_err(|error| ParseFaultError(format!("bad duration {word:?}: {error}")))
        };
        let fault = match words.as_slice() {
            ["none" | "clear"] => Self::None,
            ["latency", base] => Self::Latency {
                base: duration(base)?,
                jitter: Duration::ZERO,
            },
            ["latency", base, jitter] => Self::Latency {
                base: duration(base)?,
                jitter: duration(jitter)?,
            },
            ["blackhole"] => Self::Blackhole,
            ["reset"] => Self::Reset,
            ["cut", bytes] => Self::CutAfter {
                bytes: bytes
                    .parse()
                    .map_err(|_| ParseFaultError(format!("bad byte count {bytes:?}")))?,
            },
            ["lose"] => Self::LoseResponses { probability: 1.0 },
            ["lose", probability] => {
                let probability: f64 = probability
                    .parse()
                    .ok()
                    .filter(|p: &f64| (0.0..=1.0).contains(p))
                    .ok_or_else(|| {
                        ParseFaultError(format!("bad probability {probability:?} (0.0-1.0)"))
                    })?;
                Self::LoseResponses { probability }
            }
            ["unavailable"] => Self::Unavailable { pushback: None },
            ["unavailable", pushback] => Self::Unavailable {
                pushback: Some(duration(pushback)?),
            },
            ["refuse"] => Self::Refuse,
            [] => return Err(ParseFaultError("empty fault".into())),
            _ => {
                return Err(ParseFaultError(format!(
                    "unknown fault {text:?}; one of: none|clear, latency BASE [JITTER], \
                     blackhole, reset, cut BYTES, lose [PROBABILITY], unavailable [PUSHBACK], \
                     refuse"
                )));
            }
        };
        Ok(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for text in [
            "none",
            "latency 200ms 50ms",
            "latency 1500ms 100ms",
            "latency 1s 250us",
            "blackhole",
            "reset",
            "cut 100",
            "lose 0.5",
            "lose 1",
            "unavailable",
            "unavailable 100ms",
            "refuse",
        ] {
            let fault: Fault = text.parse().unwrap();
            assert_eq!(fault.to_string().parse::<Fault>().unwrap(), fault, "{text}");
        }
        assert_eq!("clear".parse::<Fault>().unwrap(), Fault::None);
        assert_eq!(
            "latency 1s".parse::<Fault>().unwrap(),
            Fault::Latency {
                base: Duration::from_secs(1),
                jitter: Duration::ZERO
            }
        );
        assert_eq!(
            "lose".parse::<Fault>().unwrap(),
            Fault::LoseResponses { probability: 1.0 }
        );
    }

    #[test]
    fn nonsense_is_refused() {
        for text in ["", "latency", "latency soon", "cut -1", "lose 2", "explode"] {
            assert!(text.parse::<Fault>().is_err(), "{text}");
        }
    }
}
