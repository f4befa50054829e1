//! The completer: a background task in every instance that finishes what requests left
//! behind, sharing the work with the other instances through `FOR UPDATE SKIP LOCKED` leases.
//!
//! Each round claims due challenges in one short statement (see
//! [`crate::repository::completer::claim_due`]), then drives each claimed one outside any
//! transaction, exactly as a request would: APPROVING (lease expired) and due retries through the
//! approval's phases 2–3 with the challenge's own key, REVOKING through the cancel. A full batch
//! starts the next round at once; otherwise the task sleeps one period.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::{Challenge, Status};
use crate::repository::completer::claim_due;
use crate::saga::Saga;

/// Tells whether automatic retries should wait (e.g. while the circuit breaker is open, when
/// they would only burn attempts on CIRCUIT_OPEN).
pub type RetryGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// Completer settings.
#[derive(Clone)]
pub struct CompleterSettings {
    /// Pause between rounds that found less than a full batch.
    pub period: Duration,
    /// Challenges claimed per round.
    pub batch: u32,
    /// Claimed challenges driven at once.
    pub concurrency: usize,
    /// When it returns true, due retries are left for a later round.
    pub pause_retries: RetryGate,
}

impl std::fmt::Debug for CompleterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompleterSettings")
            .field("period", &self.period)
            .field("batch", &self.batch)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Runs rounds until `shutdown` is cancelled; the round in progress is finished first, so no
/// claimed challenge is abandoned mid-call (its lease would cover it anyway).
pub async fn run(saga: Arc<Saga>, settings: CompleterSettings, shutdown: CancellationToken) {
    tracing::info!(period = ?settings.period, batch = settings.batch, "completer started");
    loop {
        let claimed = round(&saga, &settings).await;
        // A full batch suggests more is due: go again at once, unless stopping.
        if claimed < settings.batch as usize {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(settings.period) => {}
            }
        } else if shutdown.is_cancelled() {
            break;
        }
    }
    tracing::info!("completer stopped");
}

/// One round: claim, then drive every claimed challenge. Returns how many were claimed.
pub async fn round(saga: &Saga, settings: &CompleterSettings) -> usize {
    let include_retries = !(settings.pause_retries)();
    let lease = saga.settings().lease;
    let claimed = match claim_due(
        saga.pool(),
        i64::from(settings.batch),
        lease,
        include_retries,
    )
    .await
    {
        Ok(claimed) => claimed,
        Err(error) => {
            tracing::warn!(%error, "completer claim failed");
            return 0;
        }
    };
    let count = claimed.len();
    let revokes = claimed
        .iter()
        .filter(|challenge| challenge.status() == Status::Revoking)
        .count();
    crate::metrics::completer_round(count - revokes, revokes);
    if count > 0 {
        tracing::info!(count, "completer claimed challenges");
    }
    futures::stream::iter(claimed)
        .for_each_concurrent(settings.concurrency, |challenge| drive(saga, challenge))
        .await;
    count
}

async fn drive(saga: &Saga, challenge: Challenge) {
    let span = tracing::info_span!(
        "complete",
        challenge_id = %challenge.challenge_id,
        status = challenge.status().as_str(),
        attempt = challenge.attempts,
    );
    let result = async {
        match challenge.status() {
            Status::Revoking => saga.drive_revoke(challenge, None).await,
            _ => saga.drive_approval(challenge, None).await,
        }
    }
    .instrument(span.clone())
    .await;
    let _entered = span.enter();
    match result {
        Ok(done) => tracing::info!(status = done.status().as_str(), "completer drove challenge"),
        Err(error) => tracing::warn!(%error, "completer could not drive challenge"),
    }
}
