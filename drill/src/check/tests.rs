use std::time::{Duration, SystemTime};

use lab_proto::approval::v1 as approval_pb;
use lab_proto::order::v1 as order_pb;

use approval_pb::{ApprovalFailureReason as Reason, ChallengeStatus as CStatus};
use order_pb::OrderStatus as OStatus;

use super::*;

const P: &str = "product-1";

/// A product's ledger; [`run`] fills in its CREATED orders from the orders it is given.
fn product(initial: i64, restocked: i64, stock: i64) -> order_pb::ProductLedger {
    order_pb::ProductLedger {
        product_id: P.into(),
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

/// Evaluates a quiet system: each ledger's snapshot agrees with the orders listed.
fn run(
    c: &[approval_pb::Challenge],
    p: &[order_pb::ProductLedger],
    o: &[order_pb::Order],
) -> Report {
    let ledgers: Vec<order_pb::ProductLedger> = p
        .iter()
        .map(|ledger| {
            let created = o.iter().filter(|order| {
                order.product_id == ledger.product_id && order.status == OStatus::Created as i32
            });
            order_pb::ProductLedger {
                created_quantity: created.clone().map(|order| i64::from(order.quantity)).sum(),
                created_orders: created.count() as i64,
                ..ledger.clone()
            }
        })
        .collect();
    evaluate(c, &ledgers, o, &CheckOptions::default(), SystemTime::now())
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

#[test]
fn i1_is_judged_from_one_snapshot_not_from_reads_a_cancel_straddles() {
    // The orders were listed while o1 held one unit; the shop then cancelled o1 and the
    // ledger, read after, shows stock back at 5 and nothing CREATED. Nothing was oversold:
    // separate reads of the stock and the orders would have said otherwise.
    let ledger = order_pb::ProductLedger {
        created_quantity: 0,
        ..product(5, 0, 5)
    };
    let shop_order = order_pb::Order {
        client_id: "shop".into(),
        ..order("o1", "k1", OStatus::Created)
    };
    let report = evaluate(
        &[],
        &[ledger],
        std::slice::from_ref(&shop_order),
        &CheckOptions::default(),
        SystemTime::now(),
    );
    assert!(report.is_clean(), "{report}");

    // A ledger that does not add up is an oversell, whatever the order list says.
    let oversold = order_pb::ProductLedger {
        created_quantity: 2,
        ..product(5, 0, 4)
    };
    let report = evaluate(
        &[],
        &[oversold],
        &[shop_order],
        &CheckOptions::default(),
        SystemTime::now(),
    );
    assert_eq!(violated(&report), [Invariant::I1], "{report}");
}

#[test]
fn a_cancelled_order_makes_order_cancelled_never_approved() {
    // As the saga and approval-svc's checker record it: settled and clean.
    let mut failed = challenge("c1", CStatus::ApproveFailed, "k1", "");
    failed.failure_reason = Reason::OrderCancelled as i32;
    let report = run(
        std::slice::from_ref(&failed),
        &[product(5, 0, 5)],
        &[order("o1", "k1", OStatus::Cancelled)],
    );
    assert!(report.is_settled(), "{report}");

    // ORDER_CANCELLED while the order under its key is live: a ghost.
    let report = run(
        &[failed],
        &[product(5, 0, 4)],
        &[order("o1", "k1", OStatus::Created)],
    );
    assert_eq!(violated(&report), [Invariant::I4], "{report}");

    // APPROVED on a cancelled order breaks I3, and says so.
    let report = run(
        &[challenge("c1", CStatus::Approved, "k1", "o1")],
        &[product(5, 0, 5)],
        &[order("o1", "k1", OStatus::Cancelled)],
    );
    assert_eq!(violated(&report), [Invariant::I3]);
    let text = report.to_string();
    assert!(
        text.contains("I3 c1: APPROVED but its order o1 is CANCELLED"),
        "{text}"
    );
}
