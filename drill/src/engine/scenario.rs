//! What a drill is: a [`Scenario`] declares the cluster, the workload, the fault timeline, how
//! the system is let settle, and what is expected of it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::ClusterOptions;
use crate::proxy::Fault;

use super::{Drill, DrillError};

/// A drill's declaration. Build one with [`Scenario::new`] and the builder methods, or take a
/// built-in one from [`crate::scenarios`].
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name (`kill-order-svc`, `s07`, …): the report's title.
    pub name: String,
    /// The label of its summary line (e.g. `s07 kill -9 order-svc`).
    pub title: String,
    /// Seed of the challenges' user ids and of the proxy's random draws.
    pub seed: u64,
    /// The services to start.
    pub cluster: ClusterOptions,
    /// The load.
    pub workload: Workload,
    /// Steps run in order, concurrently with the load (see [`At`]).
    pub timeline: Vec<Step>,
    /// Applied after the products and challenges exist, right before the load (a fault the
    /// whole load meets, a database fault installed by a hook, a first snapshot).
    pub before_load: Vec<Action>,
    /// How the system is let settle before the final check.
    pub settle: Settle,
    /// What the drill expects besides I1–I6 (reported; the exit code follows I1–I6 only).
    pub expect: Expectations,
}

impl Scenario {
    /// A scenario with the default cluster (one instance of each, proxy in front of order-svc),
    /// the default workload and no faults.
    pub fn new(name: &str, title: &str, seed: u64) -> Self {
        Self {
            name: name.to_owned(),
            title: title.to_owned(),
            seed,
            cluster: ClusterOptions::default().seed(seed),
            workload: Workload::default(),
            timeline: Vec::new(),
            before_load: Vec::new(),
            settle: Settle::default(),
            expect: Expectations::default(),
        }
    }

    /// Sets the cluster options (the proxy's seed stays the scenario's).
    pub fn cluster(mut self, options: ClusterOptions) -> Self {
        self.cluster = options.seed(self.seed);
        self
    }

    /// Sets the workload.
    pub fn workload(mut self, workload: Workload) -> Self {
        self.workload = workload;
        self
    }

    /// Adds a timeline step.
    pub fn at(mut self, at: At, action: Action) -> Self {
        self.timeline.push(Step { at, action });
        self
    }

    /// Adds an action applied right before the load.
    pub fn before_load(mut self, action: Action) -> Self {
        self.before_load.push(action);
        self
    }

    /// Sets how the system settles.
    pub fn settle(mut self, settle: Settle) -> Self {
        self.settle = settle;
        self
    }

    /// Sets the expectations.
    pub fn expect(mut self, expect: Expectations) -> Self {
        self.expect = expect;
        self
    }
}

/// One product the drill creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Its name.
    pub name: String,
    /// Its initial stock.
    pub stock: i64,
}

/// The load: products, challenges, and how their approvals are sent.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Products created first; challenges go to them in turn. Default one "reward" of 1 000.
    pub products: Vec<Product>,
    /// Challenges submitted before the load.
    pub challenges: usize,
    /// Units each challenge asks for. Default 1.
    pub quantity: i32,
    /// Challenges submitted at once. Default 32.
    pub submit_concurrency: usize,
    /// Approvals sent per challenge, adjacent in the load (several administrators clicking
    /// "approve" at once). Default 1.
    pub clicks_per_challenge: usize,
    /// How approvals are sent.
    pub pacing: Pacing,
    /// Each approval's deadline (`grpc-timeout`). Default 10 s.
    pub deadline: Duration,
    /// Spread the approvals over every approval-svc instance (challenge `n` to instance
    /// `n % instances`, each at its share of the rate) instead of sending all to instance 0.
    pub spread: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            products: vec![Product {
                name: "reward".into(),
                stock: 1_000,
            }],
            challenges: 100,
            quantity: 1,
            submit_concurrency: 32,
            clicks_per_challenge: 1,
            pacing: Pacing::Concurrent { concurrency: 8 },
            deadline: Duration::from_secs(10),
            spread: false,
        }
    }
}

impl Workload {
    /// `challenges` approvals of one product of `stock`, sent as `pacing` says.
    pub fn new(challenges: usize, stock: i64, pacing: Pacing) -> Self {
        Self {
            products: vec![Product {
                name: "reward".into(),
                stock,
            }],
            challenges,
            pacing,
            ..Self::default()
        }
    }

    /// Sets the per-approval deadline.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the quantity per challenge.
    pub fn quantity(mut self, quantity: i32) -> Self {
        self.quantity = quantity;
        self
    }

    /// Sets how many challenges are submitted at once.
    pub fn submit_concurrency(mut self, n: usize) -> Self {
        self.submit_concurrency = n;
        self
    }

    /// Sends `n` simultaneous approvals per challenge.
    pub fn clicks_per_challenge(mut self, n: usize) -> Self {
        self.clicks_per_challenge = n.max(1);
        self
    }

    /// Spreads the approvals over every approval-svc instance.
    pub fn spread(mut self) -> Self {
        self.spread = true;
        self
    }

    /// The stock of every product together.
    pub fn total_stock(&self) -> i64 {
        self.products.iter().map(|p| p.stock).sum()
    }
}

/// How approvals are sent.
#[derive(Clone)]
pub enum Pacing {
    /// As fast as `concurrency` callers can.
    Concurrent {
        /// Calls in flight at once.
        concurrency: usize,
    },
    /// One call every `1 / per_second` s (at most `max_in_flight` at once), the way traffic
    /// keeps arriving whatever the service is going through.
    Paced {
        /// Calls started per second (over every instance when spread).
        per_second: f64,
        /// Calls in flight at once (per instance when spread).
        max_in_flight: usize,
    },
    /// The scenario drives the calls itself (e.g. in phases around a fault, or revokes after
    /// approvals): the hook sends them through the [`Drill`] and records what it got
    /// ([`Drill::record_run`]). The timeline runs once it returns.
    Custom(Hook),
}

impl Pacing {
    /// [`Pacing::Paced`]: `per_second` calls a second, at most `max_in_flight` at once.
    pub fn paced(per_second: f64, max_in_flight: usize) -> Self {
        Self::Paced {
            per_second,
            max_in_flight,
        }
    }
}

impl fmt::Debug for Pacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Concurrent { concurrency } => write!(f, "{concurrency} concurrent"),
            Self::Paced {
                per_second,
                max_in_flight,
            } => write!(f, "{per_second}/s (max {max_in_flight} in flight)"),
            Self::Custom(_) => write!(f, "custom"),
        }
    }
}

/// When a timeline step runs. Steps run one after the other, each once its moment came.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    /// This long after the load started.
    Time(Duration),
    /// Once this many approvals were answered.
    Answers(u64),
    /// Once this many approvals sent to approval-svc instance `instance` were answered (a
    /// spread workload).
    AnswersVia {
        /// The instance.
        instance: usize,
        /// Answers.
        n: u64,
    },
    /// This long after the previous step (0: right after it).
    After(Duration),
    /// This long after the load ended.
    LoadDone(Duration),
}

/// Which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// order-svc.
    Order,
    /// approval-svc.
    Approval,
}

impl Service {
    /// Its binary's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Order => "order-svc",
            Self::Approval => "approval-svc",
        }
    }
}

/// Whose database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Databases {
    /// order-svc's.
    Order,
    /// approval-svc's.
    Approval,
    /// Both (approval-svc's first).
    Both,
}

/// What a timeline step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// `kill -9` an instance (it stays down until a [`Action::Restart`]).
    Kill(Service, usize),
    /// SIGTERM an instance and wait (at most `drain`) for it to exit 0.
    Terminate(Service, usize, Duration),
    /// Start an instance again on its address and database.
    Restart(Service, usize),
    /// SIGTERM, wait for the exit, start again, pause, for every instance in turn (a deploy).
    RollingRestart {
        /// The service.
        service: Service,
        /// How long each instance may take to drain.
        drain: Duration,
        /// The pause after an instance serves again, before the next one's SIGTERM.
        pause: Duration,
    },
    /// Set the proxy's fault, cleared again after `lasting` when given.
    Proxy {
        /// The fault.
        fault: Fault,
        /// How long it lasts (until a later step changes it when `None`).
        lasting: Option<Duration>,
    },
    /// Clear the proxy's fault.
    ClearProxy,
    /// Terminate every connection to a database (`pg_terminate_backend`).
    TerminateConnections(Databases),
    /// Record a [`super::Snapshot`] under this name (with an I1–I6 check when `check`).
    Snapshot {
        /// Its name.
        name: String,
        /// Also check I1–I6 (a read of everything; off for counters only).
        check: bool,
    },
    /// A scenario's own step.
    Custom(Hook),
}

impl Action {
    /// A counters-only snapshot.
    pub fn counters(name: &str) -> Self {
        Self::Snapshot {
            name: name.to_owned(),
            check: false,
        }
    }

    /// A snapshot with an I1–I6 check.
    pub fn checked(name: &str) -> Self {
        Self::Snapshot {
            name: name.to_owned(),
            check: true,
        }
    }

    /// A proxy fault until further notice.
    pub fn proxy(fault: Fault) -> Self {
        Self::Proxy {
            fault,
            lasting: None,
        }
    }
}

/// One step of the timeline.
#[derive(Debug, Clone)]
pub struct Step {
    /// When.
    pub at: At,
    /// What.
    pub action: Action,
}

/// How the system is let settle after the load.
#[derive(Debug, Clone)]
pub struct Settle {
    /// Re-send, as callers do, the approvals that got an error, this many at once (`None`: no).
    pub resend_errored: Option<usize>,
    /// A pause before checking (automatic retries at work).
    pub pause: Duration,
    /// How long the final check waits for the system to settle.
    pub timeout: Duration,
}

impl Default for Settle {
    fn default() -> Self {
        Self {
            resend_errored: None,
            pause: Duration::ZERO,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What a drill expects besides I1–I6; each becomes a line of the report.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// At most this many approvals may fail for the caller (after re-sends; OUT_OF_STOCK is
    /// an answer, not a failure).
    pub max_failed: Option<u64>,
    /// No challenge may end dead-lettered (every transient failure finished by retries).
    pub no_dead_letters: bool,
    /// The exact end state: min(stock, challenges) APPROVED, the rest APPROVE_FAILED.
    pub exact_end_state: bool,
}

/// A scenario's own step: an async function of the running [`Drill`].
#[derive(Clone)]
pub struct Hook(Arc<HookFn>);

type HookFn = dyn for<'a> Fn(&'a mut Drill) -> Pin<Box<dyn Future<Output = Result<(), DrillError>> + Send + 'a>>
    + Send
    + Sync;

impl Hook {
    /// Wraps `f`; write it as `Hook::new(|drill| Box::pin(async move { … }))`.
    pub fn new<F>(f: F) -> Self
    where
        F: for<'a> Fn(
                &'a mut Drill,
            )
                -> Pin<Box<dyn Future<Output = Result<(), DrillError>> + Send + 'a>>
            + Send
            + Sync
            + 'static,
    {
        Self(Arc::new(f))
    }

    /// Runs it.
    pub async fn call(&self, drill: &mut Drill) -> Result<(), DrillError> {
        (self.0)(drill).await
    }
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook")
    }
}
