//! Configuration from flags and environment variables (`order-svc --help` lists them all).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use lab_common::telemetry::LogFormat;
use lab_common::tls::ServerTlsArgs;
use resilience::FaultPlan;

fn parse_faults(text: &str) -> Result<FaultPlan, String> {
    text.parse::<FaultPlan>().map_err(|error| error.to_string())
}

/// Everything order-svc can be told at start-up.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "order-svc",
    version,
    about = "The shop: limited-stock products and idempotent orders over gRPC"
)]
pub struct Config {
    /// gRPC listen address; port 0 picks a free port (the chosen address is logged).
    #[arg(
        long = "listen",
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,

    /// PostgreSQL URL. Unset: a private throwaway PostgreSQL is started from the machine's
    /// server binaries and removed on exit.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Maximum connections in the database pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 32)]
    pub db_pool_size: u32,

    /// How long a claim row in `idempotency_keys` is kept before the reaper deletes it. Orders
    /// are their keys' claims now and no claim row is written; this only drains rows written by
    /// earlier releases. The order created under a key holds it for good.
    #[arg(long, env = "IDEMPOTENCY_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub idempotency_retention: Duration,

    /// How often expired idempotency keys are deleted.
    #[arg(long, env = "REAPER_INTERVAL", default_value = "5m", value_parser = lab_common::time::parse_period)]
    pub reaper_interval: Duration,

    /// Most CreateOrders of one product settled in one transaction (group commit). Requests that
    /// arrive while a product's batch is in the database form its next batch, up to this many;
    /// there is no timer, so at low load a batch is one request. 1 sends one request per
    /// transaction (still one transaction at a time per product and instance).
    #[arg(long, env = "ORDER_BATCH_MAX", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub order_batch_max: u16,

    /// Under load, how long a product's next batch may wait for the callers of the last one
    /// (they send their next requests a moment after their answers; without waiting the first
    /// of them goes alone and every round costs two commits). Never more than half the last
    /// batch's time in the database, and never after a batch of one, so low load never waits.
    /// 0 turns it off.
    #[arg(long, env = "ORDER_BATCH_REFILL_WAIT", default_value = "2ms", value_parser = humantime::parse_duration)]
    pub order_batch_refill_wait: Duration,

    /// Answer OUT_OF_STOCK from memory for a product this instance saw sold out, until a
    /// Restock or CancelOrder of it commits (heard through LISTEN/NOTIFY). Only first attempts
    /// (no `grpc-previous-rpc-attempts`, or 0) are answered so; `false` sends every CreateOrder
    /// to the database.
    #[arg(long, env = "SOLD_OUT_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    pub sold_out_fast_path: bool,

    /// How long a sold-out flag lives while the stock-change listener is disconnected
    /// (notifications are lost then, so flags must expire quickly).
    #[arg(long, env = "SOLD_OUT_DISCONNECTED_TTL", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub sold_out_disconnected_ttl: Duration,

    /// Largest quantity accepted by CreateOrder and Restock, and largest initial stock.
    #[arg(long, env = "MAX_QUANTITY", default_value_t = 1_000_000)]
    pub max_quantity: i32,

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

    /// Products whose stock is exported as a gauge: the most recently active ones.
    #[arg(long, env = "STOCK_METRICS_PRODUCTS", default_value_t = 20)]
    pub stock_metrics_products: i64,

    /// How often the gauges (pool usage; stock of products, or challenges by state) are sampled.
    #[arg(long, env = "METRICS_SAMPLE_INTERVAL", default_value = "5s", value_parser = lab_common::time::parse_period)]
    pub metrics_sample_interval: Duration,

    /// Server-side fault injection for tests and drills, e.g.
    /// `CreateOrder:drop_response:0.5;*:delay=200ms:0.1` (grammar: the resilience crate's
    /// `fault` module). Off when unset; no request can turn it on.
    #[arg(long, env = "FAULTS", value_parser = parse_faults)]
    pub faults: Option<FaultPlan>,

    /// TLS and mutual TLS of the gRPC server (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Authentication (bearer tokens) and protected mode.
    #[command(flatten)]
    pub auth: lab_common::auth::AuthArgs,

    /// Log format: `pretty` or `json`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

/// A setting out of its range; [`crate::Application::build`] fails with it before touching
/// the database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {setting} must be {expected}, got {got}")]
pub struct ConfigError {
    /// The flag's environment variable (e.g. `MAX_QUANTITY`).
    pub setting: &'static str,
    /// The accepted range, in words.
    pub expected: &'static str,
    /// The value refused.
    pub got: String,
}

fn at_least_one(setting: &'static str, value: i64) -> Result<(), ConfigError> {
    if value >= 1 {
        Ok(())
    } else {
        Err(ConfigError {
            setting,
            expected: "at least 1",
            got: value.to_string(),
        })
    }
}

impl Config {
    /// Checks the ranges clap's types do not express; nothing is clamped.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_one("DB_POOL_SIZE", i64::from(self.db_pool_size))?;
        at_least_one("MAX_QUANTITY", i64::from(self.max_quantity))?;
        at_least_one(
            "MAX_CONCURRENT_REQUESTS",
            i64::try_from(self.max_concurrent_requests).unwrap_or(i64::MAX),
        )?;
        at_least_one(
            "MAX_MESSAGE_BYTES",
            i64::try_from(self.max_message_bytes).unwrap_or(i64::MAX),
        )?;
        if self.stock_metrics_products < 0 {
            return Err(ConfigError {
                setting: "STOCK_METRICS_PRODUCTS",
                expected: "0 or more",
                got: self.stock_metrics_products.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_out_of_range_settings_are_named() {
        Config::parse_from(["order-svc"]).validate().unwrap();
        let error = Config::parse_from(["order-svc", "--max-quantity", "0"])
            .validate()
            .unwrap_err();
        assert_eq!(error.setting, "MAX_QUANTITY");
        assert_eq!(
            error.to_string(),
            "invalid configuration: MAX_QUANTITY must be at least 1, got 0"
        );
        let error = Config::parse_from(["order-svc", "--stock-metrics-products=-1"])
            .validate()
            .unwrap_err();
        assert_eq!(error.setting, "STOCK_METRICS_PRODUCTS");
        let error = Config::parse_from(["order-svc", "--db-pool-size", "0"])
            .validate()
            .unwrap_err();
        assert_eq!(error.setting, "DB_POOL_SIZE");
    }
}
