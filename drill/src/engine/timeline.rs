//! The load and the fault timeline, run side by side: each step waits for its moment
//! ([`At`]), then applies its action to the [`Drill`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::load::{ApproveRun, Watch, approve_all, approve_paced};

use super::drill::merge;
use super::scenario::{At, Pacing, Scenario, Step, Workload};
use super::{Drill, DrillError};

/// How long a step may wait for a number of answers.
const ANSWERS_TIMEOUT: Duration = Duration::from_secs(120);

/// When the load ended and what it had accepted by then.
#[derive(Debug, Clone)]
struct LoadEnd {
    at: Instant,
    accepted: Arc<Vec<String>>,
}

/// Runs the workload and the timeline together; the first pass's answers end up in
/// `drill.run`.
pub(super) async fn drive(drill: &mut Drill, scenario: &Scenario) -> Result<(), DrillError> {
    if let Pacing::Custom(hook) = &scenario.workload.pacing {
        hook.call(drill).await?;
        let (done, ended) = watch::channel(Some(LoadEnd {
            at: Instant::now(),
            accepted: Arc::new(drill.accepted_so_far.clone()),
        }));
        let result = run_timeline(drill, &scenario.timeline, ended).await;
        drop(done);
        return result;
    }
    let calls = load_calls(drill, &scenario.workload);
    let (done, ended) = watch::channel(None);
    let load = async {
        let run = calls.await;
        let _ = done.send(Some(LoadEnd {
            at: Instant::now(),
            accepted: Arc::new(run.accepted.clone()),
        }));
        run
    };
    let (run, timeline) = tokio::join!(load, run_timeline(drill, &scenario.timeline, ended));
    drill.requests += run.latencies.len() as u64;
    drill.accepted_so_far.extend(run.accepted.iter().cloned());
    merge(&mut drill.run, &run);
    timeline
}

/// The workload's calls as one future that borrows nothing of the drill (the timeline holds
/// it meanwhile).
fn load_calls(
    drill: &Drill,
    workload: &Workload,
) -> impl std::future::Future<Output = ApproveRun> + Send + 'static {
    let clicks = workload.clicks_per_challenge.max(1);
    // Each challenge's clicks are adjacent, so with enough concurrency they are simultaneous.
    let ids: Vec<String> = drill
        .challenge_ids
        .iter()
        .flat_map(|id| std::iter::repeat_n(id.clone(), clicks))
        .collect();
    let instances = if workload.spread {
        drill.answered_via.len()
    } else {
        1
    };
    let mut parts = Vec::with_capacity(instances);
    for n in 0..instances {
        let part: Vec<String> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % instances == n)
            .map(|(_, id)| id.clone())
            .collect();
        let watch = Watch {
            also: Some(drill.answered_via[n].clone()),
            ..drill.watch.clone()
        };
        parts.push((drill.cluster.approval_client_of(n), part, watch));
    }
    let pacing = workload.pacing.clone();
    let deadline = workload.deadline;
    async move {
        let runs = join_all(parts.into_iter().map(|(client, part, watch)| {
            let pacing = pacing.clone();
            async move {
                match pacing {
                    Pacing::Concurrent { concurrency } => {
                        approve_all(&client, &part, concurrency, deadline, Some(watch)).await
                    }
                    Pacing::Paced {
                        per_second,
                        max_in_flight,
                    } => {
                        approve_paced(
                            &client,
                            &part,
                            per_second / instances as f64,
                            max_in_flight,
                            deadline,
                            Some(watch),
                        )
                        .await
                    }
                    Pacing::Custom(_) => ApproveRun::default(),
                }
            }
        }))
        .await;
        let mut all = ApproveRun::default();
        for run in &runs {
            merge(&mut all, run);
        }
        all
    }
}

async fn run_timeline(
    drill: &mut Drill,
    steps: &[Step],
    mut ended: watch::Receiver<Option<LoadEnd>>,
) -> Result<(), DrillError> {
    let mut previous = Instant::now();
    for step in steps {
        match step.at {
            At::Time(offset) => tokio::time::sleep_until(drill.load_started + offset).await,
            At::After(pause) => tokio::time::sleep_until(previous + pause).await,
            At::Answers(n) => {
                let counter = drill.watch.answered.clone();
                wait_for_answers(&counter, n, &ended, &format!("{n} answers")).await?;
            }
            At::AnswersVia { instance, n } => {
                let counter = drill.answered_via.get(instance).cloned().ok_or_else(|| {
                    DrillError::Action(format!("no approval-svc instance {instance}"))
                })?;
                let what = format!("{n} answers via approval-svc#{instance}");
                wait_for_answers(&counter, n, &ended, &what).await?;
            }
            At::LoadDone(pause) => {
                let end = ended
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|_| DrillError::Action("the load ended without a word".into()))?
                    .clone()
                    .expect("waited for it");
                drill.accepted_so_far = end.accepted.to_vec();
                tokio::time::sleep_until(end.at + pause).await;
            }
        }
        drill.apply(&step.action).await?;
        previous = Instant::now();
    }
    Ok(())
}

/// Waits until `counter` reaches `n`; fails when the load ended short of it (the step would
/// never run) or after [`ANSWERS_TIMEOUT`].
async fn wait_for_answers(
    counter: &AtomicU64,
    n: u64,
    ended: &watch::Receiver<Option<LoadEnd>>,
    what: &str,
) -> Result<(), DrillError> {
    let deadline = Instant::now() + ANSWERS_TIMEOUT;
    while counter.load(Ordering::Relaxed) < n {
        if ended.borrow().is_some() || Instant::now() >= deadline {
            return Err(DrillError::Trigger(format!(
                "the load never reached {what} ({} answered)",
                counter.load(Ordering::Relaxed)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
