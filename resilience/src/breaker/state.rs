//! The breaker's state machine, pure (time is passed in) so it can be property-tested.
//!
//! failsafe decides *when* to trip and *for how long* (its [`FailurePolicy`]); this machine adds
//! what failsafe's own `StateMachine` lacks: a bounded number of half-open probes, a forced-open
//! state, stale-result filtering and transitions reported to the caller. It runs on tokio's
//! clock, which tests can pause; failsafe's machine reads `std::time::Instant`.

use std::fmt;
use std::time::Duration;

use failsafe::FailurePolicy;
use tokio::time::Instant;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls fail at once with `CIRCUIT_OPEN` until the open period ends.
    Open,
    /// A bounded number of probe calls decide between closing and re-opening.
    HalfOpen,
    /// Opened by hand ([`BreakerHandle::force_open`](crate::BreakerHandle::force_open)); stays
    /// open until [`BreakerHandle::reset`](crate::BreakerHandle::reset).
    ForcedOpen,
}

impl BreakerState {
    /// The value of the `resilience_breaker_state` gauge.
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
            Self::ForcedOpen => 3.0,
        }
    }

    /// Lower-case name, as used in the `to` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
    /// How long the breaker stays open, when `to` is [`BreakerState::Open`].
    pub open_for: Option<Duration>,
}

/// Counters since the breaker was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerStats {
    /// Admitted calls whose server answered.
    pub successes: u64,
    /// Admitted calls that failed server-side.
    pub failures: u64,
    /// Admitted calls whose outcome said nothing about the server.
    pub ignored: u64,
    /// Calls failed fast with `CIRCUIT_OPEN`.
    pub rejections: u64,
    /// Transitions into open (including forced open).
    pub opened: u64,
    /// Transitions into half-open.
    pub half_opened: u64,
    /// Transitions into closed.
    pub closed: u64,
    /// Half-open probes in flight now.
    pub probes_in_flight: u32,
}

/// How an admitted call ended, from the breaker's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The server answered (even with a client error such as INVALID_ARGUMENT).
    Success,
    /// A server-side failure (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL,
    /// UNKNOWN).
    Failure,
    /// Says nothing about the server: cancelled by the caller, shed locally, or abandoned.
    Ignored,
}

/// Proof of admission, tied to the phase it was issued in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    epoch: u64,
    probe: bool,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant, period: Duration },
    HalfOpen { period: Duration, probes: u32 },
    ForcedOpen,
}

pub(crate) struct Machine {
    phase: Phase,
    policy: Box<dyn FailurePolicy + Send>,
    // Bumped on every transition; results carrying an older epoch describe a past phase
    // (e.g. calls admitted before the breaker opened) and must not move the current one.
    epoch: u64,
    max_probes: u32,
    cap: Duration,
    stats: BreakerStats,
}

impl Machine {
    pub(crate) fn new(
        policy: Box<dyn FailurePolicy + Send>,
        max_probes: u32,
        cap: Duration,
    ) -> Self {
        Self {
            phase: Phase::Closed,
            policy,
            epoch: 0,
            max_probes: max_probes.max(1),
            cap,
            stats: BreakerStats::default(),
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
            Phase::ForcedOpen => BreakerState::ForcedOpen,
        }
    }

    pub(crate) fn stats(&self) -> BreakerStats {
        BreakerStats {
            probes_in_flight: match self.phase {
                Phase::HalfOpen { probes, .. } => probes,
                _ => 0,
            },
            ..self.stats
        }
    }

    /// Probes admitted at once while half-open.
    pub(crate) fn max_probes(&self) -> u32 {
        self.max_probes
    }

    /// The current (or, half-open, the last) open period.
    pub(crate) fn open_period(&self) -> Option<Duration> {
        match self.phase {
            Phase::Open { period, .. } | Phase::HalfOpen { period, .. } => Some(period),
            Phase::Closed | Phase::ForcedOpen => None,
        }
    }

    /// When the current open period ends; `None` unless open (forced open has no end).
    pub(crate) fn open_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { until, .. } => Some(until),
            Phase::Closed | Phase::HalfOpen { .. } | Phase::ForcedOpen => None,
        }
    }

    /// Admits a call or refuses it. An expired open period moves to half-open here, lazily,
    /// when the first call after it arrives.
    pub(crate) fn acquire(&mut self, now: Instant) -> (Option<Ticket>, Option<Transition>) {
        let mut transition = None;
        if let Phase::Open { until, period } = self.phase
            && now >= until
        {
            transition = Some(self.go(Phase::HalfOpen { period, probes: 0 }));
        }
        let ticket = match &mut self.phase {
            Phase::Closed => Some(Ticket {
                epoch: self.epoch,
                probe: false,
            }),
            Phase::HalfOpen { probes, .. } if *probes < self.max_probes => {
                *probes += 1;
                Some(Ticket {
                    epoch: self.epoch,
                    probe: true,
                })
            }
            Phase::HalfOpen { .. } | Phase::Open { .. } | Phase::ForcedOpen => None,
        };
        if ticket.is_none() {
            self.stats.rejections += 1;
        }
        (ticket, transition)
    }

    /// Records how an admitted call ended.
    pub(crate) fn record(
        &mut self,
        ticket: Ticket,
        outcome: Outcome,
        now: Instant,
    ) -> Option<Transition> {
        match outcome {
            Outcome::Success => self.stats.successes += 1,
            Outcome::Failure => self.stats.failures += 1,
            Outcome::Ignored => self.stats.ignored += 1,
        }
        if ticket.epoch != self.epoch {
            return None;
        }
        match (self.phase, outcome) {
            (Phase::Closed, Outcome::Success) => {
                self.policy.record_success();
                None
            }
            (Phase::Closed, Outcome::Failure) => {
                let period = self.policy.mark_dead_on_failure()?;
                Some(self.open(now, period))
            }
            (Phase::HalfOpen { .. }, Outcome::Success) if ticket.probe => {
                self.policy.revived();
                Some(self.go(Phase::Closed))
            }
            (Phase::HalfOpen { period, .. }, Outcome::Failure) if ticket.probe => {
                // The policy still counts the failures that opened us, so it normally answers
                // with its next, longer period; doubling is the fallback.
                let next = self
                    .policy
                    .mark_dead_on_failure()
                    .unwrap_or_else(|| period.saturating_mul(2).min(self.cap));
                Some(self.open(now, next))
            }
            (Phase::HalfOpen { .. }, Outcome::Ignored) if ticket.probe => {
                if let Phase::HalfOpen { probes, .. } = &mut self.phase {
                    *probes = probes.saturating_sub(1);
                }
                None
            }
            _ => None,
        }
    }

    /// Opens for `period` because no endpoint of a balanced set is admitted (the per-endpoint
    /// detectors decided); an open period that already lasts longer, or a forced-open breaker,
    /// stays as it is.
    pub(crate) fn trip(&mut self, now: Instant, period: Duration) -> Option<Transition> {
        match self.phase {
            Phase::ForcedOpen => None,
            Phase::Open { until, .. } if until >= now + period => None,
            _ => Some(self.open(now, period.min(self.cap))),
        }
    }

    /// Closes an open or half-open breaker because an endpoint was admitted again; a forced-open
    /// one stays forced.
    pub(crate) fn recover(&mut self) -> Option<Transition> {
        match self.phase {
            Phase::Open { .. } | Phase::HalfOpen { .. } => {
                self.policy.revived();
                Some(self.go(Phase::Closed))
            }
            Phase::Closed | Phase::ForcedOpen => None,
        }
    }

    pub(crate) fn force_open(&mut self) -> Option<Transition> {
        match self.phase {
            Phase::ForcedOpen => None,
            _ => Some(self.go(Phase::ForcedOpen)),
        }
    }

    pub(crate) fn reset(&mut self) -> Option<Transition> {
        self.policy.revived();
        match self.phase {
            Phase::Closed => None,
            _ => Some(self.go(Phase::Closed)),
        }
    }

    fn open(&mut self, now: Instant, period: Duration) -> Transition {
        self.go(Phase::Open {
            until: now + period,
            period,
        })
    }

    fn go(&mut self, phase: Phase) -> Transition {
        let from = self.state();
        self.phase = phase;
        self.epoch += 1;
        let to = self.state();
        match to {
            BreakerState::Open | BreakerState::ForcedOpen => self.stats.opened += 1,
            BreakerState::HalfOpen => self.stats.half_opened += 1,
            BreakerState::Closed => self.stats.closed += 1,
        }
        Transition {
            from,
            to,
            open_for: self.open_period().filter(|_| to == BreakerState::Open),
        }
    }
}

#[cfg(test)]
mod tests;
