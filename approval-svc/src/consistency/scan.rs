//! One pass over both sides: each challenge, order and product is compared with its
//! counterpart through order-svc's public RPCs, and what is safe to heal is healed.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lab_common::metadata::CLIENT_ID;
use lab_proto::order::v1 as order_pb;
use sqlx::PgPool;
use tonic::{Code, Status};
use uuid::Uuid;

use super::report::{Invariant, Violation};
use super::store;
use crate::domain::{Challenge, Status as ChallengeStatus};
use crate::orders::{CLIENT_NAME, OrderClient};
use crate::saga::Saga;

/// Page size of every listing the checker makes.
pub const PAGE: i32 = 500;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const COMPENSATION_REASON: &str = "compensation by the consistency checker";

/// Why a scan stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// order-svc could not answer.
    #[error("order-svc: {0}")]
    OrderService(#[from] Status),
    /// approval-svc's database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The state of one check in progress.
pub struct Scan<'a> {
    pool: &'a PgPool,
    orders: OrderClient,
    saga: &'a Saga,
    heal: bool,
    now: DateTime<Utc>,
    settle: chrono::Duration,
    seen: HashSet<String>,
    /// Problems found so far.
    pub violations: Vec<Violation>,
    /// Products to check for I1.
    pub products: BTreeSet<Uuid>,
    /// Challenges examined.
    pub challenges_checked: i64,
    /// Orders examined.
    pub orders_checked: i64,
    /// Products examined.
    pub products_checked: i64,
}

/// A request as approval-svc sends it: its `client-id` (order-svc scopes keys to it) and a
/// bounded deadline.
fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        CLIENT_ID,
        tonic::metadata::MetadataValue::from_static(CLIENT_NAME),
    );
    request.set_timeout(CALL_TIMEOUT);
    request
}

fn parse_id(value: &str) -> Option<Uuid> {
    Uuid::try_parse(value).ok()
}

fn is_created(order: &order_pb::Order) -> bool {
    order.status == order_pb::OrderStatus::Created as i32
}

impl<'a> Scan<'a> {
    /// A scan at database time `now`; in-flight work younger than `settle` past its lease is
    /// left to the saga and the completer.
    pub fn new(
        pool: &'a PgPool,
        orders: OrderClient,
        saga: &'a Saga,
        heal: bool,
        now: DateTime<Utc>,
        settle: Duration,
    ) -> Self {
        Self {
            pool,
            orders,
            saga,
            heal,
            now,
            settle: chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::MAX),
            seen: HashSet::new(),
            violations: Vec::new(),
            products: BTreeSet::new(),
            challenges_checked: 0,
            orders_checked: 0,
            products_checked: 0,
        }
    }

    /// Records a violation once per check (two paths may find the same one).
    fn found(&mut self, violation: Violation) -> Option<&mut Violation> {
        if self.seen.insert(violation.dedup_key()) {
            self.violations.push(violation);
            self.violations.last_mut()
        } else {
            None
        }
    }

    fn lease_long_expired(&self, challenge: &Challenge) -> bool {
        challenge
            .lease_expires_at
            .is_some_and(|lease| lease + self.settle < self.now)
    }

    async fn get_order(&self, order_id: Uuid) -> Result<Option<order_pb::Order>, Status> {
        match self
            .orders
            .clone()
            .get_order(request(order_pb::GetOrderRequest {
                order_id: order_id.to_string(),
            }))
            .await
        {
            Ok(response) => Ok(response.into_inner().order),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    async fn lookup_order(&self, key: &str) -> Result<Option<order_pb::Order>, Status> {
        match self
            .orders
            .clone()
            .lookup_order(request(order_pb::LookupOrderRequest {
                idempotency_key: key.to_owned(),
            }))
            .await
        {
            Ok(response) => Ok(response.into_inner().order),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    async fn cancel(&self, order_id: Uuid) -> Result<(), Status> {
        self.orders
            .clone()
            .cancel_order(request(order_pb::CancelOrderRequest {
                order_id: order_id.to_string(),
                reason: COMPENSATION_REASON.to_owned(),
            }))
            .await
            .map(drop)
    }

    /// Compares one challenge with its order, healing what is safe.
    pub async fn challenge(&mut self, challenge: &Challenge) -> Result<(), ScanError> {
        self.challenges_checked += 1;
        self.products.insert(challenge.product_id);
        let id = challenge.challenge_id;
        match challenge.status() {
            ChallengeStatus::Approved => {
                let Some(order_id) = challenge.order_id else {
                    return Ok(());
                };
                let problem = match self.get_order(order_id).await? {
                    None => Some("APPROVED, but its order does not exist".to_owned()),
                    Some(order) if !is_created(&order) => {
                        Some("APPROVED, but its order is cancelled".to_owned())
                    }
                    Some(order)
                        if Some(order.idempotency_key.as_str())
                            != challenge.idempotency_key.as_deref()
                            || parse_id(&order.product_id) != Some(challenge.product_id)
                            || order.quantity != challenge.quantity =>
                    {
                        Some("APPROVED, but its order has another key, product or quantity".into())
                    }
                    Some(_) => None,
                };
                if let Some(detail) = problem
                    && let Some(violation) = self.found(
                        Violation::new(Invariant::ApprovedHasOrder, detail)
                            .challenge(id)
                            .order(order_id),
                    )
                {
                    violation.action =
                        "needs a person: the order cannot be recreated safely".into();
                }
            }
            ChallengeStatus::Revoked => {
                let Some(order_id) = challenge.order_id else {
                    return Ok(());
                };
                if let Some(order) = self.get_order(order_id).await?
                    && is_created(&order)
                {
                    self.cancel_ghost(
                        Violation::new(Invariant::NoGhostOrder, "REVOKED, but its order is live")
                            .challenge(id),
                        order_id,
                    )
                    .await?;
                }
            }
            ChallengeStatus::Revoking if self.lease_long_expired(challenge) => {
                let violation =
                    Violation::new(Invariant::NothingStuck, "stuck in REVOKING").challenge(id);
                if self.found(violation).is_some() && self.heal {
                    let finished = self.saga.drive_revoke(challenge.clone(), None).await;
                    let healed =
                        matches!(&finished, Ok(c) if c.status() == ChallengeStatus::Revoked);
                    self.mark_last(
                        healed,
                        if healed {
                            "finished the revoke"
                        } else {
                            "revoke still failing"
                        },
                    );
                }
            }
            ChallengeStatus::Approving if self.lease_long_expired(challenge) => {
                let violation =
                    Violation::new(Invariant::NothingStuck, "stuck in APPROVING").challenge(id);
                if self.found(violation).is_some() {
                    self.roll_forward_if_ordered(challenge).await?;
                }
            }
            ChallengeStatus::ApproveFailed => {
                let Some(key) = challenge.idempotency_key.as_deref() else {
                    return Ok(());
                };
                match self.lookup_order(key).await? {
                    Some(order) if is_created(&order) => {
                        let violation = Violation::new(
                            Invariant::NoGhostOrder,
                            "APPROVE_FAILED, but its order exists",
                        )
                        .challenge(id);
                        if self.found(violation).is_some() {
                            self.roll_forward_if_ordered(challenge).await?;
                        }
                    }
                    _ => self.lost_retry(challenge).await?,
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// I6: a transient failure that nobody will retry.
    async fn lost_retry(&mut self, challenge: &Challenge) -> Result<(), ScanError> {
        let lost = challenge.failure_reason().is_some_and(|r| r.is_transient())
            && !challenge.dead_lettered
            && challenge.next_attempt_at.is_none();
        if !lost {
            return Ok(());
        }
        let violation = Violation::new(
            Invariant::NothingLost,
            "transient failure neither scheduled for a retry nor dead-lettered",
        )
        .challenge(challenge.challenge_id);
        if self.found(violation).is_some() && self.heal {
            let healed = store::reschedule_lost(self.pool, challenge.challenge_id).await?;
            self.mark_last(healed, "put back on the retry schedule");
        }
        Ok(())
    }

    /// The last violation found: its order exists, so the approval is rolled forward.
    async fn roll_forward_if_ordered(&mut self, challenge: &Challenge) -> Result<(), ScanError> {
        let Some(key) = challenge.idempotency_key.as_deref() else {
            return Ok(());
        };
        match self.lookup_order(key).await? {
            Some(order) if is_created(&order) => {
                let order_id = parse_id(&order.order_id);
                if let Some(last) = self.violations.last_mut() {
                    last.order_id = order_id;
                }
                if self.heal
                    && let Some(order_id) = order_id
                {
                    let healed =
                        store::roll_forward(self.pool, challenge.challenge_id, key, order_id)
                            .await?;
                    self.mark_last(healed, "rolled forward to APPROVED");
                }
            }
            _ => self.mark_last(false, "no order yet: left to the completer"),
        }
        Ok(())
    }

    async fn cancel_ghost(
        &mut self,
        violation: Violation,
        order_id: Uuid,
    ) -> Result<(), ScanError> {
        if self.found(violation.order(order_id)).is_some() && self.heal {
            self.cancel(order_id).await?;
            self.mark_last(true, "cancelled the order (compensation)");
        }
        Ok(())
    }

    fn mark_last(&mut self, healed: bool, action: &str) {
        if let Some(last) = self.violations.last_mut() {
            last.healed = healed;
            last.action = action.to_owned();
        }
    }

    /// Compares one of approval-svc's live orders with the challenge its key belongs to.
    pub async fn order(&mut self, order: &order_pb::Order) -> Result<(), ScanError> {
        self.orders_checked += 1;
        let (Some(order_id), Some(product_id)) =
            (parse_id(&order.order_id), parse_id(&order.product_id))
        else {
            return Ok(());
        };
        self.products.insert(product_id);
        if !is_created(order) {
            return Ok(());
        }
        let challenge = store::challenge_by_key(self.pool, &order.idempotency_key).await?;
        let Some(challenge) = challenge else {
            return self
                .cancel_ghost(
                    Violation::new(
                        Invariant::NoGhostOrder,
                        "live order whose key belongs to no challenge",
                    ),
                    order_id,
                )
                .await;
        };
        let id = challenge.challenge_id;
        match challenge.status() {
            ChallengeStatus::Approved if challenge.order_id != Some(order_id) => {
                // Keyed by the order, not the challenge: the challenge's own order is fine.
                let violation = Violation::new(
                    Invariant::OneOrderPerKey,
                    format!("a second live order for approved challenge {id}"),
                )
                .order(order_id)
                .product(product_id);
                if self.found(violation).is_some() && self.heal {
                    self.cancel(order_id).await?;
                    self.mark_last(true, "cancelled the duplicate order");
                }
            }
            ChallengeStatus::Rejected | ChallengeStatus::Revoked => {
                self.cancel_ghost(
                    Violation::new(
                        Invariant::NoGhostOrder,
                        "live order for a rejected or revoked challenge",
                    )
                    .challenge(id),
                    order_id,
                )
                .await?;
            }
            ChallengeStatus::ApproveFailed | ChallengeStatus::Approving => {
                self.challenge(&challenge).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// I1 for one product: initial + restocked - stock = Σ quantities of CREATED orders. The
    /// two reads are not atomic, so the sum is taken between two reads of the stock and only
    /// trusted when the stock did not move.
    pub async fn product(&mut self, product_id: Uuid) -> Result<(), ScanError> {
        self.products_checked += 1;
        for _ in 0..3 {
            let Some(before) = self.get_product(product_id).await? else {
                return Ok(());
            };
            let ordered = self.created_quantity(product_id).await?;
            let Some(after) = self.get_product(product_id).await? else {
                return Ok(());
            };
            if before.stock != after.stock || before.restocked != after.restocked {
                continue;
            }
            let taken = after.initial_stock + after.restocked - after.stock;
            if after.stock < 0 || taken != ordered {
                let detail = format!(
                    "stock {} with {} supplied, but CREATED orders hold {ordered}",
                    after.stock,
                    after.initial_stock + after.restocked
                );
                if let Some(violation) =
                    self.found(Violation::new(Invariant::NoOversell, detail).product(product_id))
                {
                    violation.action =
                        "needs a person: stock is never adjusted automatically".into();
                }
            }
            return Ok(());
        }
        Ok(())
    }

    async fn get_product(&self, product_id: Uuid) -> Result<Option<order_pb::Product>, Status> {
        match self
            .orders
            .clone()
            .get_product(request(order_pb::GetProductRequest {
                product_id: product_id.to_string(),
            }))
            .await
        {
            Ok(response) => Ok(response.into_inner().product),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    async fn created_quantity(&self, product_id: Uuid) -> Result<i64, Status> {
        let mut total = 0i64;
        let mut page_token = String::new();
        loop {
            let page = self
                .orders
                .clone()
                .list_orders(request(order_pb::ListOrdersRequest {
                    product_id: product_id.to_string(),
                    status: order_pb::OrderStatus::Created.into(),
                    page_size: PAGE,
                    page_token,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            total += page
                .orders
                .iter()
                .map(|o| i64::from(o.quantity))
                .sum::<i64>();
            if page.next_page_token.is_empty() {
                return Ok(total);
            }
            page_token = page.next_page_token;
        }
    }
}
