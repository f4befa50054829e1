//! Test-only failure points: make chosen commits fail on demand, so tests produce the crash
//! windows of the saga for real (an order exists, the challenge's final write is lost).
//!
//! Off by default. There is no flag, variable or request field that sets them: only code
//! holding the [`FailurePoints`] handle (a test, through [`crate::Application::failure_points`])
//! can.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Counters of commits still to be failed; cheap to clone, all clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct FailurePoints {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    approval_commits: AtomicU32,
    revoke_commits: AtomicU32,
}

impl FailurePoints {
    /// Makes the next `n` post-call commits of an approval fail (the order was created, the
    /// APPROVED write is lost): the ghost-order window.
    pub fn fail_next_approval_commits(&self, n: u32) {
        self.inner.approval_commits.store(n, Ordering::SeqCst);
    }

    /// Makes the next `n` final commits of a revoke fail (the order was cancelled, the REVOKED
    /// write is lost).
    pub fn fail_next_revoke_commits(&self, n: u32) {
        self.inner.revoke_commits.store(n, Ordering::SeqCst);
    }

    /// Consumes one armed approval-commit failure; true when this commit must fail.
    pub(crate) fn take_approval_commit(&self) -> bool {
        take(&self.inner.approval_commits)
    }

    /// Consumes one armed revoke-commit failure; true when this commit must fail.
    pub(crate) fn take_revoke_commit(&self) -> bool {
        take(&self.inner.revoke_commits)
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_exactly_as_often_as_armed() {
        let points = FailurePoints::default();
        assert!(!points.take_approval_commit());
        points.fail_next_approval_commits(2);
        let clone = points.clone();
        assert!(clone.take_approval_commit());
        assert!(points.take_approval_commit());
        assert!(!points.take_approval_commit());
        assert!(!points.take_revoke_commit());
    }
}
