//! What a consistency check found (its protobuf form is in `service::convert`).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The invariants of `shared/DESIGN.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// I1 no oversell.
    NoOversell,
    /// I2 at most one order per key, one live order per challenge.
    OneOrderPerKey,
    /// I3 every APPROVED challenge has exactly one matching CREATED order.
    ApprovedHasOrder,
    /// I4 no ghost order.
    NoGhostOrder,
    /// I5 nothing stuck past its lease.
    NothingStuck,
    /// I6 nothing lost.
    NothingLost,
}

impl Invariant {
    /// Short name, as in DESIGN.md (`I1` … `I6`); also the metric label.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoOversell => "I1",
            Self::OneOrderPerKey => "I2",
            Self::ApprovedHasOrder => "I3",
            Self::NoGhostOrder => "I4",
            Self::NothingStuck => "I5",
            Self::NothingLost => "I6",
        }
    }

    /// Every invariant, in order.
    pub const ALL: [Self; 6] = [
        Self::NoOversell,
        Self::OneOrderPerKey,
        Self::ApprovedHasOrder,
        Self::NoGhostOrder,
        Self::NothingStuck,
        Self::NothingLost,
    ];
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant broken.
    pub invariant: Invariant,
    /// The challenge involved.
    pub challenge_id: Option<Uuid>,
    /// The order involved.
    pub order_id: Option<Uuid>,
    /// The product involved.
    pub product_id: Option<Uuid>,
    /// What is wrong.
    pub detail: String,
    /// Whether the check repaired it.
    pub healed: bool,
    /// What the check did, or why it could not.
    pub action: String,
}

impl Violation {
    /// A violation about `invariant`, not (yet) healed.
    pub fn new(invariant: Invariant, detail: impl Into<String>) -> Self {
        Self {
            invariant,
            challenge_id: None,
            order_id: None,
            product_id: None,
            detail: detail.into(),
            healed: false,
            action: String::new(),
        }
    }

    /// Names the challenge involved.
    pub fn challenge(mut self, id: Uuid) -> Self {
        self.challenge_id = Some(id);
        self
    }

    /// Names the order involved.
    pub fn order(mut self, id: Uuid) -> Self {
        self.order_id = Some(id);
        self
    }

    /// Names the product involved.
    pub fn product(mut self, id: Uuid) -> Self {
        self.product_id = Some(id);
        self
    }

    /// The stable identity of the incident: the same problem with the same subject always has
    /// the same key, so it is alerted once however many checks see it.
    pub fn dedup_key(&self) -> String {
        let subject = self
            .challenge_id
            .or(self.order_id)
            .or(self.product_id)
            .map_or_else(|| "-".to_owned(), |id| id.to_string());
        format!("lab:{}:{}", self.invariant.code(), subject)
    }
}

/// The result of one check.
#[derive(Debug, Clone)]
pub struct Report {
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration: Duration,
    /// Everything, or only what changed since the watermark.
    pub full: bool,
    /// Challenges examined.
    pub challenges_checked: i64,
    /// Orders examined.
    pub orders_checked: i64,
    /// Products examined.
    pub products_checked: i64,
    /// Problems found, healed or not.
    pub violations: Vec<Violation>,
    /// Subjects (challenge, order, product ids) the check reached a verdict on: an open
    /// incident about anything else stays open, whatever the check did not find.
    pub examined: HashSet<Uuid>,
    /// Alerts delivered.
    pub alerts_sent: i64,
}

impl Report {
    /// Violations the check repaired.
    pub fn healed(&self) -> usize {
        self.violations.iter().filter(|v| v.healed).count()
    }

    /// Violations left.
    pub fn unhealed(&self) -> usize {
        self.violations.len() - self.healed()
    }
}
