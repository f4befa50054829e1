//! The consistency checker: compares approval-svc's challenges with order-svc's orders and
//! products (through order-svc's public RPCs only), heals what is safe to heal, and alerts the
//! rest.
//!
//! - **One at a time**: a check holds a PostgreSQL advisory lock ([`lock`]), so of N instances
//!   one checks; a periodic check that finds the lock taken skips its turn. No cancellation
//!   can leave the lock behind.
//! - **Incremental**: a watermark records how far the last check got; the next reads challenges
//!   changed and orders created since then (minus a safety overlap for late commits and clock
//!   skew), every challenge still in flight past its lease (stuck work is never updated again,
//!   so the watermark alone would lose it), plus everything named by an open incident. `full`
//!   checks everything.
//! - **Heals**: an order that exists for an APPROVE_FAILED or stale APPROVING challenge → roll
//!   forward to APPROVED; a live order whose key belongs to no challenge, to a REJECTED or
//!   REVOKED one, or duplicating an approved challenge's order → CancelOrder; a stuck REVOKING →
//!   finish the revoke; a transient failure nobody will retry → back on the schedule; a stale
//!   APPROVING whose order was cancelled outside the saga → APPROVE_FAILED with
//!   ORDER_CANCELLED, as the saga records it. Stock drift (I1, judged from one snapshot of the
//!   product's ledger) and an APPROVED challenge without its order (I3) are only reported.
//! - **Alerts**: see [`alerting`]; incidents live in `consistency_incidents`, and one resolves
//!   only when a check sees its subject holding.
//! - **Audit**: every heal is recorded as `system` under the check's run id (see
//!   [`crate::audit`]).
//!
//! order-svc is reached through [`shop`]; the metrics are in [`metrics`].

pub mod alerting;
pub mod lock;
pub mod metrics;
pub mod report;
pub mod scan;
pub mod shop;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lab_common::alerts::Alerter;
use lab_common::shutdown::Shutdown;
use sqlx::PgPool;
use uuid::Uuid;

use lock::CheckLock;
pub use report::{Invariant, Report, Violation};
use scan::{Scan, ScanError};
use shop::{PAGE, Shop};

use crate::error::ApprovalError;
use crate::orders::OrderGateway;
use crate::saga::Saga;

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

/// The checker says what its failures mean to a caller, so the service's error type needs to
/// know nothing of the checker's internals (and does not import this module).
impl From<CheckError> for ApprovalError {
    fn from(error: CheckError) -> Self {
        match error {
            CheckError::Busy => Self::CheckBusy,
            CheckError::Scan(ScanError::OrderService(status)) => Self::CheckUnanswered(status),
            CheckError::Scan(ScanError::Database(error)) => Self::Database(error),
        }
    }
}

/// The checker of one instance.
#[derive(Debug)]
pub struct Checker {
    pool: PgPool,
    shop: Shop,
    saga: Arc<Saga>,
    alerter: Alerter,
    settings: CheckerSettings,
}

impl Checker {
    /// A checker over approval-svc's `pool` and the `orders` gateway.
    pub fn new(
        pool: PgPool,
        orders: OrderGateway,
        saga: Arc<Saga>,
        alerter: Alerter,
        settings: CheckerSettings,
    ) -> Self {
        Self {
            pool,
            shop: Shop::new(orders),
            saga,
            alerter,
            settings,
        }
    }

    /// Runs incremental checks every interval until `shutdown`.
    pub async fn run_periodically(self: Arc<Self>, shutdown: Shutdown) {
        let Some(interval) = self.settings.interval else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.triggered() => return,
            }
            let run_id = Uuid::now_v7().to_string();
            match self
                .check(CheckOptions::default(), Duration::ZERO, &run_id)
                .await
            {
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

    /// Runs one check, waiting up to `wait` for another instance's check to finish; its heals
    /// are recorded in the audit trail under `run_id`. Dropping the future cancels the check
    /// and releases its lock.
    pub async fn check(
        &self,
        options: CheckOptions,
        wait: Duration,
        run_id: &str,
    ) -> Result<Report, CheckError> {
        let Some(lock) = CheckLock::acquire(&self.pool, wait).await? else {
            return Err(CheckError::Busy);
        };
        let result = self.check_locked(options, run_id).await;
        lock.release().await;
        metrics::check_finished(result.is_ok());
        result
    }

    async fn check_locked(
        &self,
        options: CheckOptions,
        run_id: &str,
    ) -> Result<Report, CheckError> {
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
            self.shop.clone(),
            &self.saga,
            !options.dry_run,
            run_id,
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
        if since.is_some() {
            self.stuck_challenges(&mut scan, started_at).await?;
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
            if let Some(order) = self.shop.order(order_id).await.map_err(ScanError::from)? {
                scan.order(&order).await?;
            }
        }

        self.live_orders(&mut scan, since).await?;
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
            examined: std::mem::take(&mut scan.examined),
            alerts_sent: 0,
        };
        if !options.dry_run {
            store::set_watermark(&self.pool, started_at).await?;
            report.alerts_sent = alerting::notify(&self.pool, &self.alerter, &report).await?;
        }
        report.duration = started.elapsed();
        metrics::report(&report);
        Ok(report)
    }

    /// Challenges in flight whose lease ran out longer than the settle time ago, whenever they
    /// last changed: stuck work is not updated again, so it falls behind any watermark.
    async fn stuck_challenges(
        &self,
        scan: &mut Scan<'_>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ScanError> {
        let Some(expired_before) = chrono::Duration::from_std(self.settings.settle)
            .ok()
            .and_then(|settle| now.checked_sub_signed(settle))
        else {
            return Ok(());
        };
        let mut after = Uuid::nil();
        loop {
            let page =
                store::stuck_challenges(&self.pool, expired_before, after, i64::from(PAGE)).await?;
            for challenge in &page {
                scan.challenge(challenge).await?;
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = last.challenge_id,
                _ => return Ok(()),
            }
        }
    }

    /// approval-svc's live orders created since `since` (all when `None`).
    async fn live_orders(
        &self,
        scan: &mut Scan<'_>,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), ScanError> {
        let mut page_token = String::new();
        loop {
            let page = self.shop.live_orders_since(since, page_token).await?;
            for order in &page.items {
                scan.order(order).await?;
            }
            match page.next {
                Some(next) => page_token = next,
                None => return Ok(()),
            }
        }
    }

    async fn all_products(&self, scan: &mut Scan<'_>) -> Result<(), ScanError> {
        let mut page_token = String::new();
        loop {
            let page = self.shop.product_ids(page_token).await?;
            scan.products.extend(page.items);
            match page.next {
                Some(next) => page_token = next,
                None => return Ok(()),
            }
        }
    }
}
