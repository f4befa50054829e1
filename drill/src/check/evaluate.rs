//! I1–I6 evaluated over what was read: pure, so the rules are unit-tested without services.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use lab_proto::approval::v1 as approval_pb;
use lab_proto::order::v1 as order_pb;

use approval_pb::{ApprovalFailureReason as Reason, ChallengeStatus as CStatus};
use order_pb::OrderStatus as OStatus;

use super::{CheckOptions, Invariant, KEPT_VIOLATIONS, Outcome, Report, Violation};

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
///
/// I1 is judged from each product's ledger (`GetProductLedger`: its stock counters and the sum
/// of its CREATED orders from one snapshot), never from `orders`, which was read at another
/// moment: a cancel or a create between two reads would look like an oversell. `orders` still
/// shows CREATED orders of a product that has no ledger.
pub fn evaluate(
    challenges: &[approval_pb::Challenge],
    ledgers: &[order_pb::ProductLedger],
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

    // I1: supply - stock = Σ CREATED quantities, per product, from one snapshot.
    for ledger in ledgers {
        i1.checked += 1;
        if ledger.stock < 0 {
            i1.violation(
                &ledger.product_id,
                format!("negative stock {}", ledger.stock),
            );
        }
        let taken = ledger.initial_stock + ledger.restocked - ledger.stock;
        if taken != ledger.created_quantity {
            i1.violation(
                &ledger.product_id,
                format!(
                    "initial {} + restocked {} - stock {} = {taken}, but CREATED orders hold {}",
                    ledger.initial_stock, ledger.restocked, ledger.stock, ledger.created_quantity
                ),
            );
        }
    }
    let known: HashSet<&str> = ledgers.iter().map(|l| l.product_id.as_str()).collect();
    let mut unknown_products: BTreeMap<&str, i64> = BTreeMap::new();
    for order in orders
        .iter()
        .filter(|o| order_status(o) == OStatus::Created && !known.contains(o.product_id.as_str()))
    {
        *unknown_products
            .entry(order.product_id.as_str())
            .or_default() += i64::from(order.quantity);
    }
    for (product_id, ordered) in unknown_products {
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

    // I2, per challenge: an order carries no challenge id, but approval-svc orders for the
    // challenge's user as customer and its product, so more CREATED approval-svc orders for a
    // (user, product) than challenges of that pair means a challenge with several live orders,
    // even when the extra orders carry keys no challenge holds (a client that makes a fresh key
    // per call). Only pairs some challenge owns: an order of no challenge at all is I4's.
    let mut owners: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for challenge in challenges {
        owners
            .entry((challenge.user_id.as_str(), challenge.product_id.as_str()))
            .or_default()
            .push(challenge.challenge_id.as_str());
    }
    let mut live_by_owner: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for order in orders
        .iter()
        .filter(|o| o.client_id == client && order_status(o) == OStatus::Created)
    {
        live_by_owner
            .entry((order.customer_id.as_str(), order.product_id.as_str()))
            .or_default()
            .push(order.order_id.as_str());
    }
    for (owner, live) in &live_by_owner {
        if let Some(owned_by) = owners.get(owner)
            && live.len() > owned_by.len()
        {
            i2.violation(
                &owned_by.join(","),
                format!(
                    "{} live orders for {} challenge(s) of user {} and product {}: {}",
                    live.len(),
                    owned_by.len(),
                    owner.0,
                    owner.1,
                    live.join(", ")
                ),
            );
        }
    }

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
                    // The saga never approves on a cancelled order (it records APPROVE_FAILED with
                    // ORDER_CANCELLED); an approved one cancelled later needs a revoke.
                    [] => match held.iter().find(|o| o.order_id == challenge.order_id) {
                        Some(cancelled) => i3.violation(
                            id,
                            format!(
                                "APPROVED but its order {} is {}",
                                cancelled.order_id,
                                short(order_status(cancelled).as_str_name())
                            ),
                        ),
                        None => i3.violation(
                            id,
                            format!(
                                "APPROVED but no CREATED order holds key {:?}",
                                challenge.idempotency_key
                            ),
                        ),
                    },
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
        products: ledgers.len(),
        unsettled,
        in_flight,
        retries_scheduled,
    }
}

fn trim(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis().min(u128::from(u64::MAX)) as u64)
}
