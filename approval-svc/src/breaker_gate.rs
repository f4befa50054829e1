//! Limits the completer's rounds while the circuit breaker towards order-svc is not closed.
//!
//! A retry during an open period would fail at once with CIRCUIT_OPEN, so retries wait until the
//! period ends; and while the breaker is open or half-open a round claims no more challenges
//! than its half-open probes, since every call beyond them is refused (such a refusal is not
//! charged to a challenge's budget, but it is wasted work and a wasted lease). The breaker
//! reads `Open` until a call arrives after its period (that call becomes the half-open probe),
//! so the gate cannot wait for `state() != Open`: it asks the breaker when the period ends
//! ([`BreakerHandle::open_until`]) and lets retries through from then on.

use resilience::{BreakerHandle, BreakerState};
use tokio::time::Instant;

use crate::completer::RoundLimit;

/// Tells the completer whether due retries should wait.
#[derive(Debug, Clone)]
pub struct BreakerGate {
    breaker: BreakerHandle,
}

impl BreakerGate {
    /// Follows `breaker`.
    pub fn new(breaker: BreakerHandle) -> Self {
        Self { breaker }
    }

    /// What the completer's next round may claim: everything while the breaker is closed;
    /// otherwise at most its half-open probes, and no due retry while it is open (forced, or
    /// its period has not ended).
    pub fn round_limit(&self) -> RoundLimit {
        if self.breaker.state() == BreakerState::Closed {
            return RoundLimit::NONE;
        }
        RoundLimit {
            include_retries: !self.retries_paused(),
            max_claims: Some(self.breaker.half_open_probes()),
        }
    }

    /// True while the breaker is forced open, or open and its period has not ended.
    pub fn retries_paused(&self) -> bool {
        match self.breaker.state() {
            BreakerState::ForcedOpen => true,
            BreakerState::Open => self
                .breaker
                .open_until()
                .is_some_and(|until| Instant::now() < until),
            BreakerState::Closed | BreakerState::HalfOpen => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response};
    use resilience::breaker::CircuitBreakerLayer;
    use resilience::{BoxError, BreakerConfig};
    use tonic::body::Body;
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    const PERIOD: Duration = Duration::from_secs(2);

    /// A breaker that opens for exactly [`PERIOD`] after one failure, and the service it
    /// guards: a call to `/fail` fails server-side, any other succeeds.
    fn breaker() -> (
        BreakerHandle,
        impl Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    ) {
        let config = BreakerConfig {
            consecutive_failures: 1,
            failure_rate: None,
            open_base: PERIOD,
            open_cap: PERIOD,
            open_jitter: 0.0,
            half_open_probes: 2,
            ..BreakerConfig::default()
        };
        let layer = CircuitBreakerLayer::new(&config);
        let service = layer.layer(tower::service_fn(|req: Request<Body>| async move {
            if req.uri().path() == "/fail" {
                Err::<Response<Body>, BoxError>(Box::new(tonic::Status::unavailable("down")))
            } else {
                Ok(Response::new(Body::empty()))
            }
        }));
        (layer.handle(), service)
    }

    /// One call through `service`; false when the breaker refused it.
    async fn admitted<S>(service: &mut S, fail: bool) -> bool
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    {
        let path = if fail { "/fail" } else { "/ok" };
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let result = service.ready().await.unwrap().call(request).await;
        !matches!(result, Err(error) if resilience::errors::status_of(&error)
            .is_some_and(resilience::errors::is_circuit_open))
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_breaker_limits_nothing() {
        let (handle, _service) = breaker();
        let gate = BreakerGate::new(handle);
        assert_eq!(gate.round_limit(), RoundLimit::NONE);
        assert!(!gate.retries_paused());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_for_the_end_of_the_open_period_then_only_probes_are_claimed() {
        let (handle, mut service) = breaker();
        let gate = BreakerGate::new(handle.clone());
        assert!(
            admitted(&mut service, true).await,
            "the first call is admitted and fails"
        );
        assert_eq!(handle.state(), BreakerState::Open);
        let paused = RoundLimit {
            include_retries: false,
            max_claims: Some(2),
        };
        assert_eq!(gate.round_limit(), paused);

        tokio::time::advance(PERIOD - Duration::from_millis(1)).await;
        assert_eq!(gate.round_limit(), paused, "the period has not ended");

        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            handle.state(),
            BreakerState::Open,
            "no call has arrived yet"
        );
        let probing = RoundLimit {
            include_retries: true,
            max_claims: Some(2),
        };
        assert_eq!(
            gate.round_limit(),
            probing,
            "the period ended: retries may probe"
        );

        assert!(admitted(&mut service, false).await, "the probe is admitted");
        assert_eq!(handle.state(), BreakerState::Closed);
        assert_eq!(gate.round_limit(), RoundLimit::NONE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gate_made_after_the_breaker_opened_still_knows_when_it_ends() {
        let (handle, mut service) = breaker();
        assert!(admitted(&mut service, true).await);
        assert!(!admitted(&mut service, false).await, "open: refused");
        // The old gate learned the period from the transition broadcast, which a gate
        // subscribed later never saw; the breaker's own accessor has no such gap.
        let gate = BreakerGate::new(handle.clone());
        assert!(gate.retries_paused());
        tokio::time::advance(PERIOD).await;
        assert!(!gate.retries_paused());
    }

    #[tokio::test(start_paused = true)]
    async fn forced_open_pauses_retries_until_reset() {
        let (handle, _service) = breaker();
        let gate = BreakerGate::new(handle.clone());
        handle.force_open();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(gate.retries_paused());
        assert_eq!(gate.round_limit().max_claims, Some(2));
        handle.reset();
        assert_eq!(gate.round_limit(), RoundLimit::NONE);
    }
}
