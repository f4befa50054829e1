//! From violations to alerts: each incident is alerted once when it opens, once more when it is
//! healed or resolved, and never while it merely stays open. An open incident resolves only
//! when a check examined its subject and did not find it violated: a check that could not
//! tell (order-svc did not know the product, did not answer) leaves it open, so an incident
//! never flaps between resolved and paged again.

use lab_common::alerts::{Action, Alert, Alerter, Severity};
use serde_json::json;
use sqlx::PgPool;

use super::metrics;
use super::report::{Report, Violation};
use super::store::{self, Seen};

/// Records every violation of `report` as an incident, alerts what is new, and resolves open
/// incidents the check saw holding. Returns the number of alerts delivered.
pub async fn notify(pool: &PgPool, alerter: &Alerter, report: &Report) -> sqlx::Result<i64> {
    let open_before = store::open_incidents(pool).await?;
    let mut delivered = 0i64;
    for violation in &report.violations {
        let seen = store::record_incident(pool, violation).await?;
        let alert = match (seen, violation.healed) {
            (Seen::New, false) => Some(alert(violation, Action::Trigger, Severity::Critical)),
            (Seen::New, true) => Some(alert(violation, Action::Trigger, Severity::Info)),
            (Seen::AlreadyOpen, true) => Some(alert(violation, Action::Resolve, Severity::Info)),
            (Seen::AlreadyOpen, false) => None,
        };
        if let Some(alert) = alert {
            delivered += deliver(alerter, &alert).await;
        }
    }
    let still_seen: std::collections::HashSet<String> =
        report.violations.iter().map(Violation::dedup_key).collect();
    for incident in open_before {
        let seen_holding = incident
            .subject()
            .is_some_and(|subject| report.examined.contains(&subject))
            && !still_seen.contains(&incident.dedup_key);
        if !seen_holding {
            continue;
        }
        if store::resolve_incident(pool, &incident.dedup_key).await? {
            let resolved = Alert {
                dedup_key: incident.dedup_key.clone(),
                action: Action::Resolve,
                summary: format!("{} no longer seen", incident.dedup_key),
                severity: Severity::Info,
                details: json!({ "dedup_key": incident.dedup_key }),
            };
            delivered += deliver(alerter, &resolved).await;
        }
    }
    Ok(delivered)
}

async fn deliver(alerter: &Alerter, alert: &Alert) -> i64 {
    if !alerter.is_enabled() {
        return 0;
    }
    let delivered = alerter.send(alert).await;
    metrics::alert_sent(alert.action);
    i64::try_from(delivered).unwrap_or(i64::MAX)
}

fn alert(violation: &Violation, action: Action, severity: Severity) -> Alert {
    let verb = match (action, violation.healed) {
        (Action::Resolve, _) => "healed",
        (Action::Trigger, true) => "found and healed",
        (Action::Trigger, false) => "violated",
    };
    Alert {
        dedup_key: violation.dedup_key(),
        action,
        summary: format!(
            "{} {verb}: {}",
            violation.invariant.code(),
            violation.detail
        ),
        severity,
        details: json!({
            "invariant": violation.invariant.code(),
            "challenge_id": violation.challenge_id.map(|id| id.to_string()),
            "order_id": violation.order_id.map(|id| id.to_string()),
            "product_id": violation.product_id.map(|id| id.to_string()),
            "detail": violation.detail,
            "healed": violation.healed,
            "action": violation.action,
        }),
    }
}
