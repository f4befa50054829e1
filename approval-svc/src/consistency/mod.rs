//! The consistency checker: compares approval-svc's challenges with order-svc's orders and
//! products (through order-svc's public RPCs only), heals what is safe to heal, and alerts the
//! rest.
//!
//! - **One at a time**: a check holds a PostgreSQL advisory lock, so of N instances one checks;
//!   a periodic check that finds the lock taken skips its turn.
//! - **Incremental**: a watermark records how far the last check got; the next reads challenges
//!   changed and orders created since then (minus a safety overlap for late commits and clock
//!   skew), plus everything named by an open incident. `full` checks everything.
//! - **Heals**: an order that exists for an APPROVE_FAILED or stale APPROVING challenge → roll
//!   forward to APPROVED; a live order whose key belongs to no challenge, to a REJECTED or
//!   REVOKED one, or duplicating an approved challenge's order → CancelOrder; a stuck REVOKING →
//!   finish the revoke; a transient failure nobody will retry → back on the schedule. Stock
//!   drift (I1) and an APPROVED challenge without its order (I3) are only reported.
//! - **Alerts**: see [`alerting`]; incidents live in `consistency_incidents`.

pub mod alerting;
pub mod report;
pub mod scan;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lab_common::alerts::Alerter;
use lab_proto::order::v1 as order_pb;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use report::{Invariant, Report, Violation};
use scan::{PAGE, Scan, ScanError};

use crate::orders::{CLIENT_NAME, OrderClient};
use crate::saga::Saga;

/// The advisory lock key that makes checks exclusive across instances.
const CHECK_LOCK: i64 = 0x6c61_625f_6368_6b31; // "lab_chk1"

/// How the checker runs.
#[derive(Debug, Clone)]
pub struct CheckerSettings {
    /// Pause between periodic checks; `None` runs checks on demand only.
    pub interval: Option<Duration>,
    /// In-flight work is left to the completer until its lease is this far in the past.
    pub settle: Duration,
    /// How far before the watermark an incremental check starts reading.
    pub overlap: Duration,
}

/// What a caller asks of one check.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Check everything, not only what changed.
    pub full: bool,
    /// Report, but heal nothing, move no watermark and send no alert.
    pub dry_run: bool,
}

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Another instance's check holds the lock.
    #[error("another consistency check is running")]
    Busy,
    /// The check failed half-way (order-svc unreachable, database error).
    #[error(transparent)]
    Scan(#[from] ScanError),
}

impl From<sqlx::Error> for CheckError {
    fn from(error: sqlx::Error) -> Self {
        Self::Scan(ScanError::Database(error))
    }
}

/// The checker of one instance.
pub struct Checker {
    pool: PgPool,
    orders: OrderClient,
    saga: Arc<Saga>,
    alerter: Alerter,
    settings: CheckerSettings,
}

impl Checker {
    /// A checker over approval-svc's `pool` and the `orders` client.
    pub fn new(
        pool: PgPool,
        orders: OrderClient,
        saga: Arc<Saga>,
        alerter: Alerter,
        settings: CheckerSettings,
    ) -> Self {
        Self {
            pool,
            orders,
            saga,
            alerter,
            settings,
        }
    }

    /// Runs incremental checks every interval until `shutdown`.
    pub async fn run_periodically(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(interval) = self.settings.interval else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.cancelled() => return,
            }
            match self.check(CheckOptions::default(), Duration::ZERO).await {
                Ok(report) => tracing::info!(
                    violations = report.violations.len(),
                    healed = report.healed(),
                    elapsed_ms = report.duration.as_millis() as u64,
                    "consistency check done"
                ),
                Err(CheckError::Busy) => tracing::debug!("another instance is checking"),
                Err(error) => tracing::warn!(%error, "consistency check failed"),
            }
        }
    }

    /// Runs one check, waiting up to `wait` for another instance's check to finish.
    pub async fn check(&self, options: CheckOptions, wait: Duration) -> Result<Report, CheckError> {
        let mut lock = self.pool.acquire().await?;
        let waited = Instant::now();
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(CHECK_LOCK)
                .fetch_one(&mut *lock)
                .await?;
            if locked {
                break;
            }
            if waited.elapsed() >= wait {
                return Err(CheckError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let result = self.check_locked(options).await;
        // Released explicitly: the connection goes back to the pool, and a session-level lock
        // would otherwise stay with it.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(CHECK_LOCK)
            .execute(&mut *lock)
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(_) => "error",
        };
        metrics::counter!("consistency_checks_total", "result" => outcome).increment(1);
        result
    }

    async fn check_locked(&self, options: CheckOptions) -> Result<Report, CheckError> {
        let started = Instant::now();
        let started_at = store::now(&self.pool).await?;
        let since = if options.full {
            None
        } else {
            let overlap = chrono::Duration::from_std(self.settings.overlap).unwrap_or_default();
            store::watermark(&self.pool).await?.map(|at| at - overlap)
        };
        let mut scan = Scan::new(
            &self.pool,
            self.orders.clone(),
            &self.saga,
            !options.dry_run,
            started_at,
            self.settings.settle,
        );

        let mut after = Uuid::nil();
        loop {
            let page = store::changed_challenges(&self.pool, since, after, i64::from(PAGE)).await?;
            for challenge in &page {
                scan.challenge(challenge).await?;
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = last.challenge_id,
                _ => break,
            }
        }

        let open = store::open_incidents(&self.pool).await?;
        let open_challenges: Vec<Uuid> = open.iter().filter_map(|i| i.challenge_id).collect();
        for challenge in store::challenges_by_ids(&self.pool, &open_challenges).await? {
            scan.challenge(&challenge).await?;
        }
        for product_id in open.iter().filter_map(|i| i.product_id) {
            scan.products.insert(product_id);
        }
        for order_id in open
            .iter()
            .filter(|i| i.challenge_id.is_none())
            .filter_map(|i| i.order_id)
        {
            if let Some(order) = self.order(order_id).await? {
                scan.order(&order).await?;
            }
        }

        self.scan_orders(&mut scan, since).await?;
        if options.full {
            self.all_products(&mut scan).await?;
        }
        let products: Vec<Uuid> = scan.products.iter().copied().collect();
        for product_id in products {
            scan.product(product_id).await?;
        }

        let mut report = Report {
            started_at,
            duration: Duration::ZERO,
            full: options.full,
            challenges_checked: scan.challenges_checked,
            orders_checked: scan.orders_checked,
            products_checked: scan.products_checked,
            violations: std::mem::take(&mut scan.violations),
            alerts_sent: 0,
        };
        if !options.dry_run {
            store::set_watermark(&self.pool, started_at).await?;
            report.alerts_sent = alerting::notify(&self.pool, &self.alerter, &report).await?;
        }
        report.duration = started.elapsed();
        record_metrics(&report);
        Ok(report)
    }

    async fn order(&self, order_id: Uuid) -> Result<Option<order_pb::Order>, ScanError> {
        match self
            .orders
            .clone()
            .get_order(order_pb::GetOrderRequest {
                order_id: order_id.to_string(),
            })
            .await
        {
            Ok(response) => Ok(response.into_inner().order),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// approval-svc's live orders created since `since` (all when `None`).
    async fn scan_orders(
        &self,
        scan: &mut Scan<'_>,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), ScanError> {
        let mut page_token = String::new();
        loop {
            let page = self
                .orders
                .clone()
                .list_orders(order_pb::ListOrdersRequest {
                    client_id: CLIENT_NAME.to_owned(),
                    status: order_pb::OrderStatus::Created.into(),
                    created_after: since.map(lab_common::time::to_proto),
                    page_size: PAGE,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            for order in &page.orders {
                scan.order(order).await?;
            }
            if page.next_page_token.is_empty() {
                return Ok(());
            }
            page_token = page.next_page_token;
        }
    }

    async fn all_products(&self, scan: &mut Scan<'_>) -> Result<(), ScanError> {
        let mut page_token = String::new();
        loop {
            let page = self
                .orders
                .clone()
                .list_products(order_pb::ListProductsRequest {
                    page_size: PAGE,
                    page_token,
                })
                .await?
                .into_inner();
            scan.products.extend(
                page.products
                    .iter()
                    .filter_map(|p| Uuid::try_parse(&p.product_id).ok()),
            );
            if page.next_page_token.is_empty() {
                return Ok(());
            }
            page_token = page.next_page_token;
        }
    }
}

fn record_metrics(report: &Report) {
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
