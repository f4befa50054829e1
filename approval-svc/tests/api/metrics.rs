//! `/metrics` parses as Prometheus text, and approval-svc's counters move as a scenario runs:
//! outcomes by reason, client attempts, completer rounds, consistency checks, state gauges.

use std::time::Duration;

use lab_proto::approval::v1 as apb;
use lab_proto::approval::v1::ops_service_client::OpsServiceClient;
use prometheus_parse::{Sample, Scrape, Value};

use crate::helpers::*;

async fn scrape(addr: std::net::SocketAddr) -> Vec<Sample> {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Scrape::parse(body.lines().map(|line| Ok(line.to_owned())))
        .expect("Prometheus text format")
        .samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_as_approvals_run() {
    bounded(async {
        let order = OrderSvc::start().await;
        let mut config = ApprovalSvc::config(&fresh_database().await, &order.url());
        config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        config.check_interval = Duration::ZERO;
        let approval = ApprovalSvc::start(config).await;
        let metrics_addr = approval.metrics_addr.unwrap();
        // The recorder is process-wide and tests run in parallel: compare deltas.
        let before = scrape(metrics_addr).await;

        let product = order.product(1).await;
        let first = approval.submit(&product.product_id, 1).await;
        let second = approval.submit(&product.product_id, 1).await;
        assert_eq!(
            status(&approval.approve(&first.challenge_id).await),
            apb::ChallengeStatus::Approved
        );
        assert_eq!(
            failure(&approval.approve(&second.challenge_id).await),
            apb::ApprovalFailureReason::OutOfStock
        );
        OpsServiceClient::connect(format!("http://{}", approval.addr))
            .await
            .unwrap()
            .run_consistency_check(apb::RunConsistencyCheckRequest::default())
            .await
            .unwrap();
        // Gauges are sampled every few seconds.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let after = scrape(metrics_addr).await;
        let delta = |name: &str, labels: &[(&str, &str)]| {
            value(&after, name, labels) - value(&before, name, labels)
        };

        assert!(delta("approval_approvals_total", &[("status", "approved")]) >= 1.0);
        assert!(
            delta(
                "approval_approvals_total",
                &[("status", "approve_failed"), ("reason", "OUT_OF_STOCK")]
            ) >= 1.0
        );
        assert!(delta("resilience_attempts_total", &[]) >= 2.0);
        assert!(delta("consistency_checks_total", &[("result", "ok")]) >= 1.0);
        assert!(value(&after, "approval_completer_runs_total", &[]) >= 1.0);
        assert!(
            after
                .iter()
                .any(|s| s.metric == "approval_challenges"
                    && s.labels.get("status") == Some("APPROVED")),
            "state gauges are exported"
        );
        assert!(after.iter().any(|s| s.metric == "approval_dead_letters"));
        assert!(after.iter().any(|s| s.metric == "consistency_violations"));
        assert!(
            after
                .iter()
                .any(|s| s.metric == "db_pool_connections"
                    && s.labels.get("pool") == Some("approval"))
        );
    })
    .await;
}
