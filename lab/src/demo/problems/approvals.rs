//! The approval problems: `duplicate-approval`, `empty-approval`, `lost-response` and
//! `ghost-order`. Each unsafe run is the naive approver (see [`naive::approver`]) on
//! approval-svc's database calling real order-svc through the proxy; each safe run sends the same
//! approvals to real approval-svc through the same proxy and fault.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lab_drill::cluster::Cluster;
use lab_drill::load::{self, Outcomes};
use lab_drill::proxy::Fault;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use sqlx::PgPool;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::demo::naive::approver::{self, NaiveError};
use crate::demo::setup::{self, Side};

const STOCK: i64 = 1_000;
const DEADLINE: Duration = Duration::from_secs(10);

/// A cluster, a product and `count` challenges.
async fn prepared(count: usize) -> anyhow::Result<(Cluster, Vec<String>)> {
    let cluster = setup::cluster().await?;
    let product = setup::product(&cluster, STOCK).await?;
    let ids = setup::challenges(&cluster, &product, count).await?;
    Ok((cluster, ids))
}

/// The naive approver's tools on a prepared cluster: approval-svc's database and order-svc
/// through the proxy.
#[derive(Clone)]
struct Naive {
    db: PgPool,
    shop: OrderServiceClient<Channel>,
}

/// [`prepared`], plus the naive approver's tools.
async fn prepared_naive(count: usize) -> anyhow::Result<(Cluster, Vec<String>, Naive)> {
    let (cluster, ids) = prepared(count).await?;
    let naive = Naive {
        db: setup::pool(cluster.approval.database_url(), 16).await?,
        shop: setup::shop(&cluster.proxy().url()),
    };
    Ok((cluster, ids, naive))
}

/// Runs the naive `approve(n, tools, id)` `copies` times per challenge, all at once.
async fn naive_all<F, Fut>(
    ids: &[String],
    copies: usize,
    naive: &Naive,
    approve: F,
) -> anyhow::Result<Outcomes>
where
    F: Fn(usize, Naive, String) -> Fut,
    Fut: Future<Output = Result<String, NaiveError>> + Send + 'static,
{
    all_at_once(ids, copies, |n, id| {
        let work = approve(n, naive.clone(), id);
        async move { naive_label(work.await) }
    })
    .await
}

/// Runs `task(n, id)` for every (challenge, copy) pair at once, released together by a barrier;
/// tallies what each returned.
async fn all_at_once<F, Fut>(ids: &[String], copies: usize, task: F) -> anyhow::Result<Outcomes>
where
    F: Fn(usize, String) -> Fut,
    Fut: Future<Output = String> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(ids.len() * copies));
    let mut tasks = JoinSet::new();
    for (n, id) in ids.iter().enumerate() {
        for _ in 0..copies {
            let (barrier, work) = (barrier.clone(), task(n, id.clone()));
            tasks.spawn(async move {
                barrier.wait().await;
                work.await
            });
        }
    }
    let mut outcomes = Outcomes::default();
    while let Some(joined) = tasks.join_next().await {
        outcomes.add(&joined?, 1);
    }
    Ok(outcomes)
}

/// The real path: ApproveChallenge `copies` times per challenge, all at once; returns the
/// tallied answers and the challenges some call accepted (for I6).
async fn real_approvals(
    cluster: &Cluster,
    ids: &[String],
    copies: usize,
) -> anyhow::Result<(Outcomes, Vec<String>)> {
    let client = cluster.approval_client();
    let outcomes = all_at_once(ids, copies, |n, id| {
        let client = client.clone();
        async move {
            let approver = format!("admin-{n}");
            let answer = load::approve_one(client, &id, &approver, DEADLINE).await;
            match answer {
                Ok(challenge) => format!("ok:{id}:{}", load::challenge_label(&challenge)),
                Err(status) => load::outcome_label(&Err(status)),
            }
        }
    })
    .await?;
    // Accepted ids ride in the label so one tally serves both; split them out here.
    let mut tally = Outcomes::default();
    let mut accepted = Vec::new();
    for (label, count) in outcomes.iter() {
        match label
            .strip_prefix("ok:")
            .and_then(|rest| rest.split_once(':'))
        {
            Some((id, status)) => {
                accepted.push(id.to_owned());
                tally.add(status, count);
            }
            None => tally.add(label, count),
        }
    }
    accepted.sort();
    accepted.dedup();
    Ok((tally, accepted))
}

fn naive_label(result: Result<String, NaiveError>) -> String {
    match result {
        Ok(label) => label,
        Err(NaiveError::Shop(status)) => format!("call failed/{}", load::code_name(status.code())),
        Err(NaiveError::Db(_)) => "error/database".to_owned(),
    }
}

async fn side(
    cluster: &Cluster,
    mut happened: Vec<String>,
    settle: Duration,
    accepted: Vec<String>,
) -> anyhow::Result<Side> {
    happened.push(setup::proxy_line(cluster));
    let report = setup::verdict(cluster, settle, accepted).await?;
    happened.push(format!(
        "challenges {:?}, orders {:?}",
        report.challenges_by_status, report.orders_by_status
    ));
    Ok(Side {
        happened,
        report,
        p99_ms: None,
        max_in_flight: None,
    })
}

/// `duplicate-approval`: several admins click Approve on the same challenges at once.
pub(super) mod duplicate {
    use super::*;

    const CHALLENGES: usize = 8;
    const CLICKS: usize = 6;

    fn workload() -> String {
        format!("{CLICKS} concurrent clicks on each of {CHALLENGES} challenges")
    }

    /// Naive clicks: read (PENDING for everyone), order, write APPROVED.
    pub(crate) async fn unsafe_run() -> anyhow::Result<Side> {
        let (cluster, ids, naive) = prepared_naive(CHALLENGES).await?;
        let outcomes = naive_all(&ids, CLICKS, &naive, |_, naive, id| async move {
            let order = approver::click(&naive.db, &naive.shop, &id).await?;
            Ok(match order {
                Some(_) => "ordered and approved",
                None => "saw it approved already",
            }
            .to_owned())
        })
        .await?;
        let happened = vec![workload(), setup::tally_line("clicks", &outcomes)];
        side(&cluster, happened, Duration::ZERO, Vec::new()).await
    }

    /// Real clicks: concurrent ApproveChallenge.
    pub(crate) async fn safe_run() -> anyhow::Result<Side> {
        let (cluster, ids) = prepared(CHALLENGES).await?;
        let (outcomes, accepted) = real_approvals(&cluster, &ids, CLICKS).await?;
        let happened = vec![workload(), setup::tally_line("clicks", &outcomes)];
        side(&cluster, happened, Duration::from_secs(15), accepted).await
    }
}

/// `empty-approval`: approving while order-svc cannot be reached.
pub(super) mod empty {
    use super::*;

    const CHALLENGES: usize = 8;

    fn workload() -> String {
        format!("{CHALLENGES} approvals while the proxy answers every order call UNAVAILABLE")
    }

    /// Naive: APPROVED first, then the call; a failed call leaves it APPROVED.
    pub(crate) async fn unsafe_run() -> anyhow::Result<Side> {
        let (cluster, ids, naive) = prepared_naive(CHALLENGES).await?;
        approver::drop_order_backstop(&naive.db).await?;
        cluster
            .proxy()
            .handle()
            .set_fault(Fault::Unavailable { pushback: None });
        let outcomes = naive_all(&ids, 1, &naive, |_, naive, id| async move {
            let challenge = approver::read(&naive.db, &id).await?;
            let key = setup::fresh_key();
            approver::mark_approved_first(&naive.db, &challenge, &key).await?;
            let order = approver::order(&naive.shop, &challenge, &key, Some(DEADLINE)).await?;
            approver::record_approved(&naive.db, &challenge, &order).await?;
            Ok("approved with its order".to_owned())
        })
        .await?;
        let happened = vec![
            workload(),
            "naive schema: the order_iff_approved constraint is dropped".to_owned(),
            setup::tally_line("approvals", &outcomes),
        ];
        side(&cluster, happened, Duration::ZERO, Vec::new()).await
    }

    /// Real approval-svc with the same failing order-svc.
    pub(crate) async fn safe_run() -> anyhow::Result<Side> {
        let (cluster, ids) = prepared(CHALLENGES).await?;
        cluster
            .proxy()
            .handle()
            .set_fault(Fault::Unavailable { pushback: None });
        let (outcomes, accepted) = real_approvals(&cluster, &ids, 1).await?;
        let happened = vec![workload(), setup::tally_line("approvals", &outcomes)];
        side(&cluster, happened, Duration::ZERO, accepted).await
    }
}

/// `lost-response`: the order is created but its reply is lost, and the caller retries.
pub(super) mod lost {
    use super::*;

    const CHALLENGES: usize = 8;
    const ATTEMPTS: usize = 6;
    const LOSS: f64 = 0.5;

    fn workload() -> String {
        format!("{CHALLENGES} approvals while the proxy loses half the replies, then recovers")
    }

    fn lossy(cluster: &Cluster) {
        cluster
            .proxy()
            .handle()
            .set_fault(Fault::LoseResponses { probability: LOSS });
    }

    /// Naive: retry CreateOrder with a fresh key each attempt.
    pub(crate) async fn unsafe_run() -> anyhow::Result<Side> {
        let (cluster, ids, naive) = prepared_naive(CHALLENGES).await?;
        lossy(&cluster);
        let outcomes = naive_all(&ids, 1, &naive, |_, naive, id| async move {
            let challenge = approver::read(&naive.db, &id).await?;
            let mut last = None;
            for attempt in 1..=ATTEMPTS {
                let key = setup::fresh_key();
                match approver::order(&naive.shop, &challenge, &key, Some(DEADLINE)).await {
                    Ok(order) => {
                        approver::record_approved(&naive.db, &challenge, &order).await?;
                        return Ok(format!("approved after {attempt} call(s)"));
                    }
                    Err(error) => last = Some(error),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(last.expect("at least one attempt"))
        })
        .await?;
        cluster.proxy().handle().clear();
        let happened = vec![workload(), setup::tally_line("approvals", &outcomes)];
        side(&cluster, happened, Duration::ZERO, Vec::new()).await
    }

    /// Real approval-svc: one key per challenge, kept for every retry.
    pub(crate) async fn safe_run() -> anyhow::Result<Side> {
        let (cluster, ids) = prepared(CHALLENGES).await?;
        lossy(&cluster);
        let (outcomes, accepted) = real_approvals(&cluster, &ids, 1).await?;
        cluster.proxy().handle().clear();
        let happened = vec![workload(), setup::tally_line("approvals", &outcomes)];
        side(&cluster, happened, Duration::from_secs(20), accepted).await
    }
}

/// `ghost-order`: the approver dies between the order call and recording the approval.
pub(super) mod ghost {
    use super::*;

    const CHALLENGES: usize = 10;

    fn workload() -> String {
        format!("{CHALLENGES} approvals; the approver dies mid-approval")
    }

    /// Naive: call first, record after; every other approver crashes in between.
    pub(crate) async fn unsafe_run() -> anyhow::Result<Side> {
        let (cluster, ids, naive) = prepared_naive(CHALLENGES).await?;
        let outcomes = naive_all(&ids, 1, &naive, |n, naive, id| async move {
            let challenge = approver::read(&naive.db, &id).await?;
            let key = setup::fresh_key();
            let order = approver::order(&naive.shop, &challenge, &key, Some(DEADLINE)).await?;
            if n % 2 == 0 {
                // The process dies here: the order exists, nothing records it.
                return Ok("crashed after the order call".to_owned());
            }
            approver::record_approved(&naive.db, &challenge, &order).await?;
            Ok("approved".to_owned())
        })
        .await?;
        let happened = vec![
            format!(
                "{workload}: every other one, after its order call",
                workload = workload()
            ),
            setup::tally_line("approvals", &outcomes),
        ];
        side(&cluster, happened, Duration::ZERO, Vec::new()).await
    }

    /// Real approval-svc, `kill -9` while its order calls are in flight, then restarted.
    pub(crate) async fn safe_run() -> anyhow::Result<Side> {
        let (mut cluster, ids) = prepared(CHALLENGES).await?;
        // Slow replies keep every call in flight when the process dies (order-svc has already
        // created the orders: only the replies wait).
        cluster.proxy().handle().set_fault(Fault::Latency {
            base: Duration::from_millis(800),
            jitter: Duration::ZERO,
        });
        let client = cluster.approval_client();
        let calls = {
            let ids = ids.clone();
            tokio::spawn(async move {
                load::approve_all(&client, &ids, ids.len(), DEADLINE, None).await
            })
        };
        tokio::time::sleep(Duration::from_millis(400)).await;
        cluster.approval.kill().await?;
        cluster.proxy().handle().clear();
        cluster.approval.restart().await?;
        let run = calls.await?;
        let happened = vec![
            format!(
                "{workload}: kill -9 approval-svc with every order call in flight, restart",
                workload = workload()
            ),
            setup::tally_line("approvals (answers before the kill)", &run.outcomes),
        ];
        side(&cluster, happened, Duration::from_secs(20), run.accepted).await
    }
}
