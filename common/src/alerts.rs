//! Alert delivery to webhooks: Slack-compatible messages (`text` + `blocks`) and PagerDuty
//! Events API v2 events (`trigger` / `resolve` with a stable `dedup_key`), each POST retried with
//! capped exponential backoff and full jitter.
//!
//! Which format a URL gets: an explicit `slack=` or `pagerduty=` prefix, else PagerDuty when the
//! path ends in `/v2/enqueue` (the Events API's path), else Slack. Deduplication ("the same
//! violation does not page twice") needs memory across checks and instances, so it is the
//! caller's job; PagerDuty's `dedup_key` makes a repeated trigger harmless on its side too.

use std::str::FromStr;
use std::time::Duration;

use resilience::backoff::Backoff;
use serde_json::{Value, json};

/// Longest wait between two deliveries of one alert.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// The payload format a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// Slack incoming-webhook JSON (`text` + `blocks`); also understood by Mattermost and others.
    Slack,
    /// PagerDuty Events API v2.
    PagerDuty,
}

/// One alert receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The payload format.
    pub kind: WebhookKind,
    /// Where to POST.
    pub url: String,
}

impl FromStr for Webhook {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        let (kind, url) = if let Some(url) = spec.strip_prefix("slack=") {
            (WebhookKind::Slack, url)
        } else if let Some(url) = spec.strip_prefix("pagerduty=") {
            (WebhookKind::PagerDuty, url)
        } else if spec.trim_end_matches('/').ends_with("/v2/enqueue") {
            (WebhookKind::PagerDuty, spec)
        } else {
            (WebhookKind::Slack, spec)
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("webhook URL must be http(s): {url}"));
        }
        Ok(Self {
            kind,
            url: url.to_owned(),
        })
    }
}

/// How bad an alert is (PagerDuty's severities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something was healed; for the record.
    Info,
    /// Needs a look soon.
    Warning,
    /// Needs a person now.
    Critical,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// What happened to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A new incident (or an informational notice).
    Trigger,
    /// The incident is over.
    Resolve,
}

/// One alert message.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Stable identity of the incident: the same problem always has the same key.
    pub dedup_key: String,
    /// Trigger or resolve.
    pub action: Action,
    /// One line for people.
    pub summary: String,
    /// How bad.
    pub severity: Severity,
    /// Structured details (counts, offending ids).
    pub details: Value,
}

/// Sends alerts to every configured webhook.
#[derive(Debug, Clone)]
pub struct Alerter {
    client: reqwest::Client,
    webhooks: Vec<Webhook>,
    routing_key: String,
    source: String,
    attempts: u32,
    backoff: Backoff,
}

impl Alerter {
    /// Delivers to `webhooks`; `routing_key` is PagerDuty's integration key and `source` names
    /// the sender in payloads.
    pub fn new(
        webhooks: Vec<Webhook>,
        routing_key: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            webhooks,
            routing_key: routing_key.into(),
            source: source.into(),
            attempts: 4,
            backoff: Backoff::new(Duration::from_millis(200), BACKOFF_CAP),
        }
    }

    /// Overrides the retry policy (attempts per webhook, first backoff ceiling).
    pub fn with_retries(mut self, attempts: u32, backoff_base: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = Backoff::new(backoff_base, BACKOFF_CAP);
        self
    }

    /// True when at least one webhook is configured.
    pub fn is_enabled(&self) -> bool {
        !self.webhooks.is_empty()
    }

    /// Sends `alert` to every webhook; returns how many accepted it (2xx). An informational
    /// trigger goes to chat webhooks only (it must not page anyone); a resolve goes everywhere.
    pub async fn send(&self, alert: &Alert) -> usize {
        let mut delivered = 0;
        for webhook in &self.webhooks {
            let informational = alert.action == Action::Trigger && alert.severity == Severity::Info;
            if webhook.kind == WebhookKind::PagerDuty && informational {
                continue;
            }
            let payload = match webhook.kind {
                WebhookKind::Slack => slack_payload(alert, &self.source),
                WebhookKind::PagerDuty => pagerduty_payload(alert, &self.routing_key, &self.source),
            };
            if self.post(&webhook.url, &payload).await {
                delivered += 1;
            }
        }
        delivered
    }

    async fn post(&self, url: &str, payload: &Value) -> bool {
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff.delay(attempt)).await;
            }
            match self.client.post(url).json(payload).send().await {
                Ok(response) if response.status().is_success() => return true,
                // 4xx other than throttling will not get better by retrying.
                Ok(response)
                    if response.status().is_client_error()
                        && response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    tracing::warn!(status = %response.status(), "alert webhook refused the payload");
                    return false;
                }
                Ok(response) => {
                    tracing::warn!(status = %response.status(), attempt, "alert webhook failed")
                }
                Err(error) => tracing::warn!(%error, attempt, "alert webhook unreachable"),
            }
        }
        false
    }
}

/// Slack incoming-webhook payload: `text` for notifications, `blocks` for the message.
pub fn slack_payload(alert: &Alert, source: &str) -> Value {
    let icon = match (alert.action, alert.severity) {
        (Action::Resolve, _) => ":white_check_mark: RESOLVED",
        (_, Severity::Critical) => ":rotating_light: CRITICAL",
        (_, Severity::Warning) => ":warning: WARNING",
        (_, Severity::Info) => ":information_source: INFO",
    };
    let text = format!("{icon} [{source}] {}", alert.summary);
    let details = serde_json::to_string_pretty(&alert.details).unwrap_or_default();
    json!({
        "text": text,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            { "type": "section", "text": { "type": "mrkdwn", "text": format!("```{details}```") } },
            { "type": "context", "elements": [
                { "type": "mrkdwn", "text": format!("dedup_key: `{}`", alert.dedup_key) }
            ] }
        ]
    })
}

/// PagerDuty Events API v2 payload.
pub fn pagerduty_payload(alert: &Alert, routing_key: &str, source: &str) -> Value {
    match alert.action {
        Action::Trigger => json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": alert.dedup_key,
            "payload": {
                "summary": alert.summary,
                "source": source,
                "severity": alert.severity.as_str(),
                "component": "approval-svc",
                "group": "concurrency-lab",
                "class": "consistency",
                "custom_details": alert.details,
            }
        }),
        Action::Resolve => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": alert.dedup_key,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_kind_from_prefix_or_path() {
        let slack: Webhook = "http://127.0.0.1:9/hook".parse().unwrap();
        assert_eq!(slack.kind, WebhookKind::Slack);
        let pd: Webhook = "https://events.example/v2/enqueue".parse().unwrap();
        assert_eq!(pd.kind, WebhookKind::PagerDuty);
        let forced: Webhook = "pagerduty=http://127.0.0.1:9/x".parse().unwrap();
        assert_eq!(
            (forced.kind, forced.url.as_str()),
            (WebhookKind::PagerDuty, "http://127.0.0.1:9/x")
        );
        assert!("ftp://nope".parse::<Webhook>().is_err());
    }

    #[test]
    fn pagerduty_resolve_carries_only_the_key() {
        let alert = Alert {
            dedup_key: "I3:abc".into(),
            action: Action::Resolve,
            summary: "s".into(),
            severity: Severity::Critical,
            details: json!({}),
        };
        let payload = pagerduty_payload(&alert, "rk", "approval-svc");
        assert_eq!(payload["event_action"], "resolve");
        assert_eq!(payload["dedup_key"], "I3:abc");
        assert!(payload.get("payload").is_none());
    }

    #[test]
    fn jitter_stays_under_the_cap() {
        let alerter = Alerter::new(Vec::new(), "", "test");
        for attempt in 1..40 {
            assert!(alerter.backoff.delay(attempt) <= Duration::from_secs(30));
        }
    }
}
