//! One configuration for the whole client stack, serde-friendly with humantime durations
//! (`"300ms"`, `"2s"`). Every field has a default, so a config file names only what it changes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// Attempts allowed in flight at once, shared by all clones; beyond that calls fail at once
    /// with RESOURCE_EXHAUSTED. Default 256.
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
    /// Attempts per logical call, the first included; 1 disables retries. Default 3.
    pub max_attempts: u32,
    /// Backoff before retry n is uniform in `[0, min(cap, base * 2^(n-1))]`. Default 25 ms.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Upper bound of one backoff. Default 250 ms.
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// How long a deposit stays in the retry budget (1 s to 60 s). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub budget_ttl: Duration,
    /// Retries per second always allowed, whatever the traffic. Default 10.
    pub budget_min_per_sec: u32,
    /// Retries allowed as a fraction of calls (0.2 = one retry per five calls). Default 0.2.
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
    /// Trip when the failure fraction of the last `window_calls` reaches this (0.0–1.0; above
    /// 1.0 disables this trigger). Default 0.5.
    pub failure_rate: f64,
    /// Size of the sliding window of recent outcomes. Default 20.
    pub window_calls: u32,
    /// Outcomes needed in the window before the rate can trip. Default 10.
    pub minimum_calls: u32,
    /// First open period; it doubles (with jitter) on every re-open. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub open_base: Duration,
    /// Longest open period. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub open_cap: Duration,
    /// Each open period is shortened by a random fraction up to this (0.0–1.0), so clients that
    /// tripped together do not probe together. Default 0.2.
    pub open_jitter: f64,
    /// Probes allowed in flight while half-open. Default 1.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
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
    /// Eject when the failure share of the last `window_calls` reaches this (above 1.0
    /// disables this trigger). Default 0.5.
    pub failure_rate: f64,
    /// Size of the sliding window of recent outcomes. Default 20.
    pub window_calls: u32,
    /// Outcomes needed in the window before the rate can eject. Default 10.
    pub minimum_calls: u32,
    /// First ejection period; it doubles on every ejection in a row. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub eject_base: Duration,
    /// Longest ejection period. Default 30 s.
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
            failure_rate: 0.5,
            window_calls: 20,
            minimum_calls: 10,
            eject_base: Duration::from_secs(1),
            eject_cap: Duration::from_secs(30),
            eject_jitter: 0.2,
            avoid_after_failure: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
