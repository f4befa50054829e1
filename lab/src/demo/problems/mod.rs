//! The six problems: each a name, a sentence, the invariant its unsafe run must break (none for
//! `no-circuit-breaker`, which is judged on latency), and its two runs.

use lab_drill::check::Invariant;

use super::setup::Side;

mod approvals;
mod slow;
mod stock_race;

/// One production problem `lab demo` reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Problem {
    /// Concurrent clicks on one challenge.
    DuplicateApproval,
    /// Many buyers, few units.
    StockRace,
    /// The order call fails after the approval was recorded.
    EmptyApproval,
    /// The order was created, its reply lost, and the call retried.
    LostResponse,
    /// The order exists but the approval was never recorded.
    GhostOrder,
    /// A slow order-svc and nothing to stop the calls piling up.
    NoCircuitBreaker,
}

impl Problem {
    /// All six, in the design's order.
    pub(crate) const ALL: [Self; 6] = [
        Self::DuplicateApproval,
        Self::StockRace,
        Self::EmptyApproval,
        Self::LostResponse,
        Self::GhostOrder,
        Self::NoCircuitBreaker,
    ];

    /// The name on the command line (API.md).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::DuplicateApproval => "duplicate-approval",
            Self::StockRace => "stock-race",
            Self::EmptyApproval => "empty-approval",
            Self::LostResponse => "lost-response",
            Self::GhostOrder => "ghost-order",
            Self::NoCircuitBreaker => "no-circuit-breaker",
        }
    }

    /// One sentence: the naive code and what it lets happen.
    pub(crate) fn sentence(self) -> &'static str {
        match self {
            Self::DuplicateApproval => {
                "Admins click Approve at once and the approver reads the challenge, then updates it, without FOR UPDATE or the APPROVING state: one challenge gets several orders (I2)."
            }
            Self::StockRace => {
                "Buyers read the stock, check it and write stock = read - qty without a lock or a conditional UPDATE: more is sold than the stock went down (I1)."
            }
            Self::EmptyApproval => {
                "The approver marks the challenge APPROVED first and then calls order-svc, which fails: the challenge stays APPROVED without an order (I3)."
            }
            Self::LostResponse => {
                "Replies of created orders are lost and the approver retries without a stable idempotency key: one approval, several orders (I2)."
            }
            Self::GhostOrder => {
                "The approver calls order-svc first and records the approval after, and dies in between: orders that no challenge owns (I4)."
            }
            Self::NoCircuitBreaker => {
                "order-svc is slow and the approver has no deadline, per-try timeout or breaker: latency and calls in flight grow for as long as it lasts, where the real stack fails fast with APPROVE_FAILED."
            }
        }
    }

    /// The invariant the unsafe run must break; `None` when the problem is judged on latency.
    pub(crate) fn breaks(self) -> Option<Invariant> {
        match self {
            Self::DuplicateApproval | Self::LostResponse => Some(Invariant::I2),
            Self::StockRace => Some(Invariant::I1),
            Self::EmptyApproval => Some(Invariant::I3),
            Self::GhostOrder => Some(Invariant::I4),
            Self::NoCircuitBreaker => None,
        }
    }

    /// The run with the safeguard replaced by naive code.
    pub(crate) async fn unsafe_run(self) -> anyhow::Result<Side> {
        match self {
            Self::DuplicateApproval => approvals::duplicate::unsafe_run().await,
            Self::StockRace => stock_race::unsafe_run().await,
            Self::EmptyApproval => approvals::empty::unsafe_run().await,
            Self::LostResponse => approvals::lost::unsafe_run().await,
            Self::GhostOrder => approvals::ghost::unsafe_run().await,
            Self::NoCircuitBreaker => slow::unsafe_run().await,
        }
    }

    /// The same workload through the real services.
    pub(crate) async fn safe_run(self) -> anyhow::Result<Side> {
        match self {
            Self::DuplicateApproval => approvals::duplicate::safe_run().await,
            Self::StockRace => stock_race::safe_run().await,
            Self::EmptyApproval => approvals::empty::safe_run().await,
            Self::LostResponse => approvals::lost::safe_run().await,
            Self::GhostOrder => approvals::ghost::safe_run().await,
            Self::NoCircuitBreaker => slow::safe_run().await,
        }
    }
}
