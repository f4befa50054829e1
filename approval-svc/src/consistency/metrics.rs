//! The checker's metrics, all recorded here:
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `consistency_checks_total{result}` | counter | checks run: `ok` (a verdict) or `error` (none; nothing resolved) |
//! | `consistency_violations{invariant}` | gauge | violations the last check left unhealed |
//! | `consistency_healed_total{invariant}` | counter | violations healed |
//! | `consistency_alerts_total{action}` | counter | alerts sent: `trigger` or `resolve` |
//! | `consistency_last_check_timestamp_seconds` | gauge | when the last successful check started |

use lab_common::alerts::Action;

use super::report::{Invariant, Report};

/// Counts a check that ran (`ok`) or stopped without a verdict (`error`).
pub fn check_finished(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!("consistency_checks_total", "result" => result).increment(1);
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
        metrics::gauge!("consistency_violations", "invariant" => invariant.code())
            .set(unhealed as f64);
        metrics::counter!("consistency_healed_total", "invariant" => invariant.code())
            .increment(healed as u64);
    }
    metrics::gauge!("consistency_last_check_timestamp_seconds")
        .set(report.started_at.timestamp() as f64);
}

/// Counts an alert sent.
pub fn alert_sent(action: Action) {
    let action = match action {
        Action::Trigger => "trigger",
        Action::Resolve => "resolve",
    };
    metrics::counter!("consistency_alerts_total", "action" => action).increment(1);
}
