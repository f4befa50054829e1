//! The checker's one-at-a-time lock survives cancellation: a check whose caller goes away, or
//! whose request times out on the server, leaves no lock behind, so the next check runs.

use std::time::Duration;

use lab_proto::approval::v1 as apb;
use lab_proto::approval::v1::ops_service_client::OpsServiceClient;
use sqlx::PgPool;

use crate::helpers::*;

/// Advisory locks held in approval-svc's database (the checker's is the only kind it takes).
async fn advisory_locks(approval_db: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks
         WHERE locktype = 'advisory'
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(approval_db)
    .await
    .unwrap()
}

/// approval-svc whose checks run on demand only and wait as long as order-svc takes, so a
/// slowed order-svc keeps a check running (and its lock held) until it is cancelled.
async fn patient_checker(
    order: &OrderSvc,
    request_timeout: Duration,
) -> (
    ApprovalSvc,
    PgPool,
    OpsServiceClient<tonic::transport::Channel>,
) {
    let database_url = fresh_database().await;
    let mut config = ApprovalSvc::config(&database_url, &order.url());
    config.check_interval = Duration::ZERO;
    config.order_call_timeout = Duration::from_secs(60);
    config.order_attempt_timeout = Duration::from_secs(60);
    config.lease = Duration::from_secs(120);
    config.request_timeout = request_timeout;
    let approval = ApprovalSvc::start(config).await;
    let sql = lab_common::postgres::connect(&database_url, 1)
        .await
        .unwrap();
    let ops = OpsServiceClient::connect(format!("http://{}", approval.addr))
        .await
        .unwrap();
    (approval, sql, ops)
}

fn full_check() -> apb::RunConsistencyCheckRequest {
    apb::RunConsistencyCheckRequest {
        full: true,
        dry_run: false,
    }
}

/// After a cancelled check: the lock goes away, and the next check runs (not CHECK_IN_PROGRESS).
async fn next_check_runs(sql: &PgPool, ops: &mut OpsServiceClient<tonic::transport::Channel>) {
    eventually(
        Duration::from_secs(10),
        "the cancelled check's advisory lock to be released",
        || async { advisory_locks(sql).await == 0 },
    )
    .await;
    let mut request = tonic::Request::new(full_check());
    // Longer than the server's wait for a running check, so a leaked lock shows as its answer.
    request.set_timeout(Duration::from_secs(45));
    let next = ops.run_consistency_check(request).await;
    assert!(
        next.is_ok(),
        "the check after a cancelled one must run: {next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_cancelled_by_its_caller_leaves_no_lock_behind() {
    bounded(async {
        let order = OrderSvc::start().await;
        let (_approval, sql, mut ops) = patient_checker(&order, Duration::from_secs(120)).await;
        order.product(5).await;
        // Every check lists approval-svc's orders; slowed, the check sits there holding its lock.
        order.faults.set_from_str("ListOrders:delay=60s").unwrap();

        let mut caller = ops.clone();
        let running = tokio::spawn(async move { caller.run_consistency_check(full_check()).await });
        eventually(
            Duration::from_secs(10),
            "the check to hold its lock",
            || async { advisory_locks(&sql).await == 1 },
        )
        .await;
        // The caller gives up: its RPC is reset, and the server drops the check's future.
        running.abort();
        let _ = running.await;
        order.faults.clear();

        next_check_runs(&sql, &mut ops).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_cut_by_the_request_timeout_leaves_no_lock_behind() {
    bounded(async {
        let order = OrderSvc::start().await;
        let (_approval, sql, mut ops) = patient_checker(&order, Duration::from_secs(1)).await;
        order.product(5).await;
        order.faults.set_from_str("ListOrders:delay=60s").unwrap();

        let cut = ops.run_consistency_check(full_check()).await;
        let code = cut
            .expect_err("the server's request timeout ends the call")
            .code();
        assert!(
            matches!(code, tonic::Code::Cancelled | tonic::Code::DeadlineExceeded),
            "{code:?}"
        );
        order.faults.clear();

        next_check_runs(&sql, &mut ops).await;
    })
    .await;
}
