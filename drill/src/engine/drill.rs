//! [`Drill`]: a scenario while it runs — the cluster, what the load got so far, and the
//! timeline's actions with the fault windows and snapshots they leave behind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1 as order_pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::check::{CheckOptions, Report};
use crate::cluster::Cluster;
use crate::load::{ApproveRun, Watch};
use crate::metrics::ResilienceCounts;
use crate::process::{ServiceProcess, terminate_connections};
use crate::proxy::{Fault, ProxyStats};
use crate::report::FaultWindow;
use crate::tally::LiveTally;

use super::DrillError;
use super::scenario::{Action, Databases, Service};

/// What a [`Action::Snapshot`] saw at its moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When, since the load started.
    pub at: Duration,
    /// Approvals answered by then.
    pub answered: u64,
    /// approval-svc's (instance 0) resilience counters since its last start.
    pub counts: ResilienceCounts,
    /// The proxy's counters, when there is one.
    pub proxy: Option<ProxyStats>,
    /// An I1–I6 check (with the accepted approvals known by then), when asked.
    pub check: Option<Report>,
}

impl Snapshot {
    /// The check; panics when the snapshot was taken without one.
    pub fn report(&self) -> &Report {
        self.check
            .as_ref()
            .expect("the snapshot was declared with a check (Action::checked)")
    }
}

/// A scenario while it runs. Hooks ([`super::Hook`]) get it mutably: they may drive calls,
/// apply actions ([`Drill::apply`]) and record what they saw.
#[derive(Debug)]
pub struct Drill {
    /// The services.
    pub cluster: Cluster,
    /// The products, as created.
    pub products: Vec<order_pb::Product>,
    /// The challenges, in submission order.
    pub challenge_ids: Vec<String>,
    /// Counts every approval answer and feeds the sampler's tally; give it to the calls a
    /// custom workload makes.
    pub watch: Watch,
    /// Answers per approval-svc instance (a spread workload).
    pub answered_via: Vec<Arc<AtomicU64>>,
    /// What the load got (a custom workload adds its runs with [`Drill::record_run`]).
    pub run: ApproveRun,
    /// Client requests made (approvals, revokes, …).
    pub requests: u64,
    /// Snapshots by name.
    pub snapshots: BTreeMap<String, Snapshot>,
    /// Fault windows, seconds since the load started.
    pub faults: Vec<FaultWindow>,
    /// Connections terminated by each [`Action::TerminateConnections`].
    pub terminated: Vec<u64>,
    /// Scenario-specific figures for the summary line, in order.
    pub figures: Vec<(String, String)>,
    pub(super) load_started: Instant,
    pub(super) accepted_so_far: Vec<String>,
    pub(super) status: Arc<Mutex<String>>,
}

impl Drill {
    pub(super) fn new(cluster: Cluster) -> Self {
        let instances = cluster.more_approvals.len() + 1;
        Self {
            cluster,
            products: Vec::new(),
            challenge_ids: Vec::new(),
            watch: Watch {
                tally: Some(LiveTally::default()),
                ..Watch::default()
            },
            answered_via: (0..instances)
                .map(|_| Arc::new(AtomicU64::new(0)))
                .collect(),
            run: ApproveRun::default(),
            requests: 0,
            snapshots: BTreeMap::new(),
            faults: Vec::new(),
            terminated: Vec::new(),
            figures: Vec::new(),
            load_started: Instant::now(),
            accepted_so_far: Vec::new(),
            status: Arc::new(Mutex::new(String::new())),
        }
    }

    /// A client of approval-svc instance 0.
    pub fn approval(&self) -> ApprovalServiceClient<Channel> {
        self.cluster.approval_client()
    }

    /// A client of order-svc instance 0 (not through the proxy).
    pub fn order(&self) -> OrderServiceClient<Channel> {
        self.cluster.order_client()
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.load_started.elapsed()
    }

    /// Approvals answered so far.
    pub fn answered(&self) -> u64 {
        self.watch.answered.load(Ordering::Relaxed)
    }

    /// Adds a run's answers to the load's (a custom workload's calls).
    pub fn record_run(&mut self, run: &ApproveRun) {
        self.requests += run.latencies.len() as u64;
        merge(&mut self.run, run);
        self.accepted_so_far.extend(run.accepted.iter().cloned());
    }

    /// Adds a figure to the summary line.
    pub fn figure(&mut self, name: &str, value: impl std::fmt::Display) {
        self.figures.push((name.to_owned(), value.to_string()));
    }

    /// Records a fault window from `start` (since the load started) to now.
    pub fn fault_window(&mut self, label: &str, start: Duration) {
        self.faults.push(FaultWindow {
            label: label.to_owned(),
            start_s: start.as_secs_f64(),
            end_s: self.elapsed().as_secs_f64(),
        });
    }

    /// Applies one action now, recording its fault window.
    pub async fn apply(&mut self, action: &Action) -> Result<(), DrillError> {
        let began = self.elapsed();
        match action.clone() {
            Action::Kill(service, n) => {
                let label = format!("kill -9 {}#{n}", service.name());
                self.set_status(&label);
                self.instance(service, n)?.kill().await?;
                self.fault_window(&label, began);
            }
            Action::Terminate(service, n, drain) => {
                let label = format!("SIGTERM {}#{n}", service.name());
                self.set_status(&label);
                let status = self.instance(service, n)?.terminate(drain).await?;
                if !status.success() {
                    return Err(DrillError::Action(format!("{label}: exited with {status}")));
                }
                self.fault_window(&label, began);
            }
            Action::Restart(service, n) => {
                self.instance(service, n)?.restart().await?;
                // A kill or SIGTERM of this instance lasts until now: its window ends here.
                let down = [
                    format!("kill -9 {}#{n}", service.name()),
                    format!("SIGTERM {}#{n}", service.name()),
                ];
                let now = self.elapsed().as_secs_f64();
                if let Some(window) = self
                    .faults
                    .iter_mut()
                    .rev()
                    .find(|w| down.contains(&w.label))
                {
                    window.end_s = now;
                }
                self.set_status("");
            }
            Action::RollingRestart {
                service,
                drain,
                pause,
            } => self.rolling_restart(service, drain, pause).await?,
            Action::Proxy { fault, lasting } => self.proxy_fault(&fault, lasting)?,
            Action::ClearProxy => {
                self.proxy()?.clear();
                let now = self.elapsed().as_secs_f64();
                for window in self
                    .faults
                    .iter_mut()
                    .filter(|w| w.label.starts_with("proxy "))
                {
                    if window.end_s < window.start_s {
                        window.end_s = now;
                    }
                }
                self.set_status("");
            }
            Action::TerminateConnections(which) => {
                let label = format!("pg_terminate_backend ({which:?})").to_lowercase();
                let mut urls = Vec::new();
                if matches!(which, Databases::Approval | Databases::Both) {
                    urls.push(self.cluster.approval.database_url().to_owned());
                }
                if matches!(which, Databases::Order | Databases::Both) {
                    urls.push(self.cluster.order.database_url().to_owned());
                }
                let mut round = 0;
                for url in &urls {
                    round += terminate_connections(url).await?;
                }
                self.terminated.push(round);
                self.fault_window(&label, began);
            }
            Action::Snapshot { name, check } => self.snapshot(&name, check).await?,
            Action::Custom(hook) => hook.call(self).await?,
        }
        Ok(())
    }

    /// Records a snapshot under `name` now.
    pub async fn snapshot(&mut self, name: &str, check: bool) -> Result<(), DrillError> {
        let at = self.elapsed();
        let answered = self.answered();
        let counts = self.cluster.approval_counts().await;
        let proxy = self.cluster.proxy.as_ref().map(|p| p.handle().stats());
        let check = if check {
            let options = accepted_options(&self.accepted_so_far);
            Some(self.cluster.check(&options).await?)
        } else {
            None
        };
        self.snapshots.insert(
            name.to_owned(),
            Snapshot {
                at,
                answered,
                counts,
                proxy,
                check,
            },
        );
        Ok(())
    }

    fn proxy(&self) -> Result<crate::proxy::ProxyHandle, DrillError> {
        self.cluster
            .proxy
            .as_ref()
            .map(|p| p.handle())
            .ok_or_else(|| {
                DrillError::Action(
                    "a proxy fault needs the proxy (one order-svc instance, proxy on)".into(),
                )
            })
    }

    fn proxy_fault(&mut self, fault: &Fault, lasting: Option<Duration>) -> Result<(), DrillError> {
        let proxy = self.proxy()?;
        proxy.set_fault(fault.clone());
        let label = format!("proxy {fault}");
        self.set_status(&label);
        let start = self.elapsed().as_secs_f64();
        // Open until a later step clears it (end < start marks it open), or for `lasting`.
        let end = lasting.map_or(-1.0, |d| start + d.as_secs_f64());
        self.faults.push(FaultWindow {
            label,
            start_s: start,
            end_s: end,
        });
        if let Some(lasting) = lasting {
            let fault = fault.clone();
            let status = self.status.clone();
            tokio::spawn(async move {
                tokio::time::sleep(lasting).await;
                // Only this fault: a later step may have set another one meanwhile.
                if proxy.fault() == fault {
                    proxy.clear();
                    status
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .clear();
                }
            });
        }
        Ok(())
    }

    async fn rolling_restart(
        &mut self,
        service: Service,
        drain: Duration,
        pause: Duration,
    ) -> Result<(), DrillError> {
        let instances = match service {
            Service::Order => self.cluster.order_instances(),
            Service::Approval => self.cluster.more_approvals.len() + 1,
        };
        let began = self.elapsed();
        let mut steps = Vec::with_capacity(instances);
        for n in 0..instances {
            let label = format!("SIGTERM+restart {}#{n}", service.name());
            self.set_status(&label);
            let start = self.elapsed();
            let signalled = Instant::now();
            let status = self.instance(service, n)?.terminate(drain).await?;
            if !status.success() {
                return Err(DrillError::Action(format!(
                    "{}#{n} exited with {status} after SIGTERM",
                    service.name()
                )));
            }
            let drained = signalled.elapsed();
            self.instance(service, n)?.restart().await?;
            steps.push(format!(
                "#{n}:drain={drained:.0?},back={:.0?}",
                signalled.elapsed()
            ));
            self.fault_window(&label, start);
            tokio::time::sleep(pause).await;
        }
        let ended = self.elapsed();
        self.set_status("");
        self.figure("restart", format!("{began:.2?}..{ended:.2?}"));
        self.figure("steps", steps.join(";"));
        let answered = self.answered();
        self.figure("answered_by_restart_end", answered);
        Ok(())
    }

    /// Instance `n` of `service`.
    pub fn instance(
        &mut self,
        service: Service,
        n: usize,
    ) -> Result<&mut ServiceProcess, DrillError> {
        let count = match service {
            Service::Order => self.cluster.order_instances(),
            Service::Approval => self.cluster.more_approvals.len() + 1,
        };
        if n >= count {
            return Err(DrillError::Action(format!(
                "{}#{n}: there are {count} instance(s)",
                service.name()
            )));
        }
        Ok(match service {
            Service::Order => self.cluster.order_instance(n),
            Service::Approval => self.cluster.approval_instance(n),
        })
    }

    fn set_status(&self, status: &str) {
        *self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = status.to_owned();
    }
}

/// Check options with the given accepted approvals (sorted, deduplicated).
pub fn accepted_options(ids: &[String]) -> CheckOptions {
    let mut accepted = ids.to_vec();
    accepted.sort();
    accepted.dedup();
    CheckOptions {
        accepted,
        ..CheckOptions::default()
    }
}

/// Adds `other`'s answers to `run` (elapsed: the longer).
pub(super) fn merge(run: &mut ApproveRun, other: &ApproveRun) {
    run.outcomes.merge(&other.outcomes);
    run.accepted.extend(other.accepted.iter().cloned());
    run.errored.extend(other.errored.iter().cloned());
    run.latencies.extend(other.latencies.iter().copied());
    run.elapsed = run.elapsed.max(other.elapsed);
}
