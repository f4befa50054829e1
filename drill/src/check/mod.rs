//! The invariant checker: reads both services through their public RPCs and reports I1–I6 (see
//! `shared/DESIGN.md`) with counts and the offending ids.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lab_drill::check::CheckError> {
//! use lab_drill::check::{CheckOptions, check};
//!
//! let report = check("http://127.0.0.1:50052", "http://127.0.0.1:50051", &CheckOptions::default()).await?;
//! println!("{report}");
//! std::process::exit(if report.is_clean() { 0 } else { 1 });
//! # }
//! ```
//!
//! What is read: every challenge (`ListChallenges`), every order (`ListOrders`), every product
//! (`ListProducts`), paged 500 at a time, and each product's ledger (`GetProductLedger`: its
//! stock counters and the sum of its CREATED orders, from one snapshot). Orders made by approval-svc are those whose
//! `client_id` is [`CheckOptions::client_id`] (`approval-svc`, the `client-id` it presents;
//! order-svc scopes idempotency keys to it); orders of other clients count for I1 only.
//!
//! | invariant | how it is checked through the public API |
//! | --- | --- |
//! | I1 no oversell | per product, from its ledger: `stock >= 0` and `initial_stock + restocked - stock` = `created_quantity` (Σ `quantity` of its CREATED orders in the same snapshot); no CREATED order of an unknown product |
//! | I2 one order per key and per challenge | no two orders share (`client_id`, `idempotency_key`); no two challenges share an `order_id` or a key; no (user, product) has more CREATED approval-svc orders (under any key) than challenges |
//! | I3 APPROVED ⇒ its order | the challenge's key has exactly one CREATED order, with the challenge's `order_id`, product, quantity and user as customer (APPROVED on a cancelled order is a violation: the saga records that outcome as APPROVE_FAILED with ORDER_CANCELLED); a REVOKED challenge's order exists and is CANCELLED |
//! | I4 no ghost order | every CREATED approval-svc order's key belongs to an APPROVED challenge, or to one still settling (APPROVING, REVOKING, or APPROVE_FAILED with a retry scheduled: counted as unsettled, not as a violation) |
//! | I5 nothing stuck | no challenge in APPROVING or REVOKING whose `lease_expires_at` is more than [`CheckOptions::stuck_after_lease`] in the past |
//! | I6 nothing lost | every challenge with an approval attempt (or listed in [`CheckOptions::accepted`]) is APPROVING, APPROVED, REVOKING, REVOKED or APPROVE_FAILED with a reason; a transient failure (unavailable, circuit open, deadline) is either scheduled for a retry or dead-lettered |
//!
//! Limits of a read through public RPCs: apart from each ledger, the reads are not one
//! snapshot, so on a system under load I3 and I4 can show transient differences (I1 cannot:
//! it is judged from the ledger alone) — check a quiescent system, or use
//! [`check_settled`], which re-reads until the report is clean or a timeout passes. What no RPC
//! shows (and the schema's constraints enforce instead): claimed idempotency keys without an
//! order, and whether stock ever went negative between two reads (`CHECK (stock >= 0)`).
//! I5 compares `lease_expires_at` with this machine's clock.

mod evaluate;
mod read;
mod report;

use std::time::{Duration, SystemTime};

use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;

pub use self::evaluate::evaluate;
use self::read::{Call, clients, read_challenges, read_ledgers, read_orders, read_products};
pub use self::report::{Invariant, Outcome, Report, Violation};

pub use lab_common::metadata::APPROVAL_CLIENT_ID;

/// Offending ids kept per invariant in [`Report`] (the counts are always complete).
const KEPT_VIOLATIONS: usize = 1_000;

/// How to check.
#[derive(Clone)]
pub struct CheckOptions {
    /// The `client-id` approval-svc's orders carry. Default `approval-svc`.
    pub client_id: String,
    /// Tolerance past a lease before an in-flight challenge counts as stuck (I5): the
    /// completer's period plus a margin. Default 5 s.
    pub stuck_after_lease: Duration,
    /// Challenge ids whose `ApproveChallenge` was answered OK by the caller: each must exist
    /// and have left PENDING (I6). Default empty.
    pub accepted: Vec<String>,
    /// Timeout of each RPC. Default 10 s.
    pub rpc_timeout: Duration,
    /// A bearer token sent as `authorization: Bearer <token>` on every call, for services with
    /// authentication on: it needs the `approver` role (to list every challenge) and
    /// `shop-admin` (to read every order and ledger). Default none (open mode).
    pub token: Option<String>,
}

// By hand: the token is a credential and stays out of logs.
impl std::fmt::Debug for CheckOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckOptions")
            .field("client_id", &self.client_id)
            .field("stuck_after_lease", &self.stuck_after_lease)
            .field("accepted", &self.accepted)
            .field("rpc_timeout", &self.rpc_timeout)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            client_id: APPROVAL_CLIENT_ID.to_owned(),
            stuck_after_lease: Duration::from_secs(5),
            accepted: Vec::new(),
            rpc_timeout: Duration::from_secs(10),
            token: None,
        }
    }
}

/// Why a check could not run (a failed check is a [`Report`] with violations, not an error).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A URL is malformed or the service cannot be reached.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// [`CheckOptions::token`] cannot be sent as a header (a character no header may hold).
    #[error("the token cannot be sent as an authorization header")]
    BadToken,
    /// An RPC failed.
    #[error("{rpc} failed: {status}")]
    Rpc {
        /// The RPC.
        rpc: &'static str,
        /// Its status.
        status: Box<tonic::Status>,
    },
}

/// Connects lazily to both services and checks once. See the module docs.
pub async fn check(
    approval_url: &str,
    order_url: &str,
    options: &CheckOptions,
) -> Result<Report, CheckError> {
    let (approval, order) = clients(approval_url, order_url)?;
    check_with(approval, order, options).await
}

/// Checks repeatedly (every 200 ms) until the report is clean and nothing is unsettled, or
/// `timeout` passes; returns the last report (which may still have violations).
pub async fn check_settled(
    approval_url: &str,
    order_url: &str,
    options: &CheckOptions,
    timeout: Duration,
) -> Result<Report, CheckError> {
    let (approval, order) = clients(approval_url, order_url)?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let report = check_with(approval.clone(), order.clone(), options).await?;
        if report.is_settled() || tokio::time::Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// [`check`] with clients the caller already has.
pub async fn check_with(
    mut approval: ApprovalServiceClient<Channel>,
    mut order: OrderServiceClient<Channel>,
    options: &CheckOptions,
) -> Result<Report, CheckError> {
    // Challenges first: an order created after this read belongs to a challenge that was
    // already APPROVING when it was read, which I4 treats as settling. Products after orders:
    // products are never deleted, so every order read has its product listed.
    let call = Call::new(options.rpc_timeout, options.token.as_deref())?;
    let challenges = read_challenges(&mut approval, &call).await?;
    let orders = read_orders(&mut order, &call).await?;
    let products = read_products(&mut order, &call).await?;
    let ledgers = read_ledgers(&order, &products, &call).await?;
    Ok(evaluate(
        &challenges,
        &ledgers,
        &orders,
        options,
        SystemTime::now(),
    ))
}

#[cfg(test)]
mod tests;
