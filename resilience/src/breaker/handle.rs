//! Shared breaker state and the handle that observes and steers it.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::state::{BreakerState, BreakerStats, Machine, Outcome, Ticket, Transition};
use crate::backoff::JitterRng;
use crate::config::BreakerConfig;
use crate::telemetry;

struct Metrics {
    state: metrics::Gauge,
    rejections: metrics::Counter,
    to: [metrics::Counter; 4],
}

pub(crate) struct Shared {
    machine: Mutex<Machine>,
    client: String,
    state_tx: watch::Sender<BreakerState>,
    events: broadcast::Sender<Transition>,
    metrics: Metrics,
}

impl Shared {
    pub(crate) fn new(config: &BreakerConfig, client: &str, rng: JitterRng) -> Arc<Self> {
        let machine = Machine::new(
            super::policy::from_config(config, rng),
            config.half_open_probes,
            config.open_cap,
        );
        let metrics = Metrics {
            state: telemetry::breaker_state(client),
            rejections: telemetry::plain(telemetry::BREAKER_REJECTIONS, client),
            to: [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::ForcedOpen,
            ]
            .map(|s| telemetry::breaker_transition(client, s.as_str())),
        };
        metrics.state.set(BreakerState::Closed.gauge_value());
        Arc::new(Self {
            machine: Mutex::new(machine),
            client: client.to_owned(),
            state_tx: watch::Sender::new(BreakerState::Closed),
            events: broadcast::Sender::new(64),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        // The machine has no invariant a panicking holder could break half-way that matters
        // more than staying available.
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn client(&self) -> &str {
        &self.client
    }

    pub(crate) fn acquire(self: &Arc<Self>) -> Option<Permit> {
        let (ticket, transition) = self.lock().acquire(Instant::now());
        self.publish(transition);
        match ticket {
            Some(ticket) => Some(Permit {
                shared: self.clone(),
                ticket: Some(ticket),
            }),
            None => {
                self.metrics.rejections.increment(1);
                None
            }
        }
    }

    /// Opens for `period`: no endpoint of the balanced set is admitted.
    pub(crate) fn trip(&self, period: Duration) {
        let transition = self.lock().trip(Instant::now(), period);
        self.publish(transition);
    }

    /// Closes an open breaker: an endpoint is admitted again.
    pub(crate) fn recover(&self) {
        let transition = self.lock().recover();
        self.publish(transition);
    }

    fn record(&self, ticket: Ticket, outcome: Outcome) {
        let transition = self.lock().record(ticket, outcome, Instant::now());
        self.publish(transition);
    }

    // Called after the lock is released: subscribers and metrics never run under it.
    fn publish(&self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        match t.to {
            BreakerState::Open | BreakerState::ForcedOpen => {
                tracing::warn!(client = %self.client, from = %t.from, to = %t.to, open_for = ?t.open_for, "circuit breaker opened");
            }
            _ => {
                tracing::info!(client = %self.client, from = %t.from, to = %t.to, "circuit breaker state changed")
            }
        }
        self.metrics.state.set(t.to.gauge_value());
        self.metrics.to[t.to.gauge_value() as usize].increment(1);
        self.state_tx.send_replace(t.to);
        let _no_subscribers_is_fine = self.events.send(t);
    }
}

/// Admission to call through the breaker; reports `Ignored` if dropped unused.
pub(crate) struct Permit {
    shared: Arc<Shared>,
    ticket: Option<Ticket>,
}

impl Permit {
    pub(crate) fn complete(mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.record(ticket, outcome);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // An abandoned call (deadline hit, caller gone) frees its half-open probe slot.
        if let Some(ticket) = self.ticket.take() {
            self.shared.record(ticket, Outcome::Ignored);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("ticket", &self.ticket)
            .finish()
    }
}

/// Observes and steers one circuit breaker; cheap to clone, shared with every service clone.
#[derive(Clone)]
pub struct BreakerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl BreakerHandle {
    /// The current state. An open breaker whose period has ended still reads `Open` until the
    /// next call arrives and becomes the first probe.
    pub fn state(&self) -> BreakerState {
        self.shared.lock().state()
    }

    /// Counters since the breaker was built.
    pub fn stats(&self) -> BreakerStats {
        self.shared.lock().stats()
    }

    /// The open period in force (open or half-open).
    pub fn open_period(&self) -> Option<Duration> {
        self.shared.lock().open_period()
    }

    /// When the current open period ends: `Some` while the breaker is [`BreakerState::Open`],
    /// `None` when closed, half-open or forced open (which lasts until [`reset`](Self::reset)).
    /// The instant may be past: an open breaker moves to half-open only when the next call
    /// arrives after it.
    pub fn open_until(&self) -> Option<Instant> {
        self.shared.lock().open_until()
    }

    /// How many probe calls a half-open breaker admits at once (its other calls fail with
    /// `CIRCUIT_OPEN`), e.g. to drive no more than that many calls while it recovers.
    pub fn half_open_probes(&self) -> u32 {
        self.shared.lock().max_probes()
    }

    /// The latest state, as a `watch` channel (e.g. `wait_for(|s| *s == Closed)`).
    pub fn watch(&self) -> watch::Receiver<BreakerState> {
        self.shared.state_tx.subscribe()
    }

    /// Every transition from now on, in order (a receiver more than 64 behind loses the oldest).
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.shared.events.subscribe()
    }

    /// Opens the breaker until [`reset`](Self::reset), e.g. during a known outage.
    pub fn force_open(&self) {
        let transition = self.shared.lock().force_open();
        self.shared.publish(transition);
    }

    /// Closes the breaker and forgets the failures counted so far.
    pub fn reset(&self) {
        let transition = self.shared.lock().reset();
        self.shared.publish(transition);
    }
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("client", &self.shared.client)
            .field("state", &self.state())
            .finish()
    }
}
