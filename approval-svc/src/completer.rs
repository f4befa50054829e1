//! The completer: a background task in every instance that finishes what requests left
//! behind, sharing the work with the other instances through `FOR UPDATE SKIP LOCKED` leases.
//!
//! Each round claims due challenges in one short statement (see
//! [`crate::repository::completer::claim_due`]), then drives each claimed one outside any
//! transaction, exactly as a request would: APPROVING (lease expired) and due retries through the
//! approval's phases 2–3 with the challenge's own key, REVOKING through the cancel. A full batch
//! starts the next round at once; otherwise the task sleeps one period. What it finishes is
//! recorded in the audit trail as `system` (see [`crate::audit`]).
//!
//! While the circuit breaker towards order-svc is not closed, a round claims (and so drives) no
//! more challenges than the breaker's half-open probes ([`RoundLimit`]): the others could only
//! be refused with CIRCUIT_OPEN. Due retries wait altogether while the breaker is open.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lab_common::shutdown::Shutdown;
use tracing::Instrument;

use crate::audit::{Action, Asked};
use crate::domain::{Challenge, Status};
use crate::repository::completer::claim_due;
use crate::saga::Saga;

/// What the next round may claim, as the circuit breaker towards order-svc allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundLimit {
    /// Whether due retries are claimed (not while the breaker is open: they would only be
    /// refused).
    pub include_retries: bool,
    /// The most challenges the round may claim; `None`: the configured batch.
    pub max_claims: Option<u32>,
}

impl RoundLimit {
    /// No limit beyond the configured batch.
    pub const NONE: Self = Self {
        include_retries: true,
        max_claims: None,
    };
}

/// Asked before every round for its [`RoundLimit`].
pub type RoundGate = Arc<dyn Fn() -> RoundLimit + Send + Sync>;

/// Completer settings.
#[derive(Clone)]
pub struct CompleterSettings {
    /// Pause between rounds that found less than a full batch.
    pub period: Duration,
    /// Challenges claimed per round.
    pub batch: u32,
    /// Claimed challenges driven at once.
    pub concurrency: usize,
    /// What each round may claim (e.g. from the circuit breaker's state).
    pub gate: RoundGate,
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

/// Runs rounds until `shutdown` is triggered; the round in progress is finished first, so no
/// claimed challenge is abandoned mid-call (its lease would cover it anyway).
pub async fn run(saga: Arc<Saga>, settings: CompleterSettings, shutdown: Shutdown) {
    tracing::info!(period = ?settings.period, batch = settings.batch, "completer started");
    loop {
        let claimed = round(&saga, &settings).await;
        // A full batch suggests more is due: go again at once, unless stopping.
        if claimed < settings.batch as usize {
            tokio::select! {
                () = shutdown.triggered() => break,
                () = tokio::time::sleep(settings.period) => {}
            }
        } else if shutdown.is_triggered() {
            break;
        }
    }
    tracing::info!("completer stopped");
}

/// One round: claim, then drive every claimed challenge. Returns how many were claimed.
pub async fn round(saga: &Saga, settings: &CompleterSettings) -> usize {
    let limit = (settings.gate)();
    let batch = limit
        .max_claims
        .map_or(settings.batch, |most| most.min(settings.batch));
    if batch == 0 {
        return 0;
    }
    let lease = saga.settings().lease;
    let claimed = match claim_due(saga.pool(), i64::from(batch), lease, limit.include_retries).await
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
            Status::Revoking => {
                let completed_by = Asked::system(Action::CompleteRevoke, "");
                saga.drive_revoke(challenge, None, Some(&completed_by))
                    .await
            }
            _ => {
                let asked = Asked::system(Action::CompleteApproval, "");
                saga.drive_approval(challenge, None, asked).await
            }
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
