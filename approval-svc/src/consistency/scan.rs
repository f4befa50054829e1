//! One pass over both sides: each challenge, order and product is compared with its
//! counterpart through order-svc's public RPCs, and what is safe to heal is healed.
//!
//! Every subject (challenge, order, product) the scan reaches a verdict on is recorded in
//! [`Scan::examined`], violated or not: an open incident resolves only when its subject was
//! examined and not found violated, never because a check could not tell.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lab_common::audit::{self, Caller};
use lab_proto::order::v1 as order_pb;
use sqlx::PgPool;
use tonic::Status;
use uuid::Uuid;

use super::report::{Invariant, Violation};
use super::shop::Shop;
use super::store;
use crate::audit::{Action, Asked};
use crate::domain::{Challenge, Status as ChallengeStatus};
use crate::saga::Saga;

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
#[derive(Debug)]
pub struct Scan<'a> {
    pool: &'a PgPool,
    shop: Shop,
    saga: &'a Saga,
    heal: bool,
    /// Who heals, for the audit trail: the service, under the check's run id.
    healer: Caller,
    now: DateTime<Utc>,
    settle: chrono::Duration,
    seen: HashSet<String>,
    /// Problems found so far.
    pub violations: Vec<Violation>,
    /// Subjects (challenge, order and product ids) a verdict was reached on.
    pub examined: HashSet<Uuid>,
    /// Products to check for I1.
    pub products: BTreeSet<Uuid>,
    /// Challenges examined.
    pub challenges_checked: i64,
    /// Orders examined.
    pub orders_checked: i64,
    /// Products examined.
    pub products_checked: i64,
}

fn parse_id(value: &str) -> Option<Uuid> {
    Uuid::try_parse(value).ok()
}

fn is_created(order: &order_pb::Order) -> bool {
    order.status == order_pb::OrderStatus::Created as i32
}

impl<'a> Scan<'a> {
    /// A scan at database time `now`; in-flight work younger than `settle` past its lease is
    /// left to the saga and the completer. Heals (when `heal`) are recorded as the service's,
    /// under `run_id`.
    pub fn new(
        pool: &'a PgPool,
        shop: Shop,
        saga: &'a Saga,
        heal: bool,
        run_id: &str,
        now: DateTime<Utc>,
        settle: Duration,
    ) -> Self {
        Self {
            pool,
            shop,
            saga,
            heal,
            healer: Caller::system(run_id),
            now,
            settle: chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::MAX),
            seen: HashSet::new(),
            violations: Vec::new(),
            examined: HashSet::new(),
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

    fn healing(&self, action: Action) -> Asked {
        Asked::new(self.healer.clone(), action)
    }

    fn lease_long_expired(&self, challenge: &Challenge) -> bool {
        challenge
            .lease_expires_at
            .is_some_and(|lease| lease + self.settle < self.now)
    }

    /// Compares one challenge with its order, healing what is safe. A challenge already
    /// examined by this scan (found twice: changed, stuck, named by an incident, owning an
    /// order) is not examined again.
    pub async fn challenge(&mut self, challenge: &Challenge) -> Result<(), ScanError> {
        if self.examined.contains(&challenge.challenge_id) {
            return Ok(());
        }
        self.examine_challenge(challenge).await?;
        self.examined.insert(challenge.challenge_id);
        Ok(())
    }

    async fn examine_challenge(&mut self, challenge: &Challenge) -> Result<(), ScanError> {
        self.challenges_checked += 1;
        self.products.insert(challenge.product_id);
        let id = challenge.challenge_id;
        match challenge.status() {
            ChallengeStatus::Approved => {
                let Some(order_id) = challenge.order_id else {
                    return Ok(());
                };
                let problem = match self.shop.order(order_id).await? {
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
                if let Some(order) = self.shop.order(order_id).await?
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
                    let healer = self.healing(Action::CompleteRevoke);
                    let finished = self
                        .saga
                        .drive_revoke(challenge.clone(), None, Some(&healer))
                        .await;
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
                match self.shop.order_by_key(key).await? {
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
            let healer = self.healing(Action::RescheduleRetry);
            let healed = store::reschedule_lost(self.pool, challenge.challenge_id, &healer).await?;
            self.mark_last(healed, "put back on the retry schedule");
        }
        Ok(())
    }

    /// The last violation found is about an attempt whose outcome the order under its key
    /// tells, as the saga would read it: a CREATED order rolls the approval forward to
    /// APPROVED; a stale APPROVING whose order was cancelled outside the saga fails, definitively,
    /// with ORDER_CANCELLED (never APPROVED on a cancelled order); no order is left to the
    /// completer.
    async fn roll_forward_if_ordered(&mut self, challenge: &Challenge) -> Result<(), ScanError> {
        let Some(key) = challenge.idempotency_key.as_deref() else {
            return Ok(());
        };
        let order = self.shop.order_by_key(key).await?;
        let order_id = order.as_ref().and_then(|o| parse_id(&o.order_id));
        if order_id.is_some()
            && let Some(last) = self.violations.last_mut()
        {
            last.order_id = order_id;
        }
        match (order, order_id) {
            (Some(order), Some(order_id)) if is_created(&order) => {
                if self.heal {
                    let healer = self.healing(Action::CompleteApproval);
                    let id = challenge.challenge_id;
                    let healed = store::roll_forward(self.pool, id, key, order_id, &healer).await?;
                    self.mark_last(healed, "rolled forward to APPROVED");
                }
            }
            (Some(_), Some(_)) if challenge.status() == ChallengeStatus::Approving => {
                if self.heal {
                    let healer = self.healing(Action::CompleteApproval);
                    let id = challenge.challenge_id;
                    let healed = store::fail_order_cancelled(self.pool, id, key, &healer).await?;
                    self.mark_last(
                        healed,
                        "its order was cancelled outside the saga: recorded APPROVE_FAILED \
                         (ORDER_CANCELLED)",
                    );
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

    /// Cancels an order in order-svc, then records it: the change is order-svc's, so no
    /// transaction here could hold both.
    async fn cancel(&mut self, order_id: Uuid) -> Result<(), ScanError> {
        self.shop.cancel(order_id).await?;
        let event = self.healing(Action::CancelOrder).event(order_id, audit::OK);
        audit::record(self.pool, [event]).await?;
        Ok(())
    }

    fn mark_last(&mut self, healed: bool, action: &str) {
        if let Some(last) = self.violations.last_mut() {
            last.healed = healed;
            last.action = action.to_owned();
        }
    }

    /// Compares one of approval-svc's orders with the challenge its key belongs to.
    pub async fn order(&mut self, order: &order_pb::Order) -> Result<(), ScanError> {
        let (Some(order_id), Some(product_id)) =
            (parse_id(&order.order_id), parse_id(&order.product_id))
        else {
            return Ok(());
        };
        if self.examined.contains(&order_id) {
            return Ok(());
        }
        self.examine_order(order, order_id, product_id).await?;
        self.examined.insert(order_id);
        Ok(())
    }

    async fn examine_order(
        &mut self,
        order: &order_pb::Order,
        order_id: Uuid,
        product_id: Uuid,
    ) -> Result<(), ScanError> {
        self.orders_checked += 1;
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

    /// I1 for one product, from its ledger (one snapshot of the stock counters and the
    /// CREATED orders): `stock >= 0` and `initial + restocked - stock = Σ CREATED quantities`.
    /// A product order-svc does not know reaches no verdict.
    pub async fn product(&mut self, product_id: Uuid) -> Result<(), ScanError> {
        if self.examined.contains(&product_id) {
            return Ok(());
        }
        self.products_checked += 1;
        let Some(ledger) = self.shop.ledger(product_id).await? else {
            return Ok(());
        };
        self.examined.insert(product_id);
        let supplied = ledger.initial_stock + ledger.restocked;
        if ledger.stock < 0 || supplied - ledger.stock != ledger.created_quantity {
            let detail = format!(
                "stock {} with {supplied} supplied, but CREATED orders hold {}",
                ledger.stock, ledger.created_quantity
            );
            if let Some(violation) =
                self.found(Violation::new(Invariant::NoOversell, detail).product(product_id))
            {
                violation.action = "needs a person: stock is never adjusted automatically".into();
            }
        }
        Ok(())
    }
}
