//! The invariant checker: reads both services through their public RPCs and reports I1–I6 (see
//! `shared/DESIGN.md`) with counts and the offending ids.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lab_testkit::check::CheckError> {
//! use lab_testkit::check::{CheckOptions, check};
//!
//! let report = check("http://127.0.0.1:50052", "http://127.0.0.1:50051", &CheckOptions::default()).await?;
//! println!("{report}");
//! std::process::exit(if report.is_clean() { 0 } else { 1 });
//! # }
//! ```
//!
//! What is read: every challenge (`ListChallenges`), every product (`ListProducts`) and every
//! order (`ListOrders`), paged 500 at a time. Orders made by approval-svc are those whose
//! `client_id` is [`CheckOptions::client_id`] (`approval-svc`, the `client-id` it presents;
//! order-svc scopes idempotency keys to it); orders of other clients count for I1 only.
//!
//! | invariant | how it is checked through the public API |
//! | --- | --- |
//! | I1 no oversell | per product: `stock >= 0` and `initial_stock + restocked - stock` = Σ `quantity` of its CREATED orders |
//! | I2 one order per key and per challenge | no two orders share (`client_id`, `idempotency_key`); no two challenges share an `order_id` or a key |
//! | I3 APPROVED ⇒ its order | the challenge's key has exactly one CREATED order, with the challenge's `order_id`, product, quantity and user as customer; a REVOKED challenge's order exists and is CANCELLED |
//! | I4 no ghost order | every CREATED approval-svc order's key belongs to an APPROVED challenge, or to one still settling (APPROVING, REVOKING, or APPROVE_FAILED with a retry scheduled: counted as unsettled, not as a violation) |
//! | I5 nothing stuck | no challenge in APPROVING or REVOKING whose `lease_expires_at` is more than [`CheckOptions::stuck_after_lease`] in the past |
//! | I6 nothing lost | every challenge with an approval attempt (or listed in [`CheckOptions::accepted`]) is APPROVING, APPROVED, REVOKING, REVOKED or APPROVE_FAILED with a reason; a transient failure (unavailable, circuit open, deadline) is either scheduled for a retry or dead-lettered |
//!
//! Limits of a read through public RPCs: the reads are not one snapshot, so on a system under
//! load I1 and I3 can show transient differences — check a quiescent system, or use
//! [`check_settled`], which re-reads until the report is clean or a timeout passes. What no RPC
//! shows (and the schema's constraints enforce instead): claimed idempotency keys without an
//! order, and whether stock ever went negative between two reads (`CHECK (stock >= 0)`).
//! I5 compares `lease_expires_at` with this machine's clock.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime};

use lab_proto::approval::v1 as approval_pb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1 as order_pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::{Channel, Endpoint};

use approval_pb::{ApprovalFailureReason as Reason, ChallengeStatus as CStatus};
use order_pb::OrderStatus as OStatus;

/// The `client-id` approval-svc presents to order-svc.
pub const APPROVAL_CLIENT_ID: &str = "approval-svc";

/// Offending ids kept per invariant in [`Report`] (the counts are always complete).
const KEPT_VIOLATIONS: usize = 1_000;

/// How to check.
#[derive(Debug, Clone)]
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
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            client_id: APPROVAL_CLIENT_ID.to_owned(),
            stuck_after_lease: Duration::from_secs(5),
            accepted: Vec::new(),
            rpc_timeout: Duration::from_secs(10),
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
    /// An RPC failed.
    #[error("{rpc} failed: {status}")]
    Rpc {
        /// The RPC.
        rpc: &'static str,
        /// Its status.
        status: Box<tonic::Status>,
    },
}

/// The six invariants of `shared/DESIGN.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// No oversell.
    I1,
    /// At most one order per idempotency key, at most one live order per challenge.
    I2,
    /// Every APPROVED challenge has exactly one CREATED order with its key, product, quantity.
    I3,
    /// No ghost order once settled.
    I4,
    /// Nothing stuck in APPROVING or REVOKING past its lease.
    I5,
    /// Nothing lost: every accepted approval ends somewhere final.
    I6,
}

impl Invariant {
    /// All six, in order.
    pub const ALL: [Self; 6] = [Self::I1, Self::I2, Self::I3, Self::I4, Self::I5, Self::I6];

    /// A short description.
    pub fn title(self) -> &'static str {
        match self {
            Self::I1 => "no oversell (per product)",
            Self::I2 => "one order per key / per challenge",
            Self::I3 => "APPROVED has exactly its order",
            Self::I4 => "no ghost order",
            Self::I5 => "nothing stuck past its lease",
            Self::I6 => "nothing lost",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, so the report's table lines up.
        f.pad(match self {
            Self::I1 => "I1",
            Self::I2 => "I2",
            Self::I3 => "I3",
            Self::I4 => "I4",
            Self::I5 => "I5",
            Self::I6 => "I6",
        })
    }
}

/// One offending object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The offending id (product, order or challenge id, or an idempotency key).
    pub id: String,
    /// What is wrong with it.
    pub detail: String,
}

/// The result of one invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Which invariant.
    pub invariant: Invariant,
    /// Objects examined.
    pub checked: usize,
    /// Violations found (complete count).
    pub violation_count: usize,
    /// The first violations (at most 1 000).
    pub violations: Vec<Violation>,
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// One outcome per invariant, I1 to I6.
    pub outcomes: Vec<Outcome>,
    /// Challenges by status name (e.g. `APPROVED`).
    pub challenges_by_status: BTreeMap<String, usize>,
    /// Challenges dead-lettered.
    pub dead_lettered: usize,
    /// Orders by status name.
    pub orders_by_status: BTreeMap<String, usize>,
    /// Products read.
    pub products: usize,
    /// CREATED orders of challenges still settling (see I4); zero once the system settled.
    pub unsettled: usize,
    /// Challenges in flight (APPROVING or REVOKING).
    pub in_flight: usize,
    /// Challenges in APPROVE_FAILED with an automatic retry scheduled.
    pub retries_scheduled: usize,
}

impl Report {
    /// True when no invariant is violated.
    pub fn is_clean(&self) -> bool {
        self.outcomes.iter().all(|o| o.violation_count == 0)
    }

    /// True when clean and nothing is still moving: no order of a settling challenge, no
    /// challenge in flight, no automatic retry scheduled.
    pub fn is_settled(&self) -> bool {
        self.is_clean() && self.unsettled == 0 && self.in_flight == 0 && self.retries_scheduled == 0
    }

    /// The outcome of one invariant.
    pub fn outcome(&self, invariant: Invariant) -> &Outcome {
        &self.outcomes[invariant as usize]
    }

    /// Total violations over all invariants.
    pub fn violation_count(&self) -> usize {
        self.outcomes.iter().map(|o| o.violation_count).sum()
    }

    /// Number of challenges in a status (e.g. `"APPROVED"`).
    pub fn challenges(&self, status: &str) -> usize {
        self.challenges_by_status.get(status).copied().unwrap_or(0)
    }

    /// Number of orders in a status (`"CREATED"` or `"CANCELLED"`).
    pub fn orders(&self, status: &str) -> usize {
        self.orders_by_status.get(status).copied().unwrap_or(0)
    }
}

impl fmt::Display for Report {
    /// A table of the six invariants, then up to 10 offending ids per violated invariant.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = |map: &BTreeMap<String, usize>| {
            if map.is_empty() {
                return "none".to_owned();
            }
            map.iter()
                .map(|(status, n)| format!("{status} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "challenges: {} ({}; dead-lettered {})",
            self.challenges_by_status.values().sum::<usize>(),
            counts(&self.challenges_by_status),
            self.dead_lettered
        )?;
        writeln!(
            f,
            "orders: {} ({}); products: {}",
            self.orders_by_status.values().sum::<usize>(),
            counts(&self.orders_by_status),
            self.products,
        )?;
        writeln!(
            f,
            "still settling: {} orders of unsettled challenges, {} challenges in flight, {} retries scheduled",
            self.unsettled, self.in_flight, self.retries_scheduled
        )?;
        writeln!(
            f,
            "{:<4} {:<36} {:>8} {:>10}  result",
            "", "invariant", "checked", "violations"
        )?;
        for outcome in &self.outcomes {
            writeln!(
                f,
                "{:<4} {:<36} {:>8} {:>10}  {}",
                outcome.invariant,
                outcome.invariant.title(),
                outcome.checked,
                outcome.violation_count,
                if outcome.violation_count == 0 {
                    "ok"
                } else {
                    "VIOLATED"
                }
            )?;
        }
        for outcome in self.outcomes.iter().filter(|o| o.violation_count > 0) {
            for violation in outcome.violations.iter().take(10) {
                writeln!(
                    f,
                    "  {} {}: {}",
                    outcome.invariant, violation.id, violation.detail
                )?;
            }
            if outcome.violation_count > 10 {
                writeln!(
                    f,
                    "  {} … and {} more",
                    outcome.invariant,
                    outcome.violation_count - 10
                )?;
            }
        }
        Ok(())
    }
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

fn clients(
    approval_url: &str,
    order_url: &str,
) -> Result<(ApprovalServiceClient<Channel>, OrderServiceClient<Channel>), CheckError> {
    let channel = |url: &str| {
        // `host:port` is accepted too, as operators type it.
        let url = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        Endpoint::from_shared(url.clone())
            .map(|endpoint| {
                endpoint
                    .connect_timeout(Duration::from_secs(5))
                    .connect_lazy()
            })
            .map_err(|source| CheckError::Connect { url, source })
    };
    Ok((
        ApprovalServiceClient::new(channel(approval_url)?),
        OrderServiceClient::new(channel(order_url)?),
    ))
}

/// [`check`] with clients the caller already has.
pub async fn check_with(
    mut approval: ApprovalServiceClient<Channel>,
    mut order: OrderServiceClient<Channel>,
    options: &CheckOptions,
) -> Result<Report, CheckError> {
    // Challenges first: an order created after this read belongs to a challenge that was
    // already APPROVING when it was read, which I4 treats as settling.
    let challenges = read_challenges(&mut approval, options.rpc_timeout).await?;
    let products = read_products(&mut order, options.rpc_timeout).await?;
    let orders = read_orders(&mut order, options.rpc_timeout).await?;
    Ok(evaluate(
        &challenges,
        &products,
        &orders,
        options,
        SystemTime::now(),
    ))
}

fn rpc_error(rpc: &'static str) -> impl Fn(tonic::Status) -> CheckError {
    move |status| CheckError::Rpc {
        rpc,
        status: Box::new(status),
    }
}

fn timed<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

async fn read_challenges(
    client: &mut ApprovalServiceClient<Channel>,
    timeout: Duration,
) -> Result<Vec<approval_pb::Challenge>, CheckError> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_challenges(timed(
                approval_pb::ListChallengesRequest {
                    status: CStatus::Unspecified as i32,
                    page_size: 500,
                    page_token,
                },
                timeout,
            ))
            .await
            .map_err(rpc_error("ListChallenges"))?
            .into_inner();
        all.extend(page.challenges);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

async fn read_products(
    client: &mut OrderServiceClient<Channel>,
    timeout: Duration,
) -> Result<Vec<order_pb::Product>, CheckError> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_products(timed(
                order_pb::ListProductsRequest {
                    page_size: 500,
                    page_token,
                },
                timeout,
            ))
            .await
            .map_err(rpc_error("ListProducts"))?
            .into_inner();
        all.extend(page.products);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

async fn read_orders(
    client: &mut OrderServiceClient<Channel>,
    timeout: Duration,
) -> Result<Vec<order_pb::Order>, CheckError> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_orders(timed(
                order_pb::ListOrdersRequest {
                    page_size: 500,
                    page_token,
                    ..Default::default()
                },
                timeout,
            ))
            .await
            .map_err(rpc_error("ListOrders"))?
            .into_inner();
        all.extend(page.orders);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// Collects violations of one invariant.
struct Tally {
    invariant: Invariant,
    checked: usize,
    count: usize,
    kept: Vec<Violation>,
}

impl Tally {
    fn new(invariant: Invariant) -> Self {
        Self {
            invariant,
            checked: 0,
            count: 0,
            kept: Vec::new(),
        }
    }

    fn violation(&mut self, id: &str, detail: String) {
        self.count += 1;
        if self.kept.len() < KEPT_VIOLATIONS {
            self.kept.push(Violation {
                id: id.to_owned(),
                detail,
            });
        }
    }

    fn finish(self) -> Outcome {
        Outcome {
            invariant: self.invariant,
            checked: self.checked,
            violation_count: self.count,
            violations: self.kept,
        }
    }
}

fn challenge_status(challenge: &approval_pb::Challenge) -> CStatus {
    CStatus::try_from(challenge.status).unwrap_or(CStatus::Unspecified)
}

fn order_status(order: &order_pb::Order) -> OStatus {
    OStatus::try_from(order.status).unwrap_or(OStatus::Unspecified)
}

fn short(status_name: &str) -> String {
    status_name
        .trim_start_matches("CHALLENGE_STATUS_")
        .trim_start_matches("ORDER_STATUS_")
        .trim_start_matches("APPROVAL_FAILURE_REASON_")
        .to_owned()
}

fn is_transient(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::OrderServiceUnavailable | Reason::CircuitOpen | Reason::DeadlineExceeded
    )
}

fn time_of(timestamp: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    timestamp.and_then(|t| SystemTime::try_from(*t).ok())
}

/// Evaluates I1–I6 over what was read; pure, so it is unit-tested on hand-made data.
pub fn evaluate(
    challenges: &[approval_pb::Challenge],
    products: &[order_pb::Product],
    orders: &[order_pb::Order],
    options: &CheckOptions,
    now: SystemTime,
) -> Report {
    let mut i1 = Tally::new(Invariant::I1);
    let mut i2 = Tally::new(Invariant::I2);
    let mut i3 = Tally::new(Invariant::I3);
    let mut i4 = Tally::new(Invariant::I4);
    let mut i5 = Tally::new(Invariant::I5);
    let mut i6 = Tally::new(Invariant::I6);

    // I1: supply - stock = Σ CREATED quantities, per product.
    let mut created_quantity: HashMap<&str, i64> = HashMap::new();
    for order in orders
        .iter()
        .filter(|o| order_status(o) == OStatus::Created)
    {
        *created_quantity
            .entry(order.product_id.as_str())
            .or_default() += i64::from(order.quantity);
    }
    for product in products {
        i1.checked += 1;
        let ordered = created_quantity
            .remove(product.product_id.as_str())
            .unwrap_or(0);
        if product.stock < 0 {
            i1.violation(
                &product.product_id,
                format!("negative stock {}", product.stock),
            );
        }
        let taken = product.initial_stock + product.restocked - product.stock;
        if taken != ordered {
            i1.violation(
                &product.product_id,
                format!(
                    "initial {} + restocked {} - stock {} = {taken}, but CREATED orders hold {ordered}",
                    product.initial_stock, product.restocked, product.stock
                ),
            );
        }
    }
    for (product_id, ordered) in created_quantity {
        i1.violation(
            product_id,
            format!("CREATED orders hold {ordered} of a product that does not exist"),
        );
    }

    // I2: one order per (client, key); one challenge per key and per order.
    let mut orders_by_key: HashMap<(String, String), Vec<&order_pb::Order>> = HashMap::new();
    for order in orders {
        orders_by_key
            .entry((order.client_id.clone(), order.idempotency_key.clone()))
            .or_default()
            .push(order);
    }
    i2.checked = orders_by_key.len();
    for ((client, key), held) in &orders_by_key {
        if held.len() > 1 {
            let ids: Vec<&str> = held.iter().map(|o| o.order_id.as_str()).collect();
            i2.violation(
                key,
                format!(
                    "{} orders for key of client {client}: {}",
                    held.len(),
                    ids.join(", ")
                ),
            );
        }
    }
    let mut challenges_by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut challenges_by_order: HashMap<&str, Vec<&str>> = HashMap::new();
    for challenge in challenges {
        if !challenge.idempotency_key.is_empty() {
            challenges_by_key
                .entry(challenge.idempotency_key.as_str())
                .or_default()
                .push(challenge.challenge_id.as_str());
        }
        if !challenge.order_id.is_empty() {
            challenges_by_order
                .entry(challenge.order_id.as_str())
                .or_default()
                .push(challenge.challenge_id.as_str());
        }
    }
    for (key, sharing) in &challenges_by_key {
        if sharing.len() > 1 {
            i2.violation(
                key,
                format!("key shared by challenges {}", sharing.join(", ")),
            );
        }
    }
    for (order_id, sharing) in &challenges_by_order {
        if sharing.len() > 1 {
            i2.violation(
                order_id,
                format!("order held by challenges {}", sharing.join(", ")),
            );
        }
    }

    let client = options.client_id.as_str();
    let no_orders = Vec::new();
    let approval_orders = |key: &str| {
        orders_by_key
            .get(&(client.to_owned(), key.to_owned()))
            .unwrap_or(&no_orders)
    };

    // I3, I5, I6 per challenge.
    let mut challenges_by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut dead_lettered = 0;
    let mut in_flight = 0;
    let mut retries_scheduled = 0;
    let mut by_key: HashMap<&str, &approval_pb::Challenge> = HashMap::new();
    for challenge in challenges {
        let status = challenge_status(challenge);
        *challenges_by_status
            .entry(short(status.as_str_name()))
            .or_default() += 1;
        dead_lettered += usize::from(challenge.dead_lettered);
        in_flight += usize::from(matches!(status, CStatus::Approving | CStatus::Revoking));
        retries_scheduled += usize::from(
            status == CStatus::ApproveFailed
                && !challenge.dead_lettered
                && challenge.next_attempt_at.is_some(),
        );
        if !challenge.idempotency_key.is_empty() {
            by_key.insert(challenge.idempotency_key.as_str(), challenge);
        }
        let id = challenge.challenge_id.as_str();
        let held = approval_orders(&challenge.idempotency_key);
        let created: Vec<&&order_pb::Order> = held
            .iter()
            .filter(|o| order_status(o) == OStatus::Created)
            .collect();

        match status {
            CStatus::Approved => {
                i3.checked += 1;
                match created.as_slice() {
                    [order] => {
                        let mut wrong = Vec::new();
                        if order.order_id != challenge.order_id {
                            wrong.push(format!(
                                "order_id {} vs challenge's {}",
                                order.order_id, challenge.order_id
                            ));
                        }
                        if order.product_id != challenge.product_id {
                            wrong.push(format!(
                                "product {} vs {}",
                                order.product_id, challenge.product_id
                            ));
                        }
                        if order.quantity != challenge.quantity {
                            wrong.push(format!(
                                "quantity {} vs {}",
                                order.quantity, challenge.quantity
                            ));
                        }
                        if order.customer_id != challenge.user_id {
                            wrong.push(format!(
                                "customer {} vs user {}",
                                order.customer_id, challenge.user_id
                            ));
                        }
                        if !wrong.is_empty() {
                            i3.violation(
                                id,
                                format!("order {} differs: {}", order.order_id, wrong.join("; ")),
                            );
                        }
                    }
                    [] => i3.violation(
                        id,
                        format!(
                            "APPROVED but no CREATED order holds key {:?}",
                            challenge.idempotency_key
                        ),
                    ),
                    many => {
                        i3.violation(id, format!("APPROVED with {} CREATED orders", many.len()))
                    }
                }
            }
            CStatus::Revoked => {
                i3.checked += 1;
                if !held.iter().any(|o| o.order_id == challenge.order_id) {
                    i3.violation(
                        id,
                        format!(
                            "REVOKED but its order {} does not exist",
                            challenge.order_id
                        ),
                    );
                }
            }
            _ => {}
        }

        if matches!(status, CStatus::Approving | CStatus::Revoking) {
            i5.checked += 1;
            match time_of(challenge.lease_expires_at.as_ref()) {
                Some(lease) if lease + options.stuck_after_lease < now => {
                    let overdue = now.duration_since(lease).unwrap_or_default();
                    i5.violation(
                        id,
                        format!(
                            "{} for {} past its lease",
                            short(status.as_str_name()),
                            humantime::format_duration(trim(overdue))
                        ),
                    );
                }
                Some(_) => {}
                None => i5.violation(
                    id,
                    format!("{} without a lease", short(status.as_str_name())),
                ),
            }
        }

        let attempted = challenge.attempts > 0 || !challenge.idempotency_key.is_empty();
        if attempted {
            i6.checked += 1;
            let reason = Reason::try_from(challenge.failure_reason).unwrap_or(Reason::Unspecified);
            match status {
                CStatus::Approving | CStatus::Approved | CStatus::Revoking | CStatus::Revoked => {}
                CStatus::ApproveFailed if reason == Reason::Unspecified => {
                    i6.violation(id, "APPROVE_FAILED without a reason".into());
                }
                CStatus::ApproveFailed
                    if is_transient(reason)
                        && !challenge.dead_lettered
                        && challenge.next_attempt_at.is_none() =>
                {
                    i6.violation(
                        id,
                        format!(
                            "transient failure {} neither scheduled for a retry nor dead-lettered",
                            short(reason.as_str_name())
                        ),
                    );
                }
                CStatus::ApproveFailed => {}
                other => i6.violation(
                    id,
                    format!(
                        "approval attempted (attempts {}) but {}",
                        challenge.attempts,
                        short(other.as_str_name())
                    ),
                ),
            }
        }
    }
    let known: HashMap<&str, &approval_pb::Challenge> = challenges
        .iter()
        .map(|c| (c.challenge_id.as_str(), c))
        .collect();
    for accepted in &options.accepted {
        match known.get(accepted.as_str()) {
            None => {
                i6.checked += 1;
                i6.violation(
                    accepted,
                    "accepted approval's challenge does not exist".into(),
                );
            }
            Some(challenge) if challenge.attempts == 0 && challenge.idempotency_key.is_empty() => {
                i6.checked += 1;
                i6.violation(
                    accepted,
                    format!(
                        "accepted approval left no trace: {}",
                        short(challenge_status(challenge).as_str_name())
                    ),
                );
            }
            Some(_) => {}
        }
    }

    // I4: every CREATED approval-svc order belongs to an APPROVED challenge (or one settling).
    let mut unsettled = 0;
    let mut orders_by_status: BTreeMap<String, usize> = BTreeMap::new();
    for order in orders {
        let status = order_status(order);
        *orders_by_status
            .entry(short(status.as_str_name()))
            .or_default() += 1;
        if status != OStatus::Created || order.client_id != client {
            continue;
        }
        i4.checked += 1;
        let Some(challenge) = by_key.get(order.idempotency_key.as_str()) else {
            i4.violation(
                &order.order_id,
                format!("no challenge holds its key {:?}", order.idempotency_key),
            );
            continue;
        };
        match challenge_status(challenge) {
            CStatus::Approved if challenge.order_id == order.order_id => {}
            CStatus::Approving | CStatus::Revoking => unsettled += 1,
            CStatus::ApproveFailed
                if !challenge.dead_lettered && challenge.next_attempt_at.is_some() =>
            {
                unsettled += 1;
            }
            other => i4.violation(
                &order.order_id,
                format!(
                    "CREATED but challenge {} is {}{}",
                    challenge.challenge_id,
                    short(other.as_str_name()),
                    if challenge.dead_lettered {
                        " (dead-lettered)"
                    } else {
                        ""
                    }
                ),
            ),
        }
    }

    Report {
        outcomes: vec![
            i1.finish(),
            i2.finish(),
            i3.finish(),
            i4.finish(),
            i5.finish(),
            i6.finish(),
        ],
        challenges_by_status,
        dead_lettered,
        orders_by_status,
        products: products.len(),
        unsettled,
        in_flight,
        retries_scheduled,
    }
}

fn trim(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis().min(u128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "product-1";

    fn product(initial: i64, restocked: i64, stock: i64) -> order_pb::Product {
        order_pb::Product {
            product_id: P.into(),
            name: "p".into(),
            stock,
            initial_stock: initial,
            restocked,
            ..Default::default()
        }
    }

    fn order(id: &str, key: &str, status: OStatus) -> order_pb::Order {
        order_pb::Order {
            order_id: id.into(),
            product_id: P.into(),
            quantity: 1,
            customer_id: "user".into(),
            status: status as i32,
            idempotency_key: key.into(),
            client_id: APPROVAL_CLIENT_ID.into(),
            ..Default::default()
        }
    }

    fn challenge(id: &str, status: CStatus, key: &str, order_id: &str) -> approval_pb::Challenge {
        approval_pb::Challenge {
            challenge_id: id.into(),
            user_id: "user".into(),
            product_id: P.into(),
            quantity: 1,
            status: status as i32,
            idempotency_key: key.into(),
            order_id: order_id.into(),
            attempts: i32::from(!key.is_empty()),
            ..Default::default()
        }
    }

    fn run(c: &[approval_pb::Challenge], p: &[order_pb::Product], o: &[order_pb::Order]) -> Report {
        evaluate(c, p, o, &CheckOptions::default(), SystemTime::now())
    }

    fn violated(report: &Report) -> Vec<Invariant> {
        report
            .outcomes
            .iter()
            .filter(|o| o.violation_count > 0)
            .map(|o| o.invariant)
            .collect()
    }

    #[test]
    fn a_consistent_system_is_clean() {
        let report = run(
            &[
                challenge("c1", CStatus::Approved, "k1", "o1"),
                challenge("c2", CStatus::Pending, "", ""),
                challenge("c3", CStatus::Revoked, "k3", "o3"),
            ],
            &[product(5, 0, 4)],
            &[
                order("o1", "k1", OStatus::Created),
                order("o3", "k3", OStatus::Cancelled),
            ],
        );
        assert!(report.is_settled(), "{report}");
        assert_eq!(report.challenges("APPROVED"), 1);
        assert_eq!(report.orders("CANCELLED"), 1);
    }

    #[test]
    fn the_table_names_what_is_violated_and_the_offenders() {
        let report = run(
            &[challenge("c1", CStatus::Approved, "k1", "o1")],
            &[product(5, 0, 5)],
            &[],
        );
        let text = report.to_string();
        assert!(
            text.contains("I3   APPROVED has exactly its order"),
            "{text}"
        );
        assert!(text.contains("VIOLATED"), "{text}");
        assert!(
            text.contains("I3 c1: APPROVED but no CREATED order holds key \"k1\""),
            "{text}"
        );
        assert_eq!(text.matches("VIOLATED").count(), 1, "{text}");
    }

    #[test]
    fn oversell_and_double_restore_break_i1() {
        let report = run(
            &[],
            &[product(5, 0, 3)],
            &[order("o1", "k1", OStatus::Created)],
        );
        assert!(violated(&report).contains(&Invariant::I1), "{report}");
        let report = run(
            &[],
            &[product(5, 0, 5)],
            &[order("o1", "k1", OStatus::Created)],
        );
        assert!(violated(&report).contains(&Invariant::I1));
    }

    #[test]
    fn duplicate_orders_break_i2_i3_and_the_extra_is_a_ghost() {
        let report = run(
            &[challenge("c1", CStatus::Approved, "k1", "o1")],
            &[product(5, 0, 3)],
            &[
                order("o1", "k1", OStatus::Created),
                order("o2", "k1", OStatus::Created),
            ],
        );
        assert_eq!(
            violated(&report),
            [Invariant::I2, Invariant::I3, Invariant::I4]
        );
    }

    #[test]
    fn approved_without_order_breaks_i3() {
        let report = run(
            &[challenge("c1", CStatus::Approved, "k1", "o1")],
            &[product(5, 0, 5)],
            &[],
        );
        assert_eq!(violated(&report), [Invariant::I3]);
    }

    #[test]
    fn ghosts_break_i4_unless_settling() {
        let ghost = run(
            &[challenge("c1", CStatus::Revoked, "k1", "o1")],
            &[product(5, 0, 4)],
            &[order("o1", "k1", OStatus::Created)],
        );
        assert_eq!(violated(&ghost), [Invariant::I4]);

        let orphan = run(
            &[],
            &[product(5, 0, 4)],
            &[order("o1", "k9", OStatus::Created)],
        );
        assert_eq!(violated(&orphan), [Invariant::I4]);

        let mut approving = challenge("c1", CStatus::Approving, "k1", "");
        approving.lease_expires_at = Some(prost_types::Timestamp::from(
            SystemTime::now() + Duration::from_secs(30),
        ));
        let settling = run(
            &[approving],
            &[product(5, 0, 4)],
            &[order("o1", "k1", OStatus::Created)],
        );
        assert!(settling.is_clean(), "{settling}");
        assert_eq!(settling.unsettled, 1);
        assert!(!settling.is_settled());
    }

    #[test]
    fn expired_leases_break_i5() {
        let mut stuck = challenge("c1", CStatus::Approving, "k1", "");
        stuck.lease_expires_at = Some(prost_types::Timestamp::from(
            SystemTime::now() - Duration::from_secs(60),
        ));
        let report = run(&[stuck], &[product(5, 0, 5)], &[]);
        assert_eq!(violated(&report), [Invariant::I5]);
    }

    #[test]
    fn lost_approvals_break_i6() {
        let mut no_reason = challenge("c1", CStatus::ApproveFailed, "k1", "");
        no_reason.failure_reason = Reason::Unspecified as i32;
        let mut unscheduled = challenge("c2", CStatus::ApproveFailed, "k2", "");
        unscheduled.failure_reason = Reason::DeadlineExceeded as i32;
        let mut back_to_pending = challenge("c3", CStatus::Pending, "k3", "");
        back_to_pending.attempts = 1;
        let never_seen = challenge("c4", CStatus::Pending, "", "");
        let options = CheckOptions {
            accepted: vec!["c4".into(), "c5".into()],
            ..CheckOptions::default()
        };
        let report = evaluate(
            &[no_reason, unscheduled, back_to_pending, never_seen],
            &[product(5, 0, 5)],
            &[],
            &options,
            SystemTime::now(),
        );
        assert_eq!(violated(&report), [Invariant::I6]);
        assert_eq!(report.outcome(Invariant::I6).violation_count, 5, "{report}");

        let mut out_of_stock = challenge("c1", CStatus::ApproveFailed, "k1", "");
        out_of_stock.failure_reason = Reason::OutOfStock as i32;
        let mut dead = challenge("c2", CStatus::ApproveFailed, "k2", "");
        dead.failure_reason = Reason::CircuitOpen as i32;
        dead.dead_lettered = true;
        assert!(run(&[out_of_stock, dead], &[product(5, 0, 5)], &[]).is_clean());
    }
}
