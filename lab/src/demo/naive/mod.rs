//! The naive code each safeguard replaces: what people write before they meet the problem.
//! It runs inside `lab demo` against the real services' databases and RPCs, standing in for
//! the one component whose safeguard is off; it exists only in `lab` behind the `naive-demos`
//! feature, never in a service binary.
//!
//! Orders it places for a challenge carry approval-svc's `client-id` and the challenge's user as
//! customer, exactly as approval-svc's do, so the checker attributes them the same way.

pub(super) mod approver;
pub(super) mod shop;
