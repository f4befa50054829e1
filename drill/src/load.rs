//! Bounded load for scenarios: products, challenges and concurrent approvals, with every
//! outcome tallied, and the one-line [`Summary`] each scenario prints.
//!
//! Every loop here is bounded by the number of ids it is given and every call by a deadline.
//! User ids are drawn from a seeded generator, so a scenario's inputs repeat run after run.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lab_proto::approval::v1 as approval_pb;
use lab_proto::approval::v1::approval_service_client::ApprovalServiceClient;
use lab_proto::order::v1 as order_pb;
use lab_proto::order::v1::order_service_client::OrderServiceClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::metrics::ResilienceCounts;
use crate::proxy::ProxyStats;
use crate::tally::LiveTally;

/// Counts of outcomes by label, e.g. `APPROVED`, `APPROVE_FAILED/OUT_OF_STOCK`,
/// `error/UNAVAILABLE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcomes {
    counts: BTreeMap<String, u64>,
}

impl Outcomes {
    /// Counts one answer to a challenge RPC.
    pub fn record(&mut self, result: &Result<approval_pb::Challenge, tonic::Status>) {
        self.add(&outcome_label(result), 1);
    }

    /// Adds `n` to a label.
    pub fn add(&mut self, label: &str, n: u64) {
        *self.counts.entry(label.to_owned()).or_default() += n;
    }

    /// The count of one label.
    pub fn get(&self, label: &str) -> u64 {
        self.counts.get(label).copied().unwrap_or(0)
    }

    /// The sum over the labels starting with `prefix` (e.g. `error/`, `APPROVE_FAILED`).
    pub fn starting_with(&self, prefix: &str) -> u64 {
        self.counts
            .iter()
            .filter(|(label, _)| label.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Approvals that failed for the caller: every error status, and every APPROVE_FAILED
    /// except OUT_OF_STOCK (a business answer, not a failure of the system).
    pub fn failed_approvals(&self) -> u64 {
        self.starting_with("error/") + self.starting_with("APPROVE_FAILED/")
            - self.get("APPROVE_FAILED/OUT_OF_STOCK")
    }

    /// The sum of all counts.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (label, n) in &other.counts {
            self.add(label, *n);
        }
    }

    /// Labels and counts.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counts.iter().map(|(label, n)| (label.as_str(), *n))
    }
}

impl fmt::Display for Outcomes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(label, n)| format!("{label}={n}"))
            .collect();
        write!(f, "{{{}}}", parts.join(" "))
    }
}

/// The label of one answer: the challenge's status (with the failure reason when failed), or
/// `error/<CODE>` (with the `ErrorInfo` reason when there is one).
pub fn outcome_label(result: &Result<approval_pb::Challenge, tonic::Status>) -> String {
    match result {
        Ok(challenge) => challenge_label(challenge),
        Err(status) => match lab_common::status::reason(status) {
            Some(reason) => format!("error/{}/{reason}", code_name(status.code())),
            None => format!("error/{}", code_name(status.code())),
        },
    }
}

/// `APPROVED`, `APPROVE_FAILED/OUT_OF_STOCK`, … for a challenge.
pub fn challenge_label(challenge: &approval_pb::Challenge) -> String {
    let status = approval_pb::ChallengeStatus::try_from(challenge.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("CHALLENGE_STATUS_")
                .to_owned()
        })
        .unwrap_or_else(|_| format!("STATUS_{}", challenge.status));
    if challenge.status == approval_pb::ChallengeStatus::ApproveFailed as i32 {
        let reason = approval_pb::ApprovalFailureReason::try_from(challenge.failure_reason)
            .map(|r| {
                r.as_str_name()
                    .trim_start_matches("APPROVAL_FAILURE_REASON_")
                    .to_owned()
            })
            .unwrap_or_default();
        format!("{status}/{reason}")
    } else {
        status
    }
}

/// UPPER_SNAKE name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Creates a product with `stock` units.
pub async fn create_product(
    order: &mut OrderServiceClient<Channel>,
    name: &str,
    stock: i64,
) -> Result<order_pb::Product, tonic::Status> {
    order
        .create_product(order_pb::CreateProductRequest {
            name: name.to_owned(),
            initial_stock: stock,
            max_per_customer: 0,
        })
        .await?
        .into_inner()
        .product
        .ok_or_else(|| tonic::Status::internal("CreateProduct answered without a product"))
}

/// Reads a product.
pub async fn product(
    order: &mut OrderServiceClient<Channel>,
    product_id: &str,
) -> Result<order_pb::Product, tonic::Status> {
    order
        .get_product(order_pb::GetProductRequest {
            product_id: product_id.to_owned(),
        })
        .await?
        .into_inner()
        .product
        .ok_or_else(|| tonic::Status::internal("GetProduct answered without a product"))
}

/// Submits `count` challenges for `quantity` of `product_id`, `concurrency` at a time, with
/// user ids drawn from `seed`; returns their ids in submission order.
pub async fn submit_challenges(
    approval: &ApprovalServiceClient<Channel>,
    product_id: &str,
    count: usize,
    quantity: i32,
    concurrency: usize,
    seed: u64,
) -> Result<Vec<String>, tonic::Status> {
    let mut rng = StdRng::seed_from_u64(seed);
    let users: Vec<uuid::Uuid> = (0..count)
        .map(|_| uuid::Builder::from_random_bytes(rng.random()).into_uuid())
        .collect();
    let results: Vec<Result<String, tonic::Status>> =
        futures::stream::iter(users.into_iter().enumerate())
            .map(|(n, user)| {
                let mut client = approval.clone();
                let product_id = product_id.to_owned();
                async move {
                    let mut request = tonic::Request::new(approval_pb::SubmitChallengeRequest {
                        user_id: user.to_string(),
                        product_id,
                        quantity,
                        title: format!("challenge {n}"),
                    });
                    request.set_timeout(Duration::from_secs(10));
                    let response = client.submit_challenge(request).await?.into_inner();
                    response.challenge.map(|c| c.challenge_id).ok_or_else(|| {
                        tonic::Status::internal("SubmitChallenge answered without a challenge")
                    })
                }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
    results.into_iter().collect()
}

/// What [`approve_all`] saw.
#[derive(Debug, Clone, Default)]
pub struct ApproveRun {
    /// Answers by outcome label.
    pub outcomes: Outcomes,
    /// Challenges whose ApproveChallenge answered OK (accepted approvals, for I6).
    pub accepted: Vec<String>,
    /// Challenges whose ApproveChallenge failed with an error status.
    pub errored: Vec<String>,
    /// Latency of every call, in completion order.
    pub latencies: Vec<Duration>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl ApproveRun {
    /// The `q`-quantile (0.0–1.0) of the latencies.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let at = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        sorted[at]
    }

    /// The slowest call.
    pub fn max_latency(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }
}

/// Calls ApproveChallenge once per id, `concurrency` at a time, each with `deadline` as its
/// `grpc-timeout` (enforced here too, plus 1 s of slack, so a hung call cannot stall the run).
/// `watch`, when given, sees every answer as it comes (for fault timing and sampling).
pub async fn approve_all(
    approval: &ApprovalServiceClient<Channel>,
    ids: &[String],
    concurrency: usize,
    deadline: Duration,
    watch: Option<Watch>,
) -> ApproveRun {
    let started = Instant::now();
    let results: Vec<Timed> = futures::stream::iter(ids.iter().cloned())
        .map(|id| timed_approval(approval.clone(), id, deadline, watch.clone()))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    tally(results, started.elapsed())
}

/// Like [`approve_all`], but paced: one call every `1 / per_second` seconds (at most
/// `max_in_flight` at once), the way traffic keeps arriving whatever the service is going
/// through — so a fault in the middle of a run meets the calls that arrive during it.
pub async fn approve_paced(
    approval: &ApprovalServiceClient<Channel>,
    ids: &[String],
    per_second: f64,
    max_in_flight: usize,
    deadline: Duration,
    watch: Option<Watch>,
) -> ApproveRun {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(0.001)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let mut calls = tokio::task::JoinSet::new();
    for id in ids.iter().cloned() {
        ticker.tick().await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let call = timed_approval(approval.clone(), id, deadline, watch.clone());
        calls.spawn(async move {
            let result = call.await;
            drop(slot);
            result
        });
    }
    let mut results = Vec::with_capacity(ids.len());
    while let Some(joined) = calls.join_next().await {
        if let Ok(result) = joined {
            results.push(result);
        }
    }
    tally(results, started.elapsed())
}

/// One call's id, answer and latency.
type Timed = (
    String,
    Result<approval_pb::Challenge, tonic::Status>,
    Duration,
);

async fn timed_approval(
    client: ApprovalServiceClient<Channel>,
    id: String,
    deadline: Duration,
    watch: Option<Watch>,
) -> Timed {
    let began = Instant::now();
    let result = approve_one(client, &id, "admin", deadline).await;
    let latency = began.elapsed();
    if let Some(watch) = watch {
        watch.saw(&result, latency);
    }
    (id, result, latency)
}

/// Who sees a run's answers as they come: counters of answers (fault timelines wait on them)
/// and the drill's live tally (its sampler plots it). Clones share everything.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    /// Answers so far.
    pub answered: Arc<AtomicU64>,
    /// A second counter (e.g. the answers of one instance, next to every answer's).
    pub also: Option<Arc<AtomicU64>>,
    /// Where each answer is recorded by outcome label and latency.
    pub tally: Option<LiveTally>,
}

impl Watch {
    /// A watch that only counts, on `answered`.
    pub fn counting(answered: Arc<AtomicU64>) -> Self {
        Self {
            answered,
            ..Self::default()
        }
    }

    /// Records one answer.
    pub fn saw(&self, result: &Result<approval_pb::Challenge, tonic::Status>, latency: Duration) {
        if let Some(tally) = &self.tally {
            tally.record(&outcome_label(result), latency);
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
        if let Some(also) = &self.also {
            also.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn tally(results: Vec<Timed>, elapsed: Duration) -> ApproveRun {
    let mut run = ApproveRun::default();
    for (id, result, latency) in results {
        run.outcomes.record(&result);
        run.latencies.push(latency);
        match result {
            Ok(_) => run.accepted.push(id),
            Err(_) => run.errored.push(id),
        }
    }
    run.elapsed = elapsed;
    run
}

/// One ApproveChallenge with `deadline` as `grpc-timeout` (and a local bound of deadline + 1 s).
pub async fn approve_one(
    mut client: ApprovalServiceClient<Channel>,
    challenge_id: &str,
    approver: &str,
    deadline: Duration,
) -> Result<approval_pb::Challenge, tonic::Status> {
    let mut request = tonic::Request::new(approval_pb::ApproveChallengeRequest {
        challenge_id: challenge_id.to_owned(),
        approver: approver.to_owned(),
    });
    request.set_timeout(deadline);
    let call = async {
        client
            .approve_challenge(request)
            .await?
            .into_inner()
            .challenge
            .ok_or_else(|| tonic::Status::internal("ApproveChallenge answered without a challenge"))
    };
    match tokio::time::timeout(deadline + Duration::from_secs(1), call).await {
        Ok(result) => result,
        Err(_) => Err(tonic::Status::deadline_exceeded(
            "no answer within the deadline (client side)",
        )),
    }
}

/// Reads one challenge.
pub async fn challenge(
    approval: &mut ApprovalServiceClient<Channel>,
    challenge_id: &str,
) -> Result<approval_pb::Challenge, tonic::Status> {
    approval
        .get_challenge(approval_pb::GetChallengeRequest {
            challenge_id: challenge_id.to_owned(),
        })
        .await?
        .into_inner()
        .challenge
        .ok_or_else(|| tonic::Status::internal("GetChallenge answered without a challenge"))
}

/// Reads every challenge (paging through ListChallenges), oldest first.
pub async fn list_challenges(
    approval: &mut ApprovalServiceClient<Channel>,
) -> Result<Vec<approval_pb::Challenge>, tonic::Status> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = approval
            .list_challenges(approval_pb::ListChallengesRequest {
                status: approval_pb::ChallengeStatus::Unspecified as i32,
                page_size: 500,
                page_token,
            })
            .await?
            .into_inner();
        all.extend(page.challenges);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// Requeues every dead letter (paging through ListDeadLetters); returns how many.
pub async fn requeue_dead_letters(
    approval: &mut ApprovalServiceClient<Channel>,
) -> Result<usize, tonic::Status> {
    let ids = dead_letters(approval).await?;
    for id in &ids {
        approval
            .requeue_dead_letter(approval_pb::RequeueDeadLetterRequest {
                challenge_id: id.clone(),
            })
            .await?;
    }
    Ok(ids.len())
}

/// The ids of every dead-lettered challenge (paging through ListDeadLetters).
pub async fn dead_letters(
    approval: &mut ApprovalServiceClient<Channel>,
) -> Result<Vec<String>, tonic::Status> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = approval
            .list_dead_letters(approval_pb::ListDeadLettersRequest {
                page_size: 500,
                page_token,
            })
            .await?
            .into_inner();
        ids.extend(page.challenges.into_iter().map(|c| c.challenge_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(ids)
}

/// Waits (polling every 20 ms, at most `timeout`) until `progress` reaches `target`.
pub async fn wait_for_progress(progress: &AtomicU64, target: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while progress.load(Ordering::Relaxed) < target {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The one-line summary a scenario prints: requests, outcomes, retries, breaker transitions,
/// proxy counters, elapsed time, plus scenario-specific figures.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Client requests made by the scenario (approvals, revokes, …).
    pub requests: u64,
    /// Their outcomes.
    pub outcomes: Outcomes,
    /// approval-svc's resilience counters.
    pub resilience: Option<ResilienceCounts>,
    /// The proxy's counters.
    pub proxy: Option<ProxyStats>,
    /// Scenario-specific figures, in order.
    pub figures: Vec<(String, String)>,
    /// Wall time of the scenario.
    pub elapsed: Duration,
}

impl Summary {
    /// A summary for `scenario`.
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            ..Self::default()
        }
    }

    /// Adds a scenario-specific figure.
    pub fn figure(&mut self, name: &str, value: impl fmt::Display) -> &mut Self {
        self.figures.push((name.to_owned(), value.to_string()));
        self
    }

    /// Writes the line to the process's stderr directly, so `cargo test` shows it even for a
    /// passing test (its output capture only intercepts the print macros).
    pub fn print(&self) {
        let _ = writeln!(std::io::stderr(), "{self}");
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SUMMARY {}: requests={} outcomes={}",
            self.scenario, self.requests, self.outcomes
        )?;
        if let Some(r) = &self.resilience {
            write!(
                f,
                " order_calls={} attempts={} retries={} budget_refused={} breaker(open={} half_open={} closed={} rejected={})",
                r.calls,
                r.attempts,
                r.retries,
                r.budget_exhausted,
                r.breaker_opened,
                r.breaker_half_opened,
                r.breaker_closed,
                r.breaker_rejections
            )?;
        }
        if let Some(p) = &self.proxy {
            write!(
                f,
                " proxy(requests={} conns={} upstream_failures={} reset={} cut={} lost={} unavailable={}/{}retries)",
                p.requests,
                p.connections_accepted,
                p.upstream_connect_failures,
                p.connections_reset,
                p.connections_cut,
                p.responses_lost,
                p.unavailable_answers,
                p.unavailable_retries
            )?;
        }
        for (name, value) in &self.figures {
            write!(f, " {name}={value}")?;
        }
        write!(f, " elapsed={:.2}s", self.elapsed.as_secs_f64())
    }
}
