//! `no-circuit-breaker`: approvals keep arriving at a fixed rate while order-svc is slow.
//! Unsafe: the naive approver calls with no deadline, no per-try timeout and no breaker, so
//! calls pile up; safe: real approval-svc fails them fast (deadline, then an open breaker).

use std::sync::Arc;
use std::time::Duration;

use lab_drill::load::{self, Outcomes};
use lab_drill::proxy::Fault;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::demo::naive::approver;
use crate::demo::setup::{self, InFlight, Side};

const RATE_PER_S: u64 = 40;
const SEND_FOR: Duration = Duration::from_secs(3);
/// How slow order-svc's replies are while the demo runs.
const SLOW: Duration = Duration::from_secs(6);
/// How long past the last send the demo watches calls still in flight: the bound that stands in
/// for "without bound". (The proxy keeps reply bytes in order, so replies queue behind each
/// other and the naive calls' waits keep growing, as behind a saturated server.) Calls it stops
/// watching have already reached order-svc, so their orders stay unrecorded (I4): a side effect
/// the table shows as such.
const WATCH_AFTER: Duration = Duration::from_secs(6);
const STOCK: i64 = 1_000;

fn calls() -> usize {
    (RATE_PER_S * SEND_FOR.as_secs()) as usize
}

fn workload() -> String {
    format!(
        "{RATE_PER_S} approvals/s for {}s while order-svc's replies take {}s",
        SEND_FOR.as_secs(),
        SLOW.as_secs()
    )
}

/// Sends one `call(id)` every `1 / RATE_PER_S`, counting calls in flight; each returns its
/// label and is timed until it returns or the demo stops watching.
async fn paced<F, Fut>(ids: &[String], call: F) -> anyhow::Result<(Outcomes, Vec<Duration>, u64)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    let gauge = Arc::new(InFlight::default());
    let mut ticker = tokio::time::interval(Duration::from_millis(1000 / RATE_PER_S));
    let watch_until = Instant::now() + SEND_FOR + WATCH_AFTER;
    let mut tasks = JoinSet::new();
    for id in ids {
        ticker.tick().await;
        let (guard, work) = (gauge.enter(), call(id.clone()));
        tasks.spawn(async move {
            let began = Instant::now();
            let label = tokio::time::timeout_at(watch_until, work)
                .await
                .unwrap_or_else(|_| "still waiting when the demo stopped".to_owned());
            drop(guard);
            (label, began.elapsed())
        });
    }
    let mut outcomes = Outcomes::default();
    let mut latencies = Vec::with_capacity(ids.len());
    while let Some(joined) = tasks.join_next().await {
        let (label, latency) = joined?;
        outcomes.add(&label, 1);
        latencies.push(latency);
    }
    Ok((outcomes, latencies, gauge.max()))
}

async fn run(naive: bool) -> anyhow::Result<Side> {
    let cluster = setup::cluster().await?;
    let product = setup::product(&cluster, STOCK).await?;
    let ids = setup::challenges(&cluster, &product, calls()).await?;
    cluster.proxy().handle().set_fault(Fault::Latency {
        base: SLOW,
        jitter: Duration::ZERO,
    });
    let (outcomes, latencies, max_in_flight) = if naive {
        let db = setup::pool(cluster.approval.database_url(), 16).await?;
        let shop = setup::shop(&cluster.proxy().url());
        paced(&ids, |id| {
            let (db, shop) = (db.clone(), shop.clone());
            async move {
                let result = async {
                    let challenge = approver::read(&db, &id).await?;
                    let order =
                        approver::order(&shop, &challenge, &setup::fresh_key(), None).await?;
                    approver::record_approved(&db, &challenge, &order).await
                }
                .await;
                match result {
                    Ok(()) => "APPROVED".to_owned(),
                    Err(error) => format!("failed: {error}"),
                }
            }
        })
        .await?
    } else {
        let client = cluster.approval_client();
        paced(&ids, |id| {
            let client = client.clone();
            async move {
                let answer = load::approve_one(client, &id, "admin", Duration::from_secs(30)).await;
                load::outcome_label(&answer)
            }
        })
        .await?
    };
    cluster.proxy().handle().clear();
    let p99_ms = setup::p99_ms(&latencies);
    let max_ms = latencies
        .iter()
        .max()
        .copied()
        .unwrap_or_default()
        .as_millis();
    // Once order-svc is fast again, the completer rolls the failed approvals forward with their
    // keys (replaying the orders the slow calls did create); the naive runs have nothing to wait
    // for.
    let settle = if naive {
        Duration::ZERO
    } else {
        Duration::from_secs(20)
    };
    let report = setup::verdict(&cluster, settle, Vec::new()).await?;
    Ok(Side {
        happened: vec![
            workload(),
            setup::tally_line("approvals", &outcomes),
            format!("p99 {p99_ms:.0} ms, slowest {max_ms} ms, at most {max_in_flight} in flight"),
        ],
        report,
        p99_ms: Some(p99_ms),
        max_in_flight: Some(max_in_flight),
    })
}

/// The naive run: no deadline, no per-try timeout, no breaker.
pub(super) async fn unsafe_run() -> anyhow::Result<Side> {
    run(true).await
}

/// The real run: approval-svc's resilience stack.
pub(super) async fn safe_run() -> anyhow::Result<Side> {
    run(false).await
}
