//! Helpers shared by the scenario tests (each `tests/*.rs` file is its own crate and uses a
//! subset, hence the `dead_code` allowance).
#![allow(dead_code)]

use std::time::Duration;

use lab_testkit::check::{CheckOptions, Report};
use lab_testkit::cluster::{Cluster, ClusterOptions};
use lab_testkit::load::Summary;

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

/// Fills the summary's resilience and proxy counters from the cluster and prints it.
pub async fn finish(cluster: &Cluster, summary: &mut Summary, elapsed: Duration) {
    if summary.resilience.is_none() {
        summary.resilience = Some(cluster.approval_counts().await);
    }
    if let Some(proxy) = &cluster.proxy {
        summary.proxy = Some(proxy.handle().stats());
    }
    summary.elapsed = elapsed;
    summary.print();
}
