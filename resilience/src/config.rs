//! One configuration for the whole client stack, serde-friendly with humantime durations
//! (`"300ms"`, `"2s"`). Every field has a default, so a config file names only what it changes.
//!
//! Nothing is clamped: [`ResilienceConfig::validate`] refuses an out-of-range value with a
//! [`ConfigError`] naming the field, and [`crate::ResilientChannel::try_builder`] checks it before
//! building anything. A trigger is switched off explicitly (`failure_rate: None`, JSON `null`),
//! never by an out-of-range sentinel.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::MAX_SHORTENING;

/// Configuration of [`crate::ResilientChannel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Value of the `client` label on every metric. Default `"default"`.
    pub client: String,
    /// Overall budget of one logical call, retries and backoff included; a smaller incoming
    /// `grpc-timeout` wins. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Budget of one attempt, always capped by what is left of the deadline. Default 300 ms.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// Attempts allowed in flight at once (at least 1), shared by all clones; beyond that calls
    /// fail at once with RESOURCE_EXHAUSTED. Default 256.
    pub concurrency_limit: usize,
    /// Largest unary response buffered for classification; larger ones pass through unbuffered
    /// and are classified by their headers only. Default 4 MiB (tonic's decoding limit).
    pub max_response_bytes: usize,
    /// Retry settings.
    pub retry: RetryConfig,
    /// Circuit breaker settings. Over a balanced set of endpoints (see
    /// [`crate::ResilientChannelBuilder::balance`]) the breaker opens only when no endpoint is
    /// admitted, so its own failure triggers are not used there.
    pub breaker: BreakerConfig,
    /// Per-endpoint failure detection of a balanced set of endpoints.
    pub outlier: OutlierConfig,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            client: crate::telemetry::DEFAULT_CLIENT.to_owned(),
            deadline: Duration::from_secs(2),
            attempt_timeout: Duration::from_millis(300),
            concurrency_limit: 256,
            max_response_bytes: 4 * 1024 * 1024,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            outlier: OutlierConfig::default(),
        }
    }
}

/// Retry settings ([`crate::retry`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per logical call, the first included (at least 1); 1 disables retries.
    /// Default 3.
    pub max_attempts: u32,
    /// Backoff before retry n is uniform in `[0, min(cap, base * 2^(n-1))]`. Default 25 ms.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Upper bound of one backoff (at least `backoff_base`). Default 250 ms.
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// How long a deposit stays in the retry budget (1 s to 60 s, inclusive). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub budget_ttl: Duration,
    /// Retries per second always allowed, whatever the traffic. Default 10.
    pub budget_min_per_sec: u32,
    /// Retries allowed as a fraction of calls (0.2 = one retry per five calls; 0.0 to 1000.0).
    /// Default 0.2.
    pub budget_ratio: f32,
    /// Largest request body buffered for re-sending; a larger request is sent once. Default
    /// 64 KiB.
    pub max_request_bytes: usize,
    /// Method names (e.g. `GetProduct`) or full paths treated as idempotent without an
    /// `idempotency-key`. Default none.
    pub idempotent_rpcs: Vec<String>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_base: Duration::from_millis(25),
            backoff_cap: Duration::from_millis(250),
            budget_ttl: Duration::from_secs(10),
            budget_min_per_sec: 10,
            budget_ratio: 0.2,
            max_request_bytes: 64 * 1024,
            idempotent_rpcs: Vec::new(),
        }
    }
}

/// Circuit breaker settings ([`crate::breaker`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Trip after this many server failures in a row (0 disables this trigger). Default 5.
    pub consecutive_failures: u32,
    /// Trip when the failure fraction of the last `window_calls` reaches this (0.0–1.0); `None`
    /// (JSON `null`) disables this trigger. Default 0.5.
    pub failure_rate: Option<f64>,
    /// Size of the sliding window of recent outcomes (at least 1). Default 20.
    pub window_calls: u32,
    /// Outcomes needed in the window before the rate can trip (1 to `window_calls`). Default 10.
    pub minimum_calls: u32,
    /// First open period; it doubles (with jitter) on every re-open. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub open_base: Duration,
    /// Longest open period (at least `open_base`). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub open_cap: Duration,
    /// Each open period is shortened by a random fraction up to this (0.0–0.5, so no period is
    /// shorter than the one before it), so clients that tripped together do not probe
    /// together. Default 0.2.
    pub open_jitter: f64,
    /// Probes allowed in flight while half-open (at least 1). Default 1.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: Some(0.5),
            window_calls: 20,
            minimum_calls: 10,
            open_base: Duration::from_secs(1),
            open_cap: Duration::from_secs(30),
            open_jitter: 0.2,
            half_open_probes: 1,
        }
    }
}

/// Per-endpoint failure detection ([`crate::endpoints`]): when one endpoint of several is
/// ejected from the balancer, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Eject after this many server failures in a row (0 disables this trigger). Default 5.
    pub consecutive_failures: u32,
    /// Eject when the failure share of the last `window_calls` reaches this (0.0–1.0); `None`
    /// (JSON `null`) disables this trigger. Default 0.5.
    pub failure_rate: Option<f64>,
    /// Size of the sliding window of recent outcomes (at least 1). Default 20.
    pub window_calls: u32,
    /// Outcomes needed in the window before the rate can eject (1 to `window_calls`). Default
    /// 10.
    pub minimum_calls: u32,
    /// First ejection period; it doubles on every ejection in a row. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub eject_base: Duration,
    /// Longest ejection period (at least `eject_base`). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub eject_cap: Duration,
    /// Each ejection is shortened by a random fraction up to this (0.0–0.5). Default 0.2.
    pub eject_jitter: f64,
    /// For this long after a failure the balancer prefers any other endpoint, so a retry goes
    /// elsewhere. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub avoid_after_failure: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: Some(0.5),
            window_calls: 20,
            minimum_calls: 10,
            eject_base: Duration::from_secs(1),
            eject_cap: Duration::from_secs(30),
            eject_jitter: 0.2,
            avoid_after_failure: Duration::from_secs(1),
        }
    }
}

/// A configuration value out of its documented range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} must be {expected}, got {got}")]
pub struct ConfigError {
    /// The field, as a path from [`ResilienceConfig`] (e.g. `breaker.open_jitter`).
    pub field: &'static str,
    /// The accepted range, in words.
    pub expected: String,
    /// The value refused.
    pub got: String,
}

impl ConfigError {
    fn new(field: &'static str, expected: impl Into<String>, got: impl fmt::Debug) -> Self {
        Self {
            field,
            expected: expected.into(),
            got: format!("{got:?}"),
        }
    }
}

/// `Ok` when `ok` holds, else the error for `field`.
fn check(
    ok: bool,
    field: &'static str,
    expected: impl Into<String>,
    got: impl fmt::Debug,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(field, expected, got))
    }
}

/// The checks shared by the breaker's and the detectors' failure-rate windows.
fn check_rate_window(
    prefix: &'static [&'static str; 3],
    failure_rate: Option<f64>,
    window_calls: u32,
    minimum_calls: u32,
) -> Result<(), ConfigError> {
    if let Some(rate) = failure_rate {
        check(
            (0.0..=1.0).contains(&rate),
            prefix[0],
            "0.0 to 1.0, or None to disable",
            rate,
        )?;
    }
    check(window_calls >= 1, prefix[1], "at least 1", window_calls)?;
    check(
        (1..=window_calls).contains(&minimum_calls),
        prefix[2],
        format!("1 to window_calls ({window_calls})"),
        minimum_calls,
    )
}

/// The checks shared by the breaker's open periods and the detectors' ejections.
fn check_periods(
    prefix: &'static [&'static str; 2],
    base: Duration,
    cap: Duration,
    jitter: f64,
) -> Result<(), ConfigError> {
    check(
        cap >= base,
        prefix[0],
        format!("at least the base period ({base:?})"),
        cap,
    )?;
    check(
        (0.0..=MAX_SHORTENING).contains(&jitter),
        prefix[1],
        format!("0.0 to {MAX_SHORTENING}"),
        jitter,
    )
}

impl ResilienceConfig {
    /// Checks every field against its documented range; the first one out of range is the
    /// error. Nothing is clamped.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.concurrency_limit >= 1,
            "concurrency_limit",
            "at least 1",
            self.concurrency_limit,
        )?;
        self.retry.validate()?;
        self.breaker.validate()?;
        self.outlier.validate()
    }
}

impl RetryConfig {
    /// Checks every field against its documented range (see [`ResilienceConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.max_attempts >= 1,
            "retry.max_attempts",
            "at least 1",
            self.max_attempts,
        )?;
        check(
            self.backoff_cap >= self.backoff_base,
            "retry.backoff_cap",
            format!("at least retry.backoff_base ({:?})", self.backoff_base),
            self.backoff_cap,
        )?;
        // tower's TpsBudget asserts both ranges; refusing them here keeps that panic unreachable.
        check(
            (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.budget_ttl),
            "retry.budget_ttl",
            "1s to 60s",
            self.budget_ttl,
        )?;
        check(
            (0.0..=1000.0).contains(&self.budget_ratio),
            "retry.budget_ratio",
            "0.0 to 1000.0",
            self.budget_ratio,
        )
    }
}

impl BreakerConfig {
    /// Checks every field against its documented range (see [`ResilienceConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_rate_window(
            &[
                "breaker.failure_rate",
                "breaker.window_calls",
                "breaker.minimum_calls",
            ],
            self.failure_rate,
            self.window_calls,
            self.minimum_calls,
        )?;
        check_periods(
            &["breaker.open_cap", "breaker.open_jitter"],
            self.open_base,
            self.open_cap,
            self.open_jitter,
        )?;
        check(
            self.half_open_probes >= 1,
            "breaker.half_open_probes",
            "at least 1",
            self.half_open_probes,
        )
    }
}

impl OutlierConfig {
    /// Checks every field against its documented range (see [`ResilienceConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_rate_window(
            &[
                "outlier.failure_rate",
                "outlier.window_calls",
                "outlier.minimum_calls",
            ],
            self.failure_rate,
            self.window_calls,
            self.minimum_calls,
        )?;
        check_periods(
            &["outlier.eject_cap", "outlier.eject_jitter"],
            self.eject_base,
            self.eject_cap,
            self.eject_jitter,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_every_range_is_checked() {
        ResilienceConfig::default().validate().unwrap();
        let refused = |edit: fn(&mut ResilienceConfig)| {
            let mut c = ResilienceConfig::default();
            edit(&mut c);
            c.validate().unwrap_err().field
        };
        type Edit = fn(&mut ResilienceConfig);
        let cases: [(Edit, &str); 20] = [
            (|c| c.concurrency_limit = 0, "concurrency_limit"),
            (|c| c.retry.max_attempts = 0, "retry.max_attempts"),
            (
                |c| c.retry.backoff_cap = Duration::from_millis(1),
                "retry.backoff_cap",
            ),
            (
                |c| c.retry.budget_ttl = Duration::from_secs(61),
                "retry.budget_ttl",
            ),
            (
                |c| c.retry.budget_ttl = Duration::from_millis(10),
                "retry.budget_ttl",
            ),
            (|c| c.retry.budget_ratio = -0.1, "retry.budget_ratio"),
            (|c| c.retry.budget_ratio = f32::NAN, "retry.budget_ratio"),
            (
                |c| c.breaker.failure_rate = Some(2.0),
                "breaker.failure_rate",
            ),
            (
                |c| c.breaker.failure_rate = Some(f64::NAN),
                "breaker.failure_rate",
            ),
            (|c| c.breaker.window_calls = 0, "breaker.window_calls"),
            (|c| c.breaker.minimum_calls = 21, "breaker.minimum_calls"),
            (|c| c.breaker.minimum_calls = 0, "breaker.minimum_calls"),
            (|c| c.breaker.open_cap = Duration::ZERO, "breaker.open_cap"),
            (|c| c.breaker.open_jitter = 0.7, "breaker.open_jitter"),
            (|c| c.breaker.open_jitter = -0.1, "breaker.open_jitter"),
            (
                |c| c.breaker.half_open_probes = 0,
                "breaker.half_open_probes",
            ),
            (
                |c| c.outlier.failure_rate = Some(1.5),
                "outlier.failure_rate",
            ),
            (|c| c.outlier.minimum_calls = 30, "outlier.minimum_calls"),
            (|c| c.outlier.eject_jitter = 0.6, "outlier.eject_jitter"),
            (
                |c| c.outlier.eject_cap = Duration::ZERO,
                "outlier.eject_cap",
            ),
        ];
        for (edit, field) in cases {
            assert_eq!(refused(edit), field);
        }
        let error = {
            let mut c = ResilienceConfig::default();
            c.breaker.open_jitter = 0.7;
            c.validate().unwrap_err()
        };
        assert_eq!(
            error.to_string(),
            "breaker.open_jitter must be 0.0 to 0.5, got 0.7"
        );
    }

    #[test]
    fn a_disabled_rate_trigger_is_explicit() {
        let mut c = ResilienceConfig::default();
        c.breaker.failure_rate = None;
        c.outlier.failure_rate = None;
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""failure_rate":null"#), "{json}");
        let back: ResilienceConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back.breaker.failure_rate, None);
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = ResilienceConfig::default();
        assert_eq!(c.deadline, Duration::from_secs(2));
        assert_eq!(c.attempt_timeout, Duration::from_millis(300));
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.breaker.consecutive_failures, 5);
        assert_eq!(c.breaker.window_calls, 20);
        assert_eq!(
            (c.breaker.open_base, c.breaker.open_cap),
            (Duration::from_secs(1), Duration::from_secs(30))
        );
    }

    #[test]
    fn partial_json_with_humantime_durations() {
        let c: ResilienceConfig = serde_json::from_str(
            r#"{"client":"approval","deadline":"1s 500ms","retry":{"backoff_cap":"100ms"}}"#,
        )
        .unwrap();
        assert_eq!(c.client, "approval");
        assert_eq!(c.deadline, Duration::from_millis(1500));
        assert_eq!(c.retry.backoff_cap, Duration::from_millis(100));
        assert_eq!(c.retry.max_attempts, 3);
        let back: ResilienceConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<ResilienceConfig>(r#"{"dedline":"1s"}"#).is_err());
    }
}
