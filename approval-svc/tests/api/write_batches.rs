//! Group commit of the saga's writes (issue 11): concurrent approvals share transactions, and
//! every caller still gets exactly its own answer; the batch statements decide duplicates,
//! fences and missing rows as single writes would; a failed batch fails its callers only.

use std::sync::Arc;
use std::time::Duration;

use approval_svc::audit::{Action, Asked};
use approval_svc::domain::Operation;
use approval_svc::domain::{
    AttemptOutcome, Challenge, FailureReason, NewChallenge, NextStep, Status, Transition,
};
use approval_svc::error::ApprovalError;
use approval_svc::repository::attempts::{self, BatchError, FinishRequest, StartRequest};
use approval_svc::repository::challenges;
use approval_svc::sold_out::SoldOutMemory;
use approval_svc::write_batch::WriteBatches;
use lab_common::audit::Caller;
use lab_proto::approval::v1 as apb;
use sqlx::PgPool;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::helpers::*;

/// `_sum` and `_count` of `approval_write_batch_size{write}` from a `/metrics` body.
fn batch_totals(body: &str, write: &str) -> (f64, f64) {
    let read = |suffix: &str| {
        let prefix = format!("approval_write_batch_size_{suffix}{{write=\"{write}\"}} ");
        body.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    };
    (read("sum"), read("count"))
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// 200 distinct challenges approved at once on stock 120: each caller gets its own challenge,
/// 120 APPROVED and 80 OUT_OF_STOCK, exactly 120 orders; and the intents were written in
/// batches of more than one (fewer transactions than approvals).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_approvals_share_commits() {
    bounded_alone(async {
        let order = OrderSvc::start().await;
        let mut config = ApprovalSvc::config(&fresh_database().await, &order.url());
        config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        // The 200 order calls leave together once their intents commit; on a shared 2-core
        // machine order-svc may take longer than the 1 s default per attempt to settle them
        // all, which this test is not about.
        config.order_attempt_timeout = Duration::from_secs(20);
        config.order_call_timeout = Duration::from_secs(20);
        config.lease = Duration::from_secs(30);
        let approval = ApprovalSvc::start(config).await;
        let metrics_addr = approval.metrics_addr.unwrap();
        let product = order.product(120).await;
        let mut ids = Vec::new();
        for _ in 0..200 {
            ids.push(approval.submit(&product.product_id, 1).await.challenge_id);
        }
        // The recorder is process-wide: compare deltas (this test runs alone).
        let before = scrape(metrics_addr).await;

        let barrier = Arc::new(Barrier::new(ids.len()));
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(approval.client().await);
        }
        let tasks: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let mut client = clients[n % clients.len()].clone();
                let (barrier, id) = (barrier.clone(), id.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    client
                        .approve_challenge(apb::ApproveChallengeRequest {
                            challenge_id: id,
                            approver: "admin".into(),
                        })
                        .await
                })
            })
            .collect();
        let (mut approved, mut out_of_stock) = (0, 0);
        for (id, task) in ids.iter().zip(tasks) {
            let answer = task.await.unwrap().expect("every approval answers OK");
            let challenge = answer.into_inner().challenge.unwrap();
            assert_eq!(
                &challenge.challenge_id, id,
                "each caller gets its own challenge"
            );
            match status(&challenge) {
                apb::ChallengeStatus::Approved => approved += 1,
                apb::ChallengeStatus::ApproveFailed => {
                    assert_eq!(failure(&challenge), apb::ApprovalFailureReason::OutOfStock);
                    out_of_stock += 1;
                }
                other => panic!("challenge {id} answered {other:?}"),
            }
            assert_eq!(challenge.attempts, 1);
        }
        assert_eq!((approved, out_of_stock), (120, 80));
        assert_eq!(order.get_product(&product.product_id).await.stock, 0);
        assert_eq!(order.orders(&product.product_id).await.len(), 120);
        assert_invariants(&order, &approval, &[product.product_id]).await;

        let after = scrape(metrics_addr).await;
        for write in ["start", "finish"] {
            let (sum_before, count_before) = batch_totals(&before, write);
            let (sum_after, count_after) = batch_totals(&after, write);
            let (requests, batches) = (sum_after - sum_before, count_after - count_before);
            println!("{write}: {requests} requests in {batches} batches");
            assert_eq!(requests, 200.0, "every {write} write went through a batch");
            if write == "start" {
                // 200 intents behind one barrier: while the first batch is in the database
                // the others queue up.
                assert!(
                    batches < requests,
                    "no {write} batch held more than one request: {batches} batches"
                );
            }
        }
        assert!(
            after.contains("# HELP approval_write_batch_size"),
            "the family has HELP text"
        );
    })
    .await;
}

/// 50 concurrent approvals of one challenge among 50 approvals of others, so duplicates share
/// batches with each other and with other challenges: every caller is OK with the challenge as
/// it stands, one attempt and exactly one order for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_inside_batches_take_one_attempt() {
    bounded_alone(async {
        let order = OrderSvc::start().await;
        let approval =
            ApprovalSvc::start(ApprovalSvc::config(&fresh_database().await, &order.url())).await;
        let product = order.product(100).await;
        let hot = approval.submit(&product.product_id, 2).await.challenge_id;
        let mut others = Vec::new();
        for _ in 0..50 {
            others.push(approval.submit(&product.product_id, 1).await.challenge_id);
        }
        let targets: Vec<String> = others
            .iter()
            .flat_map(|other| [hot.clone(), other.clone()])
            .collect();

        let barrier = Arc::new(Barrier::new(targets.len()));
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(approval.client().await);
        }
        let tasks: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let mut client = clients[n % clients.len()].clone();
                let (barrier, id) = (barrier.clone(), id.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    client
                        .approve_challenge(apb::ApproveChallengeRequest {
                            challenge_id: id,
                            approver: "admin".into(),
                        })
                        .await
                })
            })
            .collect();
        for (id, task) in targets.iter().zip(tasks) {
            let answer = task.await.unwrap().expect("every response is OK");
            let challenge = answer.into_inner().challenge.unwrap();
            assert_eq!(&challenge.challenge_id, id);
            let seen = status(&challenge);
            assert!(
                matches!(
                    seen,
                    apb::ChallengeStatus::Approving | apb::ChallengeStatus::Approved
                ),
                "{seen:?}"
            );
        }

        let settled = settled(&approval, Duration::from_secs(30)).await;
        let hot = settled.iter().find(|c| c.challenge_id == hot).unwrap();
        assert_eq!(status(hot), apb::ChallengeStatus::Approved);
        assert_eq!(hot.attempts, 1, "duplicates never start an attempt");
        let orders = order.orders(&product.product_id).await;
        assert_eq!(orders.len(), 51, "one order per challenge");
        assert_eq!(
            orders
                .iter()
                .filter(|o| o.idempotency_key == hot.idempotency_key)
                .count(),
            1
        );
        assert_eq!(
            order.get_product(&product.product_id).await.stock,
            100 - 2 - 50
        );
        assert_invariants(&order, &approval, &[product.product_id]).await;
    })
    .await;
}

async fn migrated_pool() -> PgPool {
    let pool = lab_common::postgres::connect(&fresh_database().await, 4)
        .await
        .unwrap();
    approval_svc::startup::MIGRATOR.run(&pool).await.unwrap();
    pool
}

async fn pending(pool: &PgPool) -> Uuid {
    let id = Uuid::now_v7();
    let new = NewChallenge {
        user_id: Uuid::now_v7(),
        product_id: Uuid::now_v7(),
        quantity: 1,
        title: "ran a marathon".into(),
    };
    challenges::insert(pool, id, &new).await.unwrap();
    id
}

/// An approval from PENDING, else a retry, asked by `admin` under request id `request_id`.
fn start_as(id: Uuid, from: Status, request_id: &str) -> StartRequest {
    let (operation, action) = if from == Status::Pending {
        (Operation::Approve, Action::ApproveChallenge)
    } else {
        (Operation::Retry, Action::RetryApproval)
    };
    StartRequest {
        id,
        from,
        operation,
        approver: Some("admin".into()),
        new_key: Uuid::now_v7().to_string(),
        lease: Duration::from_secs(30),
        asked: Asked::new(asked_by_admin(request_id), action),
    }
}

fn start(id: Uuid, from: Status) -> StartRequest {
    start_as(id, from, "")
}

fn asked_by_admin(request_id: &str) -> Caller {
    Caller {
        actor: "admin".into(),
        request_id: request_id.into(),
    }
}

/// The audit trail as (action, target, outcome, request id), oldest first.
async fn recorded(pool: &PgPool) -> Vec<(String, String, String, String)> {
    sqlx::query_as(
        "SELECT action, target_id, outcome, request_id FROM audit_events ORDER BY event_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn row(transition: &Transition) -> (&'static str, Option<&Challenge>) {
    match transition {
        Transition::Applied(row) => ("applied", Some(row)),
        Transition::Unchanged(row) => ("unchanged", Some(row)),
        Transition::Missing => ("missing", None),
    }
}

/// A large batch on a large table finds its rows by primary key: no statement of either write
/// scans the table. (Before, the rows were locked with `challenge_id = ANY($1)`, which the
/// planner turned into a scan of the whole table once a batch held a couple of hundred ids.)
#[tokio::test]
async fn large_batches_find_their_rows_by_primary_key() {
    bounded(async {
        let pool = migrated_pool().await;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO challenges (challenge_id, user_id, product_id, quantity, title, status)
             SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 1, 'bulk', 'PENDING'
             FROM generate_series(1, 20000)
             RETURNING challenge_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        sqlx::query("ANALYZE challenges")
            .execute(&pool)
            .await
            .unwrap();
        let batch = &ids[..200];

        let mut tx = pool.begin().await.unwrap();
        let scans_before = challenge_scans(&mut tx).await;
        let started = attempts::start_attempts(
            &mut tx,
            &batch
                .iter()
                .map(|id| start(*id, Status::Pending))
                .collect::<Vec<_>>(),
            &[],
        )
        .await
        .unwrap();
        assert!(
            started
                .iter()
                .all(|transition| matches!(transition, Transition::Applied(_)))
        );
        let finished = attempts::finish_attempts(
            &mut tx,
            &batch
                .iter()
                .map(|id| FinishRequest {
                    id: *id,
                    attempt: 1,
                    outcome: AttemptOutcome::Approved {
                        order_id: Uuid::now_v7(),
                    },
                    asked: Asked::system(Action::CompleteApproval, "bulk"),
                })
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
        assert!(finished.iter().all(Option::is_some));
        let scans = challenge_scans(&mut tx).await - scans_before;
        tx.commit().await.unwrap();
        assert_eq!(scans, 0, "a batch scanned the whole challenges table");
    })
    .await;
}

/// Sequential scans of challenges by this backend so far. Read twice inside one transaction,
/// the difference is the transaction's own: counters are only flushed between transactions.
async fn challenge_scans(connection: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'challenges'")
        .fetch_one(connection)
        .await
        .unwrap()
}

/// One batch with duplicates, a wrong state and a missing row decides each request as the
/// applying request followed by the others would: one attempt per challenge; each request that
/// did not start records its event in the batch (one that started records at its outcome).
#[tokio::test]
async fn a_start_batch_decides_each_request_as_single_writes_would() {
    bounded(async {
        let pool = migrated_pool().await;
        let (first, second, third) = (
            pending(&pool).await,
            pending(&pool).await,
            pending(&pool).await,
        );
        let missing = Uuid::now_v7();
        let requests = [
            start_as(second, Status::ApproveFailed, "0"),
            start_as(first, Status::Pending, "1"),
            start_as(first, Status::Pending, "2"),
            start_as(missing, Status::Pending, "3"),
            start_as(first, Status::ApproveFailed, "4"),
            start_as(second, Status::Pending, "5"),
            start_as(third, Status::ApproveFailed, "6"),
        ];
        let mut tx = pool.begin().await.unwrap();
        let transitions = attempts::start_attempts(&mut tx, &requests, &[])
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let seen: Vec<_> = transitions
            .iter()
            .map(|t| {
                let (kind, row) = row(t);
                (kind, row.map(|r| (r.challenge_id, r.status(), r.attempts)))
            })
            .collect();
        let approving = |id| Some((id, Status::Approving, 1));
        assert_eq!(
            seen,
            [
                ("unchanged", approving(second)),
                ("applied", approving(first)),
                ("unchanged", approving(first)),
                ("missing", None),
                ("unchanged", approving(first)),
                ("applied", approving(second)),
                ("unchanged", Some((third, Status::Pending, 0))),
            ]
        );
        let event = |action: &str, id: Uuid, outcome: &str, request_id: &str| {
            let text = |value: &str| value.to_owned();
            (
                text(action),
                id.to_string(),
                text(outcome),
                text(request_id),
            )
        };
        assert_eq!(
            recorded(&pool).await,
            [
                event("RetryApproval", second, "REPLAYED", "0"),
                event("ApproveChallenge", first, "REPLAYED", "2"),
                event("ApproveChallenge", missing, "CHALLENGE_NOT_FOUND", "3"),
                event("RetryApproval", first, "REPLAYED", "4"),
                event("RetryApproval", third, "CHALLENGE_NOT_RETRYABLE", "6"),
            ]
        );
        let Transition::Applied(applied) = &transitions[1] else {
            unreachable!()
        };
        assert_eq!(
            applied.idempotency_key.as_deref(),
            Some(requests[1].new_key.as_str()),
            "the applying request's key"
        );
        assert!(applied.lease_expires_at.is_some());
        assert_eq!(applied.approver, "admin");
    })
    .await;
}

/// One batch of outcomes: the write whose fence holds lands; a second outcome for the same
/// attempt, a stale attempt and a missing row are fenced out (`None`); a failure's schedule and
/// an uncharged attempt's budget are written as by the single write. Every request records its
/// attempt's event in the batch, fenced out or not.
#[tokio::test]
async fn a_finish_batch_is_fenced_by_attempts() {
    bounded(async {
        let pool = migrated_pool().await;
        let (approved, failed, stale) = (
            pending(&pool).await,
            pending(&pool).await,
            pending(&pool).await,
        );
        for id in [approved, failed, stale] {
            let started = attempts::start_attempt(&pool, start(id, Status::Pending))
                .await
                .unwrap();
            assert!(matches!(started, Transition::Applied(_)), "{started:?}");
        }
        let order_id = Uuid::now_v7();
        let finish = |id, attempt, outcome| FinishRequest {
            id,
            attempt,
            outcome,
            asked: Asked::system(Action::CompleteApproval, format!("attempt {attempt}")),
        };
        let unavailable = AttemptOutcome::Failed {
            reason: FailureReason::OrderServiceUnavailable,
            message: "order-svc is down".into(),
            next: NextStep::RetryAfter(Duration::from_secs(60)),
            charged: false,
        };
        let requests = [
            finish(approved, 1, AttemptOutcome::Approved { order_id }),
            finish(approved, 1, unavailable.clone()),
            finish(failed, 1, unavailable),
            finish(stale, 0, AttemptOutcome::Approved { order_id }),
            finish(Uuid::now_v7(), 1, AttemptOutcome::Approved { order_id }),
        ];
        let mut tx = pool.begin().await.unwrap();
        let written = attempts::finish_attempts(&mut tx, &requests).await.unwrap();
        tx.commit().await.unwrap();

        let seen: Vec<_> = written
            .iter()
            .map(|row| row.as_ref().map(|r| (r.challenge_id, r.status())))
            .collect();
        assert_eq!(
            seen,
            [
                Some((approved, Status::Approved)),
                None,
                Some((failed, Status::ApproveFailed)),
                None,
                None,
            ]
        );
        let approved_row = written[0].as_ref().unwrap();
        assert_eq!(approved_row.order_id, Some(order_id));
        assert!(approved_row.lease_expires_at.is_none());
        let failed_row = written[2].as_ref().unwrap();
        assert_eq!(
            failed_row.failure_reason(),
            Some(FailureReason::OrderServiceUnavailable)
        );
        assert_eq!(failed_row.failure_message, "order-svc is down");
        assert!(failed_row.next_attempt_at.is_some());
        assert!(!failed_row.dead_lettered);
        assert_eq!(
            failed_row.budget_start, 1,
            "an uncharged attempt moves the budget"
        );
        let stale_row = challenges::get(&pool, stale).await.unwrap().unwrap();
        assert_eq!(
            stale_row.status(),
            Status::Approving,
            "fenced out: untouched"
        );
        let outcomes: Vec<(String, String)> = recorded(&pool)
            .await
            .into_iter()
            .map(|(_, target, outcome, _)| (target, outcome))
            .collect();
        let unavailable = "ORDER_SERVICE_UNAVAILABLE";
        let expected = [
            (approved, "OK"),
            (approved, unavailable),
            (failed, unavailable),
            (stale, "OK"),
            (requests[4].id, "OK"),
        ]
        .map(|(id, outcome)| (id.to_string(), outcome.to_owned()));
        assert_eq!(outcomes, expected);
    })
    .await;
}

/// A batch the database refuses fails its callers with the database's error (mapped as a
/// single write's would be), writes nothing, and the next batch works.
#[tokio::test]
async fn a_failed_batch_fails_its_callers_and_the_next_batch_works() {
    bounded(async {
        let pool = migrated_pool().await;
        let id = pending(&pool).await;
        let batches = WriteBatches::new(
            pool.clone(),
            16,
            Duration::ZERO,
            SoldOutMemory::new(Duration::ZERO),
        );
        // A lease past the end of time: PostgreSQL refuses the timestamp.
        let mut overflowing = start(id, Status::Pending);
        overflowing.lease = Duration::MAX;
        let error = batches.start_attempt(overflowing).await.unwrap_err();
        assert!(matches!(error, BatchError::Database(_)), "{error:?}");
        let status = tonic::Status::from(ApprovalError::from(error));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            !status.message().contains("range"),
            "no database message in a status: {status:?}"
        );
        assert_eq!(
            challenges::get(&pool, id).await.unwrap().unwrap().status(),
            Status::Pending,
            "the failed batch wrote nothing"
        );

        let transition = batches
            .start_attempt(start(id, Status::Pending))
            .await
            .unwrap();
        assert!(
            matches!(transition, Transition::Applied(_)),
            "{transition:?}"
        );
    })
    .await;
}
