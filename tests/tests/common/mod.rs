//! Helpers shared by the scenario tests (each `tests/*.rs` file is its own crate and uses a
//! subset, hence the `dead_code` allowance).
#![allow(dead_code)]

use std::time::Duration;

use lab_drill::check::{CheckOptions, Report};
use lab_drill::cluster::{Cluster, ClusterOptions};
use lab_drill::load::{ApproveRun, Summary, approve_all, dead_letters};
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use tonic::transport::Channel;

/// Starts a cluster or fails the test with the reason.
pub async fn start(options: ClusterOptions) -> Cluster {
    Cluster::start(options).await.expect("cluster starts")
}

/// Check options with the given accepted approvals (deduplicated).
pub fn accepted(ids: &[String]) -> CheckOptions {
    let mut accepted = ids.to_vec();
    accepted.sort();
    accepted.dedup();
    CheckOptions {
        accepted,
        ..CheckOptions::default()
    }
}

/// Re-sends, as callers do, the approvals whose call got no answer in `first` (a challenge
/// still APPROVING answers as it stands); returns that second run and the ids either run got
/// accepted.
pub async fn resend_errored(
    approval: &ApprovalServiceClient<Channel>,
    first: &ApproveRun,
    concurrency: usize,
) -> (ApproveRun, Vec<String>) {
    let second = approve_all(
        approval,
        &first.errored,
        concurrency,
        Duration::from_secs(10),
        None,
    )
    .await;
    let mut accepted = first.accepted.clone();
    accepted.extend(second.accepted.iter().cloned());
    (second, accepted)
}

/// Waits for the system to settle with no operator's help (nothing requeued: a dead letter
/// left is work the completer gave up on), then returns the dead letters left and the report.
pub async fn settle_unaided(
    cluster: &Cluster,
    accepted_ids: &[String],
    timeout: Duration,
) -> (Vec<String>, Report) {
    let report = settled(cluster, &accepted(accepted_ids), timeout).await;
    let dead = dead_letters(&mut cluster.approval_client())
        .await
        .expect("dead letters are listed");
    (dead, report)
}

/// Waits for the system to settle and returns the report, printing it when it is not clean.
pub async fn settled(cluster: &Cluster, options: &CheckOptions, timeout: Duration) -> Report {
    let report = cluster
        .check_settled(options, timeout)
        .await
        .expect("the checker reads both services");
    if !report.is_settled() {
        eprintln!("{report}");
    }
    report
}

/// Fills the summary's resilience and proxy counters from the cluster and prints it; then
/// fails the scenario if approval-svc's consistency checker healed anything (checks run on
/// demand only, so every repair the scenario sees must be the saga's or the completer's).
pub async fn finish(cluster: &Cluster, summary: &mut Summary, elapsed: Duration) {
    if summary.resilience.is_none() {
        summary.resilience = Some(cluster.approval_counts().await);
    }
    if let Some(proxy) = &cluster.proxy {
        summary.proxy = Some(proxy.handle().stats());
    }
    let healed = cluster.checker_healed().await;
    summary.figure(
        "checker_healed",
        healed.map_or_else(|| "unreadable".to_owned(), |n| n.to_string()),
    );
    summary.elapsed = elapsed;
    summary.print();
    assert_eq!(
        healed,
        Some(0),
        "approval-svc's consistency checker healed something: the repair was not the completer's"
    );
}
