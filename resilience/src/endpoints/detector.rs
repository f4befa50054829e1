//! One endpoint's failure detector, pure (time is passed in) so it can be tested without a
//! clock: Envoy's outlier detection and Linkerd's failure accrual, on the breaker's vocabulary.
//!
//! - **Admitted**: attempts flow; `consecutive_failures` in a row, or a failure share of the
//!   last `window_calls` outcomes at or above `failure_rate` (once `minimum_calls` are known),
//!   eject it. A connection refused or a stream refused before the request was sent ejects at
//!   once: it is certain, and nothing was lost by it.
//! - **Ejected** until `base * 2^k` (capped, jittered down) has passed, `k` counting the
//!   ejections in a row; `k` is forgotten once the endpoint has stayed admitted for `cap`.
//! - **Probing** after that: exactly one attempt goes; its success readmits the endpoint, its
//!   failure ejects it again for longer.
//!
//! Results of attempts that started in an earlier phase (in flight when the endpoint was
//! ejected) are ignored: they describe the past and must not eject it twice.

use std::collections::VecDeque;

use tokio::time::Instant;

use crate::breaker::policy::OpenBackoff;
use crate::config::OutlierConfig;

/// The state an endpoint is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointState {
    /// Picked by the balancer.
    Admitted,
    /// Not picked until its ejection ends.
    Ejected,
    /// Its ejection ended: one probe attempt decides.
    Probing,
}

impl EndpointState {
    /// The value of the `resilience_endpoint_state` gauge.
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Admitted => 0.0,
            Self::Ejected => 1.0,
            Self::Probing => 2.0,
        }
    }

    /// Upper-case name, as in OpsService.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admitted => "ADMITTED",
            Self::Ejected => "EJECTED",
            Self::Probing => "PROBING",
        }
    }
}

/// How one attempt on the endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The server answered (a business refusal included).
    Success,
    /// A server-side failure (the breaker's classification).
    Failure,
    /// Refused before the request was sent (connect error, REFUSED_STREAM, GOAWAY).
    Unreachable,
    /// Says nothing about the endpoint (cancelled, abandoned).
    Ignored,
}

/// Admission of one attempt, tied to the phase it was issued in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    epoch: u64,
    probe: bool,
}

/// Whether the endpoint may take an attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready,
    /// Ejected: ask again at this instant.
    EjectedUntil(Instant),
    /// Its one probe is in flight.
    ProbeBusy,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Admitted { since: Instant },
    Ejected { until: Instant },
    Probing { in_flight: bool },
}

/// The detector of one endpoint.
#[derive(Debug)]
pub(crate) struct Detector {
    phase: Phase,
    epoch: u64,
    consecutive: u32,
    window: VecDeque<bool>,
    window_failures: usize,
    ejections_in_row: u32,
    ejections: u64,
    last_failure: Option<Instant>,
    config: OutlierConfig,
    backoff: OpenBackoff,
}

impl Detector {
    pub(crate) fn new(config: &OutlierConfig, now: Instant) -> Self {
        Self {
            phase: Phase::Admitted { since: now },
            epoch: 0,
            consecutive: 0,
            window: VecDeque::new(),
            window_failures: 0,
            ejections_in_row: 0,
            ejections: 0,
            last_failure: None,
            config: config.clone(),
            backoff: OpenBackoff::new(config.eject_base, config.eject_cap, config.eject_jitter),
        }
    }

    pub(crate) fn state(&self) -> EndpointState {
        match self.phase {
            Phase::Admitted { .. } => EndpointState::Admitted,
            Phase::Ejected { .. } => EndpointState::Ejected,
            Phase::Probing { .. } => EndpointState::Probing,
        }
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    pub(crate) fn ejections(&self) -> u64 {
        self.ejections
    }

    pub(crate) fn ejected_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Ejected { until } => Some(until),
            _ => None,
        }
    }

    /// Whether the endpoint waits for its probe: its ejection has ended and no probe is out.
    pub(crate) fn probe_due(&self, now: Instant) -> bool {
        match self.phase {
            Phase::Ejected { until } => now >= until,
            Phase::Probing { in_flight } => !in_flight,
            Phase::Admitted { .. } => false,
        }
    }

    /// When the last failure was, if within `avoid_after_failure`: the balancer then prefers
    /// an endpoint that did not fail, or failed longer ago, so a retry goes elsewhere.
    pub(crate) fn recent_failure(&self, now: Instant) -> Option<Instant> {
        self.last_failure
            .filter(|at| now.saturating_duration_since(*at) < self.config.avoid_after_failure)
    }

    /// Whether an attempt may go now; an ended ejection becomes probing here, lazily.
    pub(crate) fn readiness(&mut self, now: Instant) -> (Readiness, Option<EndpointState>) {
        let mut changed = None;
        if let Phase::Ejected { until } = self.phase
            && now >= until
        {
            changed = Some(self.go(Phase::Probing { in_flight: false }));
        }
        let readiness = match self.phase {
            Phase::Admitted { .. } | Phase::Probing { in_flight: false } => Readiness::Ready,
            Phase::Ejected { until } => Readiness::EjectedUntil(until),
            Phase::Probing { in_flight: true } => Readiness::ProbeBusy,
        };
        (readiness, changed)
    }

    /// Admits one attempt (after [`Self::readiness`] said Ready): while probing, it is the probe.
    pub(crate) fn admit(&mut self) -> Ticket {
        let probe = match &mut self.phase {
            Phase::Probing { in_flight } => {
                *in_flight = true;
                true
            }
            _ => false,
        };
        Ticket {
            epoch: self.epoch,
            probe,
        }
    }

    /// Records how an admitted attempt ended; returns the new state if it changed.
    /// `others_admitted` says whether another endpoint could take this one's calls: only then
    /// does an unreachable endpoint leave at once; the last one is judged by the usual
    /// thresholds, so a single refused connection does not open the service-wide circuit.
    pub(crate) fn record(
        &mut self,
        ticket: Ticket,
        verdict: Verdict,
        others_admitted: bool,
        now: Instant,
    ) -> Option<EndpointState> {
        let verdict = match verdict {
            Verdict::Unreachable if !others_admitted => Verdict::Failure,
            verdict => verdict,
        };
        if matches!(verdict, Verdict::Failure | Verdict::Unreachable) {
            self.last_failure = Some(now);
        }
        if ticket.epoch != self.epoch {
            return None;
        }
        match (self.phase, verdict) {
            (_, Verdict::Ignored) => {
                if let Phase::Probing { in_flight } = &mut self.phase
                    && ticket.probe
                {
                    *in_flight = false;
                }
                None
            }
            (Phase::Admitted { .. }, Verdict::Success) => {
                self.consecutive = 0;
                self.push(false);
                None
            }
            (Phase::Admitted { since }, Verdict::Failure) => {
                self.consecutive += 1;
                self.push(true);
                let calls = self.window.len();
                let by_rate = self.config.failure_rate.is_some_and(|rate| {
                    calls >= self.config.minimum_calls.max(1) as usize
                        && self.window_failures as f64 >= rate * calls as f64
                });
                let by_count = self.config.consecutive_failures > 0
                    && self.consecutive >= self.config.consecutive_failures;
                (by_rate || by_count).then(|| self.eject(now, Some(since)))
            }
            (Phase::Admitted { since }, Verdict::Unreachable) => {
                self.consecutive += 1;
                Some(self.eject(now, Some(since)))
            }
            (Phase::Probing { .. }, Verdict::Success) if ticket.probe => {
                self.consecutive = 0;
                self.window.clear();
                self.window_failures = 0;
                Some(self.go(Phase::Admitted { since: now }))
            }
            (Phase::Probing { .. }, Verdict::Failure | Verdict::Unreachable) if ticket.probe => {
                self.consecutive += 1;
                Some(self.eject(now, None))
            }
            _ => None,
        }
    }

    fn push(&mut self, failed: bool) {
        let size = self.config.window_calls.max(1) as usize;
        if self.window.len() == size && self.window.pop_front() == Some(true) {
            self.window_failures -= 1;
        }
        self.window.push_back(failed);
        self.window_failures += usize::from(failed);
    }

    fn eject(&mut self, now: Instant, admitted_since: Option<Instant>) -> EndpointState {
        // An endpoint that stayed healthy for a whole cap starts again from the base period.
        if admitted_since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.config.eject_cap)
        {
            self.ejections_in_row = 0;
        }
        let period = self.backoff.period(self.ejections_in_row);
        self.ejections_in_row = self.ejections_in_row.saturating_add(1).min(32);
        self.ejections += 1;
        self.window.clear();
        self.window_failures = 0;
        self.go(Phase::Ejected {
            until: now + period,
        })
    }

    fn go(&mut self, phase: Phase) -> EndpointState {
        self.phase = phase;
        self.epoch += 1;
        self.state()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> OutlierConfig {
        OutlierConfig {
            eject_jitter: 0.0,
            ..OutlierConfig::default()
        }
    }

    fn fail(d: &mut Detector, now: Instant, n: u32) -> Option<EndpointState> {
        let mut last = None;
        for _ in 0..n {
            let ticket = d.admit();
            last = d.record(ticket, Verdict::Failure, true, now).or(last);
        }
        last
    }

    #[test]
    fn consecutive_failures_eject_then_one_probe_readmits() {
        let t0 = Instant::now();
        let mut d = Detector::new(&config(), t0);
        assert_eq!(fail(&mut d, t0, 4), None);
        assert_eq!(fail(&mut d, t0, 1), Some(EndpointState::Ejected));
        assert_eq!(d.ejections(), 1);
        assert_eq!(
            d.readiness(t0).0,
            Readiness::EjectedUntil(t0 + Duration::from_secs(1))
        );
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            d.readiness(later),
            (Readiness::Ready, Some(EndpointState::Probing))
        );
        let probe = d.admit();
        assert_eq!(
            d.readiness(later).0,
            Readiness::ProbeBusy,
            "one probe at a time"
        );
        assert_eq!(
            d.record(probe, Verdict::Success, true, later),
            Some(EndpointState::Admitted)
        );
        assert_eq!(d.consecutive_failures(), 0);
    }

    #[test]
    fn a_failed_probe_ejects_for_twice_as_long_up_to_the_cap() {
        let t0 = Instant::now();
        let mut d = Detector::new(&config(), t0);
        fail(&mut d, t0, 5);
        let mut now = t0;
        let mut periods = Vec::new();
        for _ in 0..7 {
            let until = d.ejected_until().unwrap();
            periods.push(until - now);
            now = until;
            d.readiness(now);
            let probe = d.admit();
            assert_eq!(
                d.record(probe, Verdict::Failure, true, now),
                Some(EndpointState::Ejected)
            );
        }
        let secs: Vec<_> = periods.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn an_unreachable_endpoint_is_ejected_at_once_and_stale_results_are_ignored() {
        let t0 = Instant::now();
        let mut d = Detector::new(&config(), t0);
        let in_flight = d.admit();
        let refused = d.admit();
        assert_eq!(
            d.record(refused, Verdict::Unreachable, true, t0),
            Some(EndpointState::Ejected)
        );
        assert_eq!(d.record(in_flight, Verdict::Failure, true, t0), None);
        assert_eq!(d.ejections(), 1, "one ejection, not two");
        assert_eq!(d.recent_failure(t0), Some(t0));
        assert_eq!(d.recent_failure(t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn the_last_admitted_endpoint_is_not_ejected_by_one_refused_connection() {
        let t0 = Instant::now();
        let mut d = Detector::new(&config(), t0);
        for _ in 0..4 {
            let ticket = d.admit();
            assert_eq!(d.record(ticket, Verdict::Unreachable, false, t0), None);
        }
        let ticket = d.admit();
        assert_eq!(
            d.record(ticket, Verdict::Unreachable, false, t0),
            Some(EndpointState::Ejected),
            "the usual threshold still applies"
        );
    }

    #[test]
    fn a_failure_rate_ejects_and_business_answers_do_not() {
        let t0 = Instant::now();
        let mut d = Detector::new(&config(), t0);
        for i in 0..20 {
            let ticket = d.admit();
            let verdict = if i % 2 == 0 {
                Verdict::Failure
            } else {
                Verdict::Success
            };
            if let Some(state) = d.record(ticket, verdict, true, t0) {
                assert_eq!(state, EndpointState::Ejected);
                assert!(i >= 9, "not before the minimum of 10 calls");
                return;
            }
        }
        panic!("50 % failures must eject");
    }

    #[test]
    fn a_long_healthy_spell_forgets_earlier_ejections() {
        let t0 = Instant::now();
        let mut d = Detector::new(&config(), t0);
        fail(&mut d, t0, 5);
        let t1 = d.ejected_until().unwrap();
        d.readiness(t1);
        let probe = d.admit();
        d.record(probe, Verdict::Failure, true, t1);
        let t2 = d.ejected_until().unwrap();
        assert_eq!(t2 - t1, Duration::from_secs(2));
        d.readiness(t2);
        let probe = d.admit();
        d.record(probe, Verdict::Success, true, t2);
        let t3 = t2 + Duration::from_secs(60);
        fail(&mut d, t3, 5);
        assert_eq!(d.ejected_until().unwrap() - t3, Duration::from_secs(1));
    }
}
