//! The checker's metrics, all recorded here:
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `consistency_checks_total{result}` | counter | checks run: `ok` (a verdict) or `error` (none; nothing resolved) |
//! | `consistency_violations{invariant}` | gauge | violations the last check left unhealed |
//! | `consistency_healed_total{invariant}` | counter | violations healed |
//! | `consistency_alerts_total{action}` | counter | alerts sent: `trigger` or `resolve` |
//! | `consistency_last_check_timestamp_seconds` | gauge | when the last successful check started |
//!
//! [`register`] exports them all before the first scrape, beside `crate::metrics::register`.

use lab_common::alerts::Action;
use metrics::{Unit, describe_counter, describe_gauge};
use sqlx::PgPool;

use super::report::{Invariant, Report};
use super::store;

const CHECKS: &str = "consistency_checks_total";
const VIOLATIONS: &str = "consistency_violations";
const HEALED: &str = "consistency_healed_total";
const ALERTS: &str = "consistency_alerts_total";
const LAST_CHECK: &str = "consistency_last_check_timestamp_seconds";

/// Describes the checker's families, exports the counters at 0 for each known label value and
/// sets the last check's time from the watermark (the last check of any instance), so the first
/// scrape shows every family. Call before serving `/metrics`.
pub async fn register(pool: &PgPool) {
    describe();
    // Not `absolute(0)`: in tests several servers share the process's counts.
    for result in ["ok", "error"] {
        metrics::counter!(CHECKS, "result" => result).increment(0);
    }
    for invariant in Invariant::ALL {
        metrics::counter!(HEALED, "invariant" => invariant.code()).increment(0);
        // Unknown until this instance checks; a registered gauge starts at 0.
        let _ = metrics::gauge!(VIOLATIONS, "invariant" => invariant.code());
    }
    for action in ["trigger", "resolve"] {
        metrics::counter!(ALERTS, "action" => action).increment(0);
    }
    match store::watermark(pool).await {
        Ok(last_check) => {
            metrics::gauge!(LAST_CHECK).set(last_check.map_or(0.0, |at| at.timestamp() as f64))
        }
        Err(error) => {
            let _ = metrics::gauge!(LAST_CHECK);
            tracing::warn!(%error, "reading the last check's time failed");
        }
    }
}

fn describe() {
    describe_counter!(
        CHECKS,
        "Consistency checks run by this instance, by result (ok, error)."
    );
    describe_gauge!(
        VIOLATIONS,
        "Violations left unhealed by this instance's last consistency check, by invariant."
    );
    describe_counter!(
        HEALED,
        "Violations the consistency checker healed, by invariant."
    );
    describe_counter!(
        ALERTS,
        "Consistency alerts sent to the webhooks, by action (trigger, resolve)."
    );
    describe_gauge!(
        LAST_CHECK,
        Unit::Seconds,
        "Unix time at which the last consistency check started (this instance's, or at start-up \
         the last one recorded by any instance; 0 before any)."
    );
}

/// Counts a check that ran (`ok`) or stopped without a verdict (`error`).
pub fn check_finished(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!(CHECKS, "result" => result).increment(1);
}

/// Records what a successful check found.
pub fn report(report: &Report) {
    for invariant in Invariant::ALL {
        let of_kind = report
            .violations
            .iter()
            .filter(|v| v.invariant == invariant);
        let unhealed = of_kind.clone().filter(|v| !v.healed).count();
        let healed = of_kind.filter(|v| v.healed).count();
        metrics::gauge!(VIOLATIONS, "invariant" => invariant.code()).set(unhealed as f64);
        metrics::counter!(HEALED, "invariant" => invariant.code()).increment(healed as u64);
    }
    metrics::gauge!(LAST_CHECK).set(report.started_at.timestamp() as f64);
}

/// Counts an alert sent.
pub fn alert_sent(action: Action) {
    let action = match action {
        Action::Trigger => "trigger",
        Action::Resolve => "resolve",
    };
    metrics::counter!(ALERTS, "action" => action).increment(1);
}
