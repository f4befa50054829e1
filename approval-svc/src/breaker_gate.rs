//! Holds automatic retries back while the circuit breaker towards order-svc is open.
//!
//! A retry during an open period would fail at once with CIRCUIT_OPEN and only burn one of the
//! challenge's attempts, pushing it towards the dead-letter queue during an outage. The breaker
//! reads `Open` until a call arrives after its period (that call becomes the half-open probe),
//! so the gate cannot wait for `state() != Open`: it follows the transitions to learn when the
//! period ends and lets retries through from then on.

use std::sync::Mutex;

use resilience::{BreakerHandle, BreakerState, Transition};
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::time::Instant;

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
