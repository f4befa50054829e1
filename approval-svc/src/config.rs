//! Configuration from flags and environment variables (`approval-svc --help` lists them all).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use lab_common::telemetry::LogFormat;
use lab_common::tls::{ServerTlsArgs, TlsError};
use resilience::{BreakerConfig, OutlierConfig, ResilienceConfig, RetryConfig};
use tonic::transport::ClientTlsConfig;

use crate::failpoints::FailurePoints;
use lab_common::alerts::Webhook;

fn parse_webhook(text: &str) -> Result<Webhook, String> {
    text.parse()
}

/// The failure-rate trigger of the order-svc client's endpoint ejection: off, or a fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateTrigger {
    /// The trigger is switched off (only consecutive failures eject).
    Off,
    /// Eject at this failure fraction, 0.0 to 1.0.
    At(f64),
}

impl RateTrigger {
    /// The fraction, `None` when off (the resilience config's spelling).
    pub fn fraction(self) -> Option<f64> {
        match self {
            Self::Off => None,
            Self::At(rate) => Some(rate),
        }
    }
}

impl std::str::FromStr for RateTrigger {
    type Err = String;

    /// `off`, or a fraction from 0.0 to 1.0. A number above 1.0 also means `off`: no rate
    /// can reach it, and deployments written before `off` existed spell it so (e.g. `2.0`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        match text.parse::<f64>() {
            Ok(rate) if rate > 1.0 => Ok(Self::Off),
            Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(Self::At(rate)),
            _ => Err(format!(
                "must be `off` or a fraction from 0.0 to 1.0, got {text:?}"
            )),
        }
    }
}

impl std::fmt::Display for RateTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::At(rate) => write!(f, "{rate}"),
        }
    }
}

/// Everything approval-svc can be told at start-up.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "approval-svc",
    version,
    about = "Challenge approvals: an approved challenge becomes exactly one order in the shop"
)]
pub struct Config {
    /// gRPC listen address; port 0 picks a free port (the chosen address is logged).
    #[arg(
        long = "listen",
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub listen: SocketAddr,

    /// PostgreSQL URL. Unset: a private throwaway PostgreSQL is started from the machine's
    /// server binaries (database `approval`) and removed on exit.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Maximum connections in the database pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 32)]
    pub db_pool_size: u32,

    /// order-svc endpoint(s), comma-separated, or one `http://name:port` whose name resolves
    /// to several addresses; each address is a balanced endpoint with its own health.
    #[arg(
        long,
        env = "ORDER_SVC_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub order_svc_url: Vec<String>,

    /// How often order-svc names are re-resolved; addresses that appear or vanish join or
    /// leave the balancer.
    #[arg(long, env = "ORDER_SVC_RESOLVE_INTERVAL", default_value = "5s", value_parser = lab_common::time::parse_period)]
    pub order_svc_resolve_interval: Duration,

    /// PEM CA certificate(s) order-svc's certificate must chain to: TLS to order-svc, whose
    /// URLs must then all be `https://` (and an `https://` URL needs it).
    #[arg(long, env = "ORDER_SVC_CA")]
    pub order_svc_ca: Option<PathBuf>,

    /// PEM certificate approval-svc presents to order-svc: its identity under mutual TLS
    /// (needs --order-svc-key and --order-svc-ca).
    #[arg(long, env = "ORDER_SVC_CERT")]
    pub order_svc_cert: Option<PathBuf>,

    /// PEM private key of --order-svc-cert.
    #[arg(long, env = "ORDER_SVC_KEY")]
    pub order_svc_key: Option<PathBuf>,

    /// TLS and mutual TLS of the gRPC server (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    #[command(flatten)]
    pub tls: ServerTlsArgs,

    /// Log format: `pretty` or `json`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// Authentication (bearer tokens) and protected mode.
    #[command(flatten)]
    pub auth: lab_common::auth::AuthArgs,

    /// File holding the bearer token presented to order-svc: role `shop-client`, `sub`
    /// `approval-svc` (order-svc scopes approval-svc's idempotency keys to it, and the
    /// consistency checks look for its orders under that name). Re-read when it changes
    /// (checked every second); surrounding whitespace is ignored. Unset: no token is sent.
    #[arg(long, env = "ORDER_SVC_TOKEN_FILE")]
    pub order_svc_token_file: Option<std::path::PathBuf>,

    /// Largest quantity a challenge may ask for.
    #[arg(long, env = "MAX_QUANTITY", default_value_t = 1_000_000)]
    pub max_quantity: i32,

    /// How long an in-flight approval or revoke owns its challenge before a completer takes
    /// it over. Must exceed the order-call timeout plus the post-call margin.
    #[arg(long, env = "APPROVAL_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,

    /// Pause between completer rounds.
    #[arg(long, env = "COMPLETER_PERIOD", default_value = "1s", value_parser = lab_common::time::parse_period)]
    pub completer_period: Duration,

    /// Challenges one completer round claims.
    #[arg(long, env = "COMPLETER_BATCH", default_value_t = 32)]
    pub completer_batch: u32,

    /// Claimed challenges one completer drives at once.
    #[arg(long, env = "COMPLETER_CONCURRENCY", default_value_t = 8)]
    pub completer_concurrency: usize,

    /// Approval attempts per retry budget (the first included) before a transiently failing
    /// approval is dead-lettered.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,

    /// Ceiling of the first automatic retry's delay; it doubles per attempt (full jitter).
    #[arg(long, env = "RETRY_BACKOFF_BASE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_backoff_base: Duration,

    /// Largest automatic retry delay (at least `--retry-backoff-base`).
    #[arg(long, env = "RETRY_BACKOFF_CAP", default_value = "5m", value_parser = humantime::parse_duration)]
    pub retry_backoff_cap: Duration,

    /// Longest order-svc call (retries included), and its budget when the caller sent no
    /// deadline; a shorter caller deadline wins.
    #[arg(long, env = "ORDER_CALL_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub order_call_timeout: Duration,

    /// Time kept from the caller's deadline for the write after the order call.
    #[arg(long, env = "POST_CALL_MARGIN", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub post_call_margin: Duration,

    /// Under load, how long the next group-committed batch of intents (or of outcomes) may wait
    /// for the callers of the last one; never after a batch of one, never more than half the
    /// last batch's time in the database. 0 turns it off.
    #[arg(long, env = "WRITE_BATCH_REFILL_WAIT", default_value = "2ms", value_parser = humantime::parse_duration)]
    pub write_batch_refill_wait: Duration,

    /// How long order-svc's answer that a product has nothing left refuses the product's next
    /// approvals here (APPROVE_FAILED OUT_OF_STOCK, no call); a restock is seen at most this
    /// long after that answer. 0 calls order-svc for every approval.
    #[arg(long, env = "SOLD_OUT_TTL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub sold_out_ttl: Duration,

    /// Timeout of one attempt of an order-svc call.
    #[arg(long, env = "ORDER_ATTEMPT_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub order_attempt_timeout: Duration,

    /// Attempts per order-svc call, the first included (1 disables the client's retries).
    #[arg(long, env = "ORDER_CALL_ATTEMPTS", default_value_t = 3)]
    pub order_call_attempts: u32,

    /// Order-svc attempts in flight at once; beyond that calls fail fast (RESOURCE_EXHAUSTED).
    #[arg(long, env = "ORDER_CONCURRENCY_LIMIT", default_value_t = 512)]
    pub order_concurrency_limit: usize,

    /// Consecutive failures of one order-svc endpoint that eject it from the balancer; the
    /// circuit breaker opens when no endpoint is left.
    #[arg(long, env = "BREAKER_CONSECUTIVE_FAILURES", default_value_t = 5)]
    pub breaker_consecutive_failures: u32,

    /// Failure fraction of one endpoint's recent calls that ejects it, 0.0 to 1.0; `off` (or any
    /// value above 1.0) disables this trigger.
    #[arg(long, env = "BREAKER_FAILURE_RATE", default_value_t = RateTrigger::At(0.5))]
    pub breaker_failure_rate: RateTrigger,

    /// First ejection of an endpoint and first open period of the circuit breaker (both grow
    /// on each repeat).
    #[arg(long, env = "BREAKER_OPEN_BASE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub breaker_open_base: Duration,

    /// Longest ejection, and longest open period of the circuit breaker (at least
    /// `--breaker-open-base`).
    #[arg(long, env = "BREAKER_OPEN_CAP", default_value = "30s", value_parser = humantime::parse_duration)]
    pub breaker_open_cap: Duration,

    /// Timeout of a TCP connection attempt to order-svc.
    #[arg(long, env = "ORDER_CONNECT_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub order_connect_timeout: Duration,

    /// Largest request message accepted, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Concurrent requests per connection; beyond it calls fail fast with RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,

    /// Upper bound on any request's duration, whatever deadline the caller sent.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// On SIGTERM: how long calls in flight may take to finish (health NOT_SERVING, GOAWAY,
    /// no new connections) before the process exits anyway.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// HTTP address for `/metrics` (Prometheus) and `/healthz`; unset serves neither.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// How often the gauges (pool usage; stock of products, or challenges by state) are sampled.
    #[arg(long, env = "METRICS_SAMPLE_INTERVAL", default_value = "5s", value_parser = lab_common::time::parse_period)]
    pub metrics_sample_interval: Duration,

    /// Consistency-check period (e.g. `30s`); `0s` runs checks only on demand
    /// (`OpsService/RunConsistencyCheck`, `lab check`).
    #[arg(long, env = "CHECK_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub check_interval: Duration,

    /// How far before the last check's watermark an incremental check starts reading (covers
    /// late commits and clock skew between the two databases).
    #[arg(long, env = "CHECK_OVERLAP", default_value = "2m", value_parser = humantime::parse_duration)]
    pub check_overlap: Duration,

    /// Alert receivers, comma-separated: Slack-compatible webhooks, and PagerDuty Events API v2
    /// (a URL ending in `/v2/enqueue`); force a format with a `slack=` or `pagerduty=` prefix.
    #[arg(long, env = "ALERT_WEBHOOK_URL", value_delimiter = ',', value_parser = parse_webhook)]
    pub alert_webhook_url: Vec<Webhook>,

    /// PagerDuty integration (routing) key sent with PagerDuty events.
    #[arg(long, env = "PAGERDUTY_ROUTING_KEY", default_value = "")]
    pub pagerduty_routing_key: String,

    /// Test-only failure points; off by default, never set by a flag or a request.
    #[arg(skip)]
    pub failure_points: FailurePoints,
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Settings that contradict each other or are out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The order-svc client's settings (derived from the flags) are out of range.
    #[error("invalid configuration of the order-svc client: {0}")]
    Client(#[from] resilience::ConfigError),
}

impl Config {
    /// The resilience stack's settings for the order-svc client.
    pub fn resilience(&self) -> ResilienceConfig {
        ResilienceConfig {
            client: "order-svc".into(),
            deadline: self.order_call_timeout,
            attempt_timeout: self.order_attempt_timeout,
            concurrency_limit: self.order_concurrency_limit,
            retry: RetryConfig {
                max_attempts: self.order_call_attempts,
                // CancelOrder carries no idempotency key but is idempotent by contract, so a
                // retry after an attempt that may have reached the server is safe.
                idempotent_rpcs: vec!["CancelOrder".into()],
                ..RetryConfig::default()
            },
            breaker: BreakerConfig {
                consecutive_failures: self.breaker_consecutive_failures,
                failure_rate: self.breaker_failure_rate.fraction(),
                open_base: self.breaker_open_base,
                open_cap: self.breaker_open_cap,
                ..BreakerConfig::default()
            },
            outlier: OutlierConfig {
                consecutive_failures: self.breaker_consecutive_failures,
                failure_rate: self.breaker_failure_rate.fraction(),
                eject_base: self.breaker_open_base,
                eject_cap: self.breaker_open_cap,
                ..OutlierConfig::default()
            },
            ..ResilienceConfig::default()
        }
    }

    /// TLS to order-svc (`--order-svc-ca/-cert/-key`), its files read and checked now; `None`
    /// for plaintext. A CA turns TLS on for every order-svc URL, so none may be `http://`:
    /// a mixed list would send some calls in the clear.
    pub fn order_svc_tls(&self) -> Result<Option<ClientTlsConfig>, TlsError> {
        let identity = match (&self.order_svc_cert, &self.order_svc_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(TlsError::Needs {
                    flag: "--order-svc-cert",
                    requires: "--order-svc-key",
                });
            }
            (None, Some(_)) => {
                return Err(TlsError::Needs {
                    flag: "--order-svc-key",
                    requires: "--order-svc-cert",
                });
            }
        };
        let urls = self
            .order_svc_url
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty());
        let Some(ca) = &self.order_svc_ca else {
            if identity.is_some() {
                return Err(TlsError::Needs {
                    flag: "--order-svc-cert",
                    requires: "--order-svc-ca",
                });
            }
            if let Some(url) = urls.clone().find(|url| is_https(url)) {
                return Err(TlsError::Config {
                    what: format!("order-svc URL {url:?}"),
                    why: "an https:// URL needs --order-svc-ca".into(),
                });
            }
            return Ok(None);
        };
        if let Some(url) = urls.clone().find(|url| !is_https(url)) {
            return Err(TlsError::Config {
                what: format!("order-svc URL {url:?}"),
                why: "with --order-svc-ca every order-svc URL must be https://".into(),
            });
        }
        lab_common::tls::client_config(ca, identity).map(Some)
    }

    /// Checks the relations between settings that clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease <= self.order_call_timeout + self.post_call_margin {
            return Err(ConfigError::Invalid(format!(
                "the lease ({:?}) must exceed the order-call timeout ({:?}) plus the post-call \
                 margin ({:?}), or a completer could take over a call still in flight",
                self.lease, self.order_call_timeout, self.post_call_margin
            )));
        }
        if self.order_svc_url.iter().all(|url| url.trim().is_empty()) {
            return Err(ConfigError::Invalid(
                "ORDER_SVC_URL names no endpoint".into(),
            ));
        }
        if self.max_attempts == 0 || self.completer_batch == 0 || self.completer_concurrency == 0 {
            return Err(ConfigError::Invalid(
                "max attempts, completer batch and completer concurrency must be at least 1".into(),
            ));
        }
        if self.max_quantity < 1 {
            return Err(ConfigError::Invalid(
                "max quantity must be at least 1".into(),
            ));
        }
        if self.retry_backoff_cap < self.retry_backoff_base {
            return Err(ConfigError::Invalid(format!(
                "the retry backoff cap ({:?}) must be at least its base ({:?})",
                self.retry_backoff_cap, self.retry_backoff_base
            )));
        }
        self.resilience().validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::parse_from(["approval-svc"]).validate().unwrap();
    }

    #[test]
    fn several_order_endpoints_split_on_commas() {
        let config =
            Config::parse_from(["approval-svc", "--order-svc-url", "http://a:1,http://b:2"]);
        assert_eq!(config.order_svc_url, ["http://a:1", "http://b:2"]);
    }

    #[test]
    fn many_instance_flags_have_defaults_and_a_zero_resolve_interval_is_refused() {
        let config = Config::parse_from(["approval-svc"]);
        assert_eq!(config.order_svc_resolve_interval, Duration::from_secs(5));
        assert_eq!(config.drain_timeout, Duration::from_secs(10));
        let config = Config::parse_from([
            "approval-svc",
            "--order-svc-url",
            "http://order-svc.shop:50051",
            "--order-svc-resolve-interval",
            "2s",
        ]);
        assert_eq!(config.order_svc_url, ["http://order-svc.shop:50051"]);
        assert_eq!(config.order_svc_resolve_interval, Duration::from_secs(2));
        assert!(
            Config::try_parse_from(["approval-svc", "--order-svc-resolve-interval", "0s"]).is_err()
        );
    }

    #[test]
    fn the_failure_rate_flag_is_a_fraction_or_off() {
        let rate = |value: &str| {
            Config::try_parse_from(["approval-svc", "--breaker-failure-rate", value])
                .map(|config| config.breaker_failure_rate)
        };
        assert_eq!(rate("0.25").unwrap(), RateTrigger::At(0.25));
        assert_eq!(rate("off").unwrap(), RateTrigger::Off);
        assert_eq!(
            rate("2.0").unwrap(),
            RateTrigger::Off,
            "the old spelling of off"
        );
        assert!(rate("-0.1").is_err());
        assert!(rate("NaN").is_err());
        let config = Config::parse_from(["approval-svc"]);
        assert_eq!(config.breaker_failure_rate, RateTrigger::At(0.5));
        assert_eq!(config.resilience().breaker.failure_rate, Some(0.5));
        let off = Config::parse_from(["approval-svc", "--breaker-failure-rate", "off"]);
        assert_eq!(off.resilience().outlier.failure_rate, None);
    }

    #[test]
    fn out_of_range_client_settings_fail_validation_precisely() {
        let mut config = Config::parse_from(["approval-svc"]);
        config.breaker_open_cap = Duration::from_millis(10);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("breaker.open_cap"), "{error}");
        let mut config = Config::parse_from(["approval-svc"]);
        config.order_call_attempts = 0;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("retry.max_attempts"), "{error}");
        let mut config = Config::parse_from(["approval-svc"]);
        config.retry_backoff_cap = Duration::from_millis(1);
        assert!(config.validate().is_err());
    }

    #[test]
    fn a_lease_shorter_than_a_call_is_refused() {
        let mut config = Config::parse_from(["approval-svc"]);
        config.lease = config.order_call_timeout;
        assert!(config.validate().is_err());
    }
}
