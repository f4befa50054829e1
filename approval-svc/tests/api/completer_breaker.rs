//! The completer during an outage: calls the local breaker refuses are not attempts, and a
//! round while the breaker is open or half-open drives no more than its probes.

use std::time::Duration;

use approval_svc::config::RateTrigger;
use lab_proto::approval::v1 as apb;

use crate::helpers::*;

/// order-svc answers every CreateOrder with UNAVAILABLE for several breaker cycles while 20
/// challenges are due for retries: no challenge is dead-lettered by CIRCUIT_OPEN refusals, the
/// attempts charged to the budgets are exactly the calls that reached order-svc, and once the
/// breaker cycles no completer call is refused (each half-open round drives only the probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn breaker_refusals_do_not_spend_the_completers_attempts() {
    bounded_alone(async {
        let (order, faults) = OrderSvc::start_with_faults().await;
        let database = fresh_database().await;
        let mut config = ApprovalSvc::config(&database, &order.url());
        config.check_interval = Duration::ZERO;
        config.max_attempts = 4;
        config.order_call_attempts = 1;
        config.breaker_consecutive_failures = 2;
        config.breaker_failure_rate = RateTrigger::Off;
        let mut approval = ApprovalSvc::start(config).await;
        let product = order.product(100).await;
        let mut ids = Vec::new();
        for _ in 0..20 {
            ids.push(approval.submit(&product.product_id, 1).await.challenge_id);
        }

        faults
            .set_from_str("CreateOrder:error=UNAVAILABLE")
            .unwrap();
        for id in &ids {
            let failed = approval.approve(id).await;
            assert_eq!(status(&failed), apb::ChallengeStatus::ApproveFailed);
        }
        let dead_letters = || async {
            approval
                .all()
                .await
                .iter()
                .filter(|challenge| challenge.dead_lettered)
                .count()
        };
        // Steady outage: the breaker has re-opened after a failed probe at least once.
        eventually(Duration::from_secs(30), "a failed probe", || async {
            approval.breaker.stats().opened >= 2 || dead_letters().await > 0
        })
        .await;
        let before = approval.breaker.stats();
        eventually(
            Duration::from_secs(40),
            "five more breaker cycles",
            || async {
                approval.breaker.stats().opened >= before.opened + 5 || dead_letters().await > 0
            },
        )
        .await;
        let after = approval.breaker.stats();
        let dead = dead_letters().await;
        approval.stop().await;

        assert_eq!(
            dead, 0,
            "challenges dead-lettered by CIRCUIT_OPEN refusals over {} breaker openings",
            after.opened
        );
        assert_eq!(
            after.rejections - before.rejections,
            0,
            "completer calls refused by the breaker over {} half-open rounds: a round drove \
             more than the probe",
            after.opened - before.opened
        );
        let pool = sqlx::PgPool::connect(&database).await.unwrap();
        let (charged, started): (i64, i64) = sqlx::query_as(
            "SELECT sum(attempts - budget_start)::int8, sum(attempts)::int8 FROM challenges",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            u64::try_from(charged).unwrap(),
            faults.injected(),
            "attempts charged to budgets ({started} started) must be the calls that reached \
             order-svc"
        );
    })
    .await;
}
