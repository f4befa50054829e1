use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::config::BreakerConfig;

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Complete(usize, Outcome),
    Advance(u64),
    ForceOpen,
    Reset,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Success),
        Just(Outcome::Failure),
        Just(Outcome::Ignored)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Acquire),
        6 => (any::<usize>(), outcome()).prop_map(|(i, o)| Op::Complete(i, o)),
        3 => (0u64..40_000).prop_map(Op::Advance),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Reset),
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    (1u32..6, 0.2f64..1.0, 1u32..12, 1u32..12, 1u32..4).prop_map(
        |(consecutive, rate, window, minimum, probes)| BreakerConfig {
            consecutive_failures: consecutive,
            failure_rate: Some(rate),
            window_calls: window,
            minimum_calls: minimum,
            half_open_probes: probes,
            ..BreakerConfig::default()
        },
    )
}

fn machine(config: &BreakerConfig) -> Machine {
    Machine::new(
        crate::breaker::policy::from_config(config, crate::backoff::JitterRng::thread()),
        config.half_open_probes,
        config.open_cap,
    )
}

fn allowed(t: &Transition) -> bool {
    use BreakerState::*;
    matches!(
        (t.from, t.to),
        (Closed, Open) | (Open, HalfOpen) | (HalfOpen, Open) | (HalfOpen, Closed)
    ) || (t.to == ForcedOpen && t.from != ForcedOpen)
        || (t.to == Closed && t.from != Closed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_state_machine_keeps_its_invariants(config in config(), ops in prop::collection::vec(op(), 1..200)) {
        let mut m = machine(&config);
        let mut now = Instant::now();
        let mut outstanding: Vec<Ticket> = Vec::new();
        let mut open_until: Option<Instant> = None;
        let mut last_period: Option<Duration> = None;
        let cap = config.open_cap;

        for op in ops {
            let state_before = m.state();
            let transition = match op {
                Op::Acquire => {
                    let (ticket, t) = m.acquire(now);
                    if let Some(until) = open_until && now < until && state_before == BreakerState::Open {
                        prop_assert!(ticket.is_none(), "admitted while open");
                    }
                    if state_before == BreakerState::ForcedOpen {
                        prop_assert!(ticket.is_none(), "admitted while forced open");
                    }
                    if state_before == BreakerState::Closed {
                        prop_assert!(ticket.is_some(), "rejected while closed");
                    }
                    outstanding.extend(ticket);
                    t
                }
                Op::Complete(i, outcome) if !outstanding.is_empty() => {
                    let ticket = outstanding.swap_remove(i % outstanding.len());
                    let t = m.record(ticket, outcome, now);
                    if let Some(t) = &t {
                        // Only a failure can open; only a success can close.
                        match t.to {
                            BreakerState::Open => prop_assert_eq!(outcome, Outcome::Failure),
                            BreakerState::Closed => prop_assert_eq!(outcome, Outcome::Success),
                            _ => prop_assert!(false, "record cannot cause {:?}", t),
                        }
                    }
                    t
                }
                Op::Complete(..) => None,
                Op::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    None
                }
                Op::ForceOpen => m.force_open(),
                Op::Reset => m.reset(),
            };
            prop_assert!(m.stats().probes_in_flight <= config.half_open_probes);
            if let Some(t) = transition {
                prop_assert!(allowed(&t), "illegal transition {:?}", t);
                prop_assert_eq!(t.from, state_before);
                prop_assert_eq!(t.to, m.state());
                if t.to == BreakerState::Open {
                    let period = t.open_for.expect("open carries its period");
                    prop_assert!(period <= cap);
                    if t.from == BreakerState::HalfOpen && let Some(prev) = last_period {
                        // A failed probe re-opens for longer, until the cap.
                        let floor = prev.mul_f64(1.5).min(cap.mul_f64(0.8));
                        prop_assert!(period >= floor, "{:?} after {:?}", period, prev);
                    }
                    open_until = Some(now + period);
                    last_period = Some(period);
                }
                if t.to == BreakerState::Closed {
                    last_period = None;
                }
            }
        }
    }

    #[test]
    fn answers_without_server_failures_never_open(
        config in config(),
        outcomes in prop::collection::vec(prop_oneof![Just(Outcome::Success), Just(Outcome::Ignored)], 1..300),
    ) {
        let mut m = machine(&config);
        let now = Instant::now();
        for outcome in outcomes {
            let (ticket, t) = m.acquire(now);
            prop_assert!(t.is_none());
            prop_assert!(m.record(ticket.expect("closed admits"), outcome, now).is_none());
        }
        prop_assert_eq!(m.state(), BreakerState::Closed);
    }

    #[test]
    fn n_consecutive_failures_always_open(config in config()) {
        let mut m = machine(&config);
        let now = Instant::now();
        for i in 1..=config.consecutive_failures {
            let (ticket, _) = m.acquire(now);
            let t = m.record(ticket.unwrap(), Outcome::Failure, now);
            if i == config.consecutive_failures {
                prop_assert_eq!(m.state(), BreakerState::Open);
            } else if t.is_some() {
                // The rate trigger may fire first with a small window.
                prop_assert_eq!(m.state(), BreakerState::Open);
                break;
            }
        }
    }
}

#[test]
fn stale_results_do_not_move_a_new_phase() {
    let config = BreakerConfig {
        consecutive_failures: 1,
        ..BreakerConfig::default()
    };
    let mut m = machine(&config);
    let now = Instant::now();
    let (old, _) = m.acquire(now);
    let (failing, _) = m.acquire(now);
    m.record(failing.unwrap(), Outcome::Failure, now);
    assert_eq!(m.state(), BreakerState::Open);
    // A success admitted before the trip must not close the breaker.
    assert!(m.record(old.unwrap(), Outcome::Success, now).is_none());
    assert_eq!(m.state(), BreakerState::Open);
}
