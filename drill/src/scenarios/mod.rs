//! The built-in drills of `lab drill --scenario NAME` (API.md), and drills read from a TOML
//! timeline file ([`from_toml`]).
//!
//! Each built-in is sized by [`Params`]: the load runs `rate × duration` approvals paced at
//! `rate` (spread over the approval-svc instances when there are several), on one product whose stock is 90 % of them (so the end state has both APPROVED and
//! OUT_OF_STOCK challenges), and its faults fall at fixed fractions of the duration. After the
//! load the approvals that got an error are re-sent once, as callers do, and the system is let
//! settle with no operator's help; each built-in expects nothing dead-lettered and the exact end
//! state, and the two multi-instance drills a bound on failed approvals.

mod file;

use std::time::Duration;

use crate::cluster::ClusterOptions;
use crate::engine::{
    Action, At, Databases, Expectations, Pacing, Scenario, Service, Settle, Workload,
};
use crate::proxy::Fault;

pub use self::file::{FileError, from_toml};

/// The built-in drills: name and what it does.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "kill-order-svc",
        "kill -9 order-svc #0 at 30 % of the run, restart it 1 s later",
    ),
    (
        "kill-approval-svc",
        "200 ms ± 50 ms latency on order-svc's answers (approvals in flight), kill -9 approval-svc #0 at 30 %, restart it 1 s later",
    ),
    (
        "slow-order-svc",
        "order-svc answers 1.5 s ± 100 ms late (beyond the 1 s attempt timeout) from 30 % for 30 % of the run",
    ),
    (
        "lost-replies",
        "30 % of order-svc's responses lost after the commit, from 20 % for half of the run",
    ),
    (
        "postgres-connections-killed",
        "pg_terminate_backend on both databases at 25 %, 50 % and 75 % of the run",
    ),
    (
        "retry-storm",
        "every order-svc call answered UNAVAILABLE for 5 s (at most a third of the run) from 30 %",
    ),
    (
        "kill-one-of-n",
        "at least 3 order-svc instances, kill -9 #1 at 20 % (not restarted); at most 1 % of approvals may fail",
    ),
    (
        "rolling-restart",
        "at least 3 order-svc instances, SIGTERM + restart of each in turn from 10 %; no approval may fail",
    ),
];

/// What sizes a drill (the `lab drill` flags); unset fields take their defaults.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// How long approvals are sent. Default 30 s.
    pub duration: Option<Duration>,
    /// Approvals per second. Default 200.
    pub rate: Option<f64>,
    /// order-svc instances. Default 1 (built-ins that need more take at least 3).
    pub order_instances: Option<usize>,
    /// approval-svc instances. Default 1.
    pub approval_instances: Option<usize>,
    /// Seed of user ids and of the proxy. Default 42.
    pub seed: Option<u64>,
}

impl Params {
    /// The duration or 30 s.
    pub fn duration(&self) -> Duration {
        self.duration.unwrap_or(Duration::from_secs(30))
    }

    /// The rate or 200/s.
    pub fn rate(&self) -> f64 {
        self.rate.unwrap_or(200.0)
    }

    /// `rate × duration` approvals (at least 1).
    pub fn challenges(&self) -> usize {
        ((self.rate() * self.duration().as_secs_f64()).round() as usize).max(1)
    }
}

/// The built-in drill `name` sized by `params`; `None` for an unknown name.
pub fn built_in(name: &str, params: &Params) -> Option<Scenario> {
    let duration = params.duration();
    let at = |fraction: f64| At::Time(duration.mul_f64(fraction));
    let order_instances = params.order_instances.unwrap_or(1);
    let base = |title: &str, order_instances: usize| base(name, title, params, order_instances);
    let scenario = match name {
        "kill-order-svc" => base("kill -9 order-svc", order_instances)
            .at(at(0.3), Action::Kill(Service::Order, 0))
            .at(
                At::After(Duration::from_secs(1)),
                Action::Restart(Service::Order, 0),
            ),
        "kill-approval-svc" => base("kill -9 approval-svc", order_instances)
            .at(
                At::Time(Duration::ZERO),
                Action::proxy(Fault::Latency {
                    base: Duration::from_millis(200),
                    jitter: Duration::from_millis(50),
                }),
            )
            .at(at(0.3), Action::Kill(Service::Approval, 0))
            .at(
                At::After(Duration::from_secs(1)),
                Action::Restart(Service::Approval, 0),
            )
            .at(At::LoadDone(Duration::ZERO), Action::ClearProxy),
        "slow-order-svc" => base("order-svc slow", order_instances).at(
            at(0.3),
            Action::Proxy {
                fault: Fault::Latency {
                    base: Duration::from_millis(1_500),
                    jitter: Duration::from_millis(100),
                },
                lasting: Some(duration.mul_f64(0.3)),
            },
        ),
        "lost-replies" => base("lost replies", order_instances).at(
            at(0.2),
            Action::Proxy {
                fault: Fault::LoseResponses { probability: 0.3 },
                lasting: Some(duration.mul_f64(0.5)),
            },
        ),
        "postgres-connections-killed" => base("postgres connections killed", order_instances)
            .at(at(0.25), Action::TerminateConnections(Databases::Both))
            .at(at(0.5), Action::TerminateConnections(Databases::Both))
            .at(at(0.75), Action::TerminateConnections(Databases::Both)),
        "retry-storm" => base("retry storm", order_instances).at(
            at(0.3),
            Action::Proxy {
                fault: Fault::Unavailable { pushback: None },
                lasting: Some(Duration::from_secs(5).min(duration / 3)),
            },
        ),
        "kill-one-of-n" => {
            let mut scenario = base("kill -9 one of n order-svc", order_instances.max(3))
                .at(at(0.2), Action::Kill(Service::Order, 1));
            scenario.expect.max_failed = Some(params.challenges() as u64 / 100);
            scenario
        }
        "rolling-restart" => {
            let mut scenario = base("rolling restart of order-svc", order_instances.max(3)).at(
                at(0.1),
                Action::RollingRestart {
                    service: Service::Order,
                    drain: Duration::from_secs(10),
                    pause: Duration::from_millis(500),
                },
            );
            scenario.expect.max_failed = Some(0);
            scenario
        }
        _ => return None,
    };
    Some(scenario)
}

/// What every built-in shares: the paced load, the cluster, settling and expectations.
fn base(name: &str, title: &str, params: &Params, order_instances: usize) -> Scenario {
    let challenges = params.challenges();
    let stock = (challenges as i64 * 9 / 10).max(1);
    let seed = params.seed.unwrap_or(42);
    let approval_instances = params.approval_instances.unwrap_or(1);
    let mut workload = Workload::new(challenges, stock, Pacing::paced(params.rate(), 64));
    // Callers reach every approval-svc replica, as behind a balancer.
    workload.spread = approval_instances > 1;
    Scenario::new(name, title, seed)
        .cluster(
            ClusterOptions::default()
                .order_instances(order_instances)
                .approval_instances(approval_instances),
        )
        .workload(workload)
        .settle(Settle {
            resend_errored: Some(32),
            pause: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
        })
        .expect(Expectations {
            max_failed: None,
            no_dead_letters: true,
            exact_end_state: true,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_name_makes_a_scenario_with_faults() {
        let params = Params::default();
        for (name, _) in BUILT_IN {
            let scenario = built_in(name, &params).unwrap();
            assert_eq!(scenario.name, *name);
            assert!(!scenario.timeline.is_empty(), "{name}");
            assert_eq!(scenario.workload.challenges, 6_000);
        }
        assert!(built_in("no-such-drill", &params).is_none());
        let kill_one = built_in("kill-one-of-n", &params).unwrap();
        assert_eq!(kill_one.cluster.order_instances, 3);
        assert!(!kill_one.cluster.proxy);
    }
}
