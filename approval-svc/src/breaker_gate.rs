//! Limits the completer's rounds while the circuit breaker towards order-svc is not closed.
//!
//! A retry during an open period would fail at once with CIRCUIT_OPEN, so retries wait until the
//! period ends; and while the breaker is open or half-open a round claims no more challenges
//! than its half-open probes, since every call beyond them is refused (such a refusal is not
//! charged to a challenge's budget, but it is wasted work and a wasted lease). The breaker
//! reads `Open` until a call arrives after its period (that call becomes the half-open probe),
//! so the gate cannot wait for `state() != Open`: it follows the transitions to learn when the
//! period ends and lets retries through from then on.

use std::sync::Mutex;

use resilience::{BreakerHandle, BreakerState, Transition};
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::time::Instant;

use crate::completer::RoundLimit;

/// Tells the completer whether due retries should wait.
#[derive(Debug)]
pub struct BreakerGate {
    breaker: BreakerHandle,
    seen: Mutex<Seen>,
}

#[derive(Debug)]
struct Seen {
    transitions: broadcast::Receiver<Transition>,
    // When the current open period ends, as observed (never earlier than the real end).
    open_until: Option<Instant>,
}

impl BreakerGate {
    /// Follows `breaker` from now on.
    pub fn new(breaker: BreakerHandle) -> Self {
        let transitions = breaker.transitions();
        Self {
            breaker,
            seen: Mutex::new(Seen {
                transitions,
                open_until: None,
            }),
        }
    }

    /// What the completer's next round may claim: everything while the breaker is closed;
    /// otherwise at most its half-open probes, and no due retry while it is open (forced, or
    /// its period has not ended).
    pub fn round_limit(&self) -> RoundLimit {
        // Read the transitions every round, so an open period is timed from when it began.
        let paused = self.retries_paused();
        if self.breaker.state() == BreakerState::Closed {
            return RoundLimit::NONE;
        }
        RoundLimit {
            include_retries: !paused,
            max_claims: Some(self.breaker.half_open_probes()),
        }
    }

    /// True while the breaker is forced open, or open and its period has not ended.
    pub fn retries_paused(&self) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            match seen.transitions.try_recv() {
                Ok(transition) => {
                    seen.open_until = match (transition.to, transition.open_for) {
                        (BreakerState::Open, Some(period)) => Some(Instant::now() + period),
                        _ => None,
                    };
                }
                // Missed transitions: rely on the state alone below.
                Err(TryRecvError::Lagged(_)) => seen.open_until = None,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        match self.breaker.state() {
            BreakerState::ForcedOpen => true,
            BreakerState::Open => seen.open_until.is_some_and(|until| Instant::now() < until),
            BreakerState::Closed | BreakerState::HalfOpen => false,
        }
    }
}
