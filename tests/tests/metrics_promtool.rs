//! Both services' `/metrics` pages, scraped from the release binaries before any traffic and
//! after some, pass Prometheus's own `promtool check metrics` (every family has HELP, names
//! follow its conventions), and every family README's "metric families" table lists is there
//! from start-up, its counters at 0 for each known label value.
//!
//! Skips, saying so, only when `promtool` is not installed (`.ci/run` installs it).

use std::time::Duration;

use lab_drill::cluster::{Cluster, ClusterOptions, lazy_channel};
use lab_drill::load::{approve_all, create_product, submit_challenges};
use lab_drill::metrics::{self, Metrics, PromtoolError, promtool_findings};
use lab_drill::process::{ServiceProcess, workspace_root};
use lab_proto::approval::v1 as apb;
use lab_proto::approval::v1::ops_service_client::OpsServiceClient;

/// The README section whose table this test holds both services to.
const TABLE_HEADING: &str = "### Metric families, from the first scrape";

/// One row of README's table: a family, which service exports it, and whether from start-up.
struct Documented {
    family: String,
    service: String,
    from_start_up: bool,
}

/// The families of README's table (the first column's name, without its labels).
fn documented_families() -> Vec<Documented> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let (_, section) = readme
        .split_once(TABLE_HEADING)
        .unwrap_or_else(|| panic!("README.md has the section {TABLE_HEADING:?}"));
    let families: Vec<Documented> = section
        .lines()
        .skip(1)
        .take_while(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let family = cells[1]
                .trim_matches('`')
                .split('{')
                .next()
                .unwrap_or_default()
                .to_owned();
            Documented {
                family,
                service: cells[2].to_owned(),
                from_start_up: cells[4].starts_with("yes"),
            }
        })
        .collect();
    assert!(families.len() > 20, "README's table was read");
    families
}

/// The documented families `service` must export from start-up that `page` lacks.
fn missing_at_start_up(page: &Metrics, service: &str) -> Vec<String> {
    documented_families()
        .into_iter()
        .filter(|row| row.from_start_up && (row.service == service || row.service == "both"))
        .filter(|row| !page.has_family(&row.family))
        .map(|row| row.family)
        .collect()
}

/// A series on a page: the page, the family and its labels.
type SeriesOf<'a> = (&'a Metrics, &'static str, Vec<(&'static str, String)>);

/// Scrapes `process` and lints the page; `None` when promtool is not installed.
async fn scrape_and_lint(process: &ServiceProcess) -> Option<(Metrics, Vec<String>)> {
    let addr = process.metrics_addr().expect("the service serves /metrics");
    let page = metrics::fetch(addr).await.expect("GET /metrics");
    match promtool_findings(&page).await {
        Ok(findings) => Some((Metrics::parse(&page), findings)),
        Err(PromtoolError::NotInstalled) => None,
        Err(error) => panic!("{error}"),
    }
}

/// Names of an enum's values as the services spell them in labels (prefix dropped).
fn label_values(names: impl Iterator<Item = &'static str>, prefix: &str) -> Vec<String> {
    names
        .filter(|name| !name.ends_with("_UNSPECIFIED"))
        .map(|name| name.trim_start_matches(prefix).to_owned())
        .collect()
}

fn failure_reasons() -> Vec<String> {
    label_values(
        (1..)
            .map_while(|n| apb::ApprovalFailureReason::try_from(n).ok())
            .map(|reason| reason.as_str_name()),
        "APPROVAL_FAILURE_REASON_",
    )
}

fn challenge_states() -> Vec<String> {
    label_values(
        (1..)
            .map_while(|n| apb::ChallengeStatus::try_from(n).ok())
            .map(|status| status.as_str_name()),
        "CHALLENGE_STATUS_",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_pages_pass_promtool_and_show_every_family_from_start_up() {
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "SKIPPED metrics_promtool: promtool is not installed \
             (Debian: apt-get install prometheus; .ci/run installs it)"
        );
        return;
    }
    let cluster = Cluster::start(
        ClusterOptions::default()
            .without_proxy()
            // Checks on demand only: the one this test runs is the only one.
            .approval_env("CHECK_INTERVAL", "0s")
            .order_env("METRICS_ADDR", "127.0.0.1:0")
            .order_env("METRICS_SAMPLE_INTERVAL", "100ms"),
    )
    .await
    .expect("cluster starts");

    // Before any traffic. Every problem is listed, not just the first.
    let mut problems = Vec::new();
    let (order_page, order_findings) = scrape_and_lint(&cluster.order).await.expect("promtool");
    let (approval_page, approval_findings) =
        scrape_and_lint(&cluster.approval).await.expect("promtool");
    for (service, findings) in [
        ("order-svc", order_findings),
        ("approval-svc", approval_findings),
    ] {
        problems.extend(
            findings
                .into_iter()
                .map(|finding| format!("promtool, {service}: {finding}")),
        );
    }
    for (service, page) in [("order-svc", &order_page), ("approval-svc", &approval_page)] {
        problems.extend(
            missing_at_start_up(page, service)
                .into_iter()
                .map(|family| format!("{service}: documented family {family} missing")),
        );
    }
    let mut expected_zero: Vec<SeriesOf> = [
        "order_orders_created_total",
        "order_out_of_stock_total",
        "order_idempotent_replays_total",
    ]
    .into_iter()
    .map(|counter| (&order_page, counter, vec![]))
    .collect();
    // Per-RPC counters exist for every code before the first call.
    expected_zero.push((
        &order_page,
        "grpc_server_handled_total",
        vec![
            ("grpc_service", "lab.order.v1.OrderService".to_owned()),
            ("grpc_method", "CreateOrder".to_owned()),
            ("grpc_code", "Internal".to_owned()),
        ],
    ));
    for reason in failure_reasons() {
        expected_zero.push((
            &approval_page,
            "approval_approvals_total",
            vec![("status", "approve_failed".to_owned()), ("reason", reason)],
        ));
    }
    expected_zero.push((
        &approval_page,
        "approval_approvals_total",
        vec![("status", "approved".to_owned()), ("reason", String::new())],
    ));
    for result in ["ok", "error"] {
        expected_zero.push((
            &approval_page,
            "consistency_checks_total",
            vec![("result", result.to_owned())],
        ));
    }
    for invariant in ["I1", "I2", "I3", "I4", "I5", "I6"] {
        expected_zero.push((
            &approval_page,
            "consistency_healed_total",
            vec![("invariant", invariant.to_owned())],
        ));
    }
    // Sampled before the first scrape.
    for state in challenge_states() {
        expected_zero.push((
            &approval_page,
            "approval_challenges",
            vec![("status", state)],
        ));
    }
    for (page, name, labels) in &expected_zero {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let value = page.value(name, &labels);
        if value != Some(0.0) {
            problems.push(format!("{name}{labels:?} is {value:?} at start-up, not 0"));
        }
    }
    assert!(
        problems.is_empty(),
        "the first scrape, before any traffic:\n{}",
        problems.join("\n")
    );

    // Some traffic: one approval, one refusal for stock, one check.
    let mut order = cluster.order_client();
    let approval = cluster.approval_client();
    let reward = create_product(&mut order, "metrics", 1).await.unwrap();
    let ids = submit_challenges(&approval, &reward.product_id, 2, 1, 1, 9)
        .await
        .unwrap();
    let run = approve_all(&approval, &ids, 1, Duration::from_secs(10), None).await;
    assert_eq!(run.accepted.len(), 2, "{}", run.outcomes);
    OpsServiceClient::new(lazy_channel(&cluster.approval.url()))
        .run_consistency_check(apb::RunConsistencyCheckRequest::default())
        .await
        .expect("a check on demand");
    // The stock gauge is sampled every 100 ms: wait for a sample taken after the order.
    let stock_of_reward = [("product_id", reward.product_id.as_str())];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (order_page, order_findings) = loop {
        let scraped = scrape_and_lint(&cluster.order).await.expect("promtool");
        if scraped.0.value("order_product_stock", &stock_of_reward) == Some(0.0)
            || tokio::time::Instant::now() > deadline
        {
            break scraped;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (approval_page, approval_findings) =
        scrape_and_lint(&cluster.approval).await.expect("promtool");
    assert_eq!(
        order_findings,
        Vec::<String>::new(),
        "promtool on order-svc's page after traffic"
    );
    assert_eq!(
        approval_findings,
        Vec::<String>::new(),
        "promtool on approval-svc's page after traffic"
    );
    assert_eq!(
        order_page.value("order_orders_created_total", &[]),
        Some(1.0)
    );
    assert_eq!(order_page.value("order_out_of_stock_total", &[]), Some(1.0));
    assert_eq!(
        order_page.value("order_product_stock", &stock_of_reward),
        Some(0.0)
    );
    assert_eq!(
        approval_page.sum_where("approval_approvals_total", "status", "approved"),
        1.0
    );
    assert_eq!(
        approval_page.sum_where("approval_approvals_total", "reason", "OUT_OF_STOCK"),
        1.0
    );
    assert_eq!(
        approval_page.sum_where("consistency_checks_total", "result", "ok"),
        1.0
    );
    assert!(approval_page.sum("consistency_last_check_timestamp_seconds") > 0.0);
}
