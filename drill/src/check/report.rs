//! What a check found: per invariant, how many were checked, the violations and the ids.

use std::collections::BTreeMap;
use std::fmt;

/// The six invariants of `shared/DESIGN.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// No oversell.
    I1,
    /// At most one order per idempotency key, at most one live order per challenge.
    I2,
    /// Every APPROVED challenge has exactly one CREATED order with its key, product, quantity.
    I3,
    /// No ghost order once settled.
    I4,
    /// Nothing stuck in APPROVING or REVOKING past its lease.
    I5,
    /// Nothing lost: every accepted approval ends somewhere final.
    I6,
}

impl Invariant {
    /// All six, in order.
    pub const ALL: [Self; 6] = [Self::I1, Self::I2, Self::I3, Self::I4, Self::I5, Self::I6];

    /// A short description.
    pub fn title(self) -> &'static str {
        match self {
            Self::I1 => "no oversell (per product)",
            Self::I2 => "one order per key / per challenge",
            Self::I3 => "APPROVED has exactly its order",
            Self::I4 => "no ghost order",
            Self::I5 => "nothing stuck past its lease",
            Self::I6 => "nothing lost",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, so the report's table lines up.
        f.pad(match self {
            Self::I1 => "I1",
            Self::I2 => "I2",
            Self::I3 => "I3",
            Self::I4 => "I4",
            Self::I5 => "I5",
            Self::I6 => "I6",
        })
    }
}

/// One offending object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The offending id (product, order or challenge id, or an idempotency key).
    pub id: String,
    /// What is wrong with it.
    pub detail: String,
}

/// The result of one invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Which invariant.
    pub invariant: Invariant,
    /// Objects examined.
    pub checked: usize,
    /// Violations found (complete count).
    pub violation_count: usize,
    /// The first violations (at most 1 000).
    pub violations: Vec<Violation>,
}

/// What [`check`](super::check) found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// One outcome per invariant, I1 to I6.
    pub outcomes: Vec<Outcome>,
    /// Challenges by status name (e.g. `APPROVED`).
    pub challenges_by_status: BTreeMap<String, usize>,
    /// Challenges dead-lettered.
    pub dead_lettered: usize,
    /// Orders by status name.
    pub orders_by_status: BTreeMap<String, usize>,
    /// Products read.
    pub products: usize,
    /// CREATED orders of challenges still settling (see I4); zero once the system settled.
    pub unsettled: usize,
    /// Challenges in flight (APPROVING or REVOKING).
    pub in_flight: usize,
    /// Challenges in APPROVE_FAILED with an automatic retry scheduled.
    pub retries_scheduled: usize,
}

impl Report {
    /// True when no invariant is violated.
    pub fn is_clean(&self) -> bool {
        self.outcomes.iter().all(|o| o.violation_count == 0)
    }

    /// True when clean and nothing is still moving: no order of a settling challenge, no
    /// challenge in flight, no automatic retry scheduled.
    pub fn is_settled(&self) -> bool {
        self.is_clean() && self.unsettled == 0 && self.in_flight == 0 && self.retries_scheduled == 0
    }

    /// The outcome of one invariant.
    pub fn outcome(&self, invariant: Invariant) -> &Outcome {
        &self.outcomes[invariant as usize]
    }

    /// Total violations over all invariants.
    pub fn violation_count(&self) -> usize {
        self.outcomes.iter().map(|o| o.violation_count).sum()
    }

    /// Number of challenges in a status (e.g. `"APPROVED"`).
    pub fn challenges(&self, status: &str) -> usize {
        self.challenges_by_status.get(status).copied().unwrap_or(0)
    }

    /// Number of orders in a status (`"CREATED"` or `"CANCELLED"`).
    pub fn orders(&self, status: &str) -> usize {
        self.orders_by_status.get(status).copied().unwrap_or(0)
    }
}

impl fmt::Display for Report {
    /// A table of the six invariants, then up to 10 offending ids per violated invariant.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = |map: &BTreeMap<String, usize>| {
            if map.is_empty() {
                return "none".to_owned();
            }
            map.iter()
                .map(|(status, n)| format!("{status} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "challenges: {} ({}; dead-lettered {})",
            self.challenges_by_status.values().sum::<usize>(),
            counts(&self.challenges_by_status),
            self.dead_lettered
        )?;
        writeln!(
            f,
            "orders: {} ({}); products: {}",
            self.orders_by_status.values().sum::<usize>(),
            counts(&self.orders_by_status),
            self.products,
        )?;
        writeln!(
            f,
            "still settling: {} orders of unsettled challenges, {} challenges in flight, {} retries scheduled",
            self.unsettled, self.in_flight, self.retries_scheduled
        )?;
        writeln!(
            f,
            "{:<4} {:<36} {:>8} {:>10}  result",
            "", "invariant", "checked", "violations"
        )?;
        for outcome in &self.outcomes {
            writeln!(
                f,
                "{:<4} {:<36} {:>8} {:>10}  {}",
                outcome.invariant,
                outcome.invariant.title(),
                outcome.checked,
                outcome.violation_count,
                if outcome.violation_count == 0 {
                    "ok"
                } else {
                    "VIOLATED"
                }
            )?;
        }
        for outcome in self.outcomes.iter().filter(|o| o.violation_count > 0) {
            for violation in outcome.violations.iter().take(10) {
                writeln!(
                    f,
                    "  {} {}: {}",
                    outcome.invariant, violation.id, violation.detail
                )?;
            }
            if outcome.violation_count > 10 {
                writeln!(
                    f,
                    "  {} … and {} more",
                    outcome.invariant,
                    outcome.violation_count - 10
                )?;
            }
        }
        Ok(())
    }
}
