use std::time::Duration;

use http::{Request, Response};
use tokio::sync::broadcast;
use tonic::Code;
use tonic::body::Body;
use tower::Layer;
use tower_test::mock;

use super::*;
use crate::config::BreakerConfig;
use crate::errors::is_circuit_open;
use crate::test_support::{failure, ok, request, status};

type Inner = mock::Mock<Request<Body>, Response<Body>>;
type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        failure_rate: None,
        open_base: Duration::from_secs(1),
        open_cap: Duration::from_secs(30),
        open_jitter: 0.0,
        half_open_probes: 1,
        ..BreakerConfig::default()
    }
}

fn spawn(config: &BreakerConfig) -> (mock::Spawn<CircuitBreaker<Inner>>, Handle, BreakerHandle) {
    let layer = CircuitBreakerLayer::new(config);
    let breaker = layer.handle();
    let (svc, handle) = mock::spawn_with(|m| layer.layer(m));
    (svc, handle, breaker)
}

/// One call answered with `result`; returns what the caller got.
async fn call(
    svc: &mut mock::Spawn<CircuitBreaker<Inner>>,
    handle: &mut Handle,
    result: Result<(), Code>,
) -> Result<Response<Body>, crate::BoxError> {
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(request(None));
    // Bounded (virtual time), so a breaker that wrongly rejects fails the test, not hangs it.
    let (_req, respond) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the call should have reached the inner service")
        .unwrap();
    match result {
        Ok(()) => respond.send_response(ok()),
        Err(code) => respond.send_error(failure(code)),
    }
    fut.await
}

/// A call the breaker must reject without touching the inner service.
async fn rejected(svc: &mut mock::Spawn<CircuitBreaker<Inner>>, handle: &mut Handle) {
    assert!(
        svc.poll_ready().is_ready(),
        "poll_ready stays Ready when open"
    );
    let err = svc.call(request(None)).await.unwrap_err();
    assert!(is_circuit_open(status(&err)), "{err}");
    assert!(
        tokio::time::timeout(Duration::from_millis(1), handle.next_request())
            .await
            .is_err(),
        "a rejected call must not reach the inner service"
    );
}

fn drain(rx: &mut broadcast::Receiver<Transition>) -> Vec<(BreakerState, BreakerState)> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|t| (t.from, t.to))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn trips_on_consecutive_server_failures_and_fails_fast() {
    let (mut svc, mut handle, breaker) = spawn(&config());
    for _ in 0..2 {
        call(&mut svc, &mut handle, Err(Code::Unavailable))
            .await
            .unwrap_err();
    }
    call(&mut svc, &mut handle, Ok(())).await.unwrap();
    for _ in 0..2 {
        call(&mut svc, &mut handle, Err(Code::Internal))
            .await
            .unwrap_err();
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "a success reset the streak"
    );
    call(&mut svc, &mut handle, Err(Code::DeadlineExceeded))
        .await
        .unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Open);
    rejected(&mut svc, &mut handle).await;
    rejected(&mut svc, &mut handle).await;
    assert_eq!(breaker.stats().rejections, 2);
    assert_eq!(breaker.stats().failures, 5);
}

#[tokio::test(start_paused = true)]
async fn trips_on_the_failure_rate_over_the_window() {
    let config = BreakerConfig {
        consecutive_failures: 0,
        failure_rate: Some(0.5),
        window_calls: 10,
        minimum_calls: 10,
        ..config()
    };
    let (mut svc, mut handle, breaker) = spawn(&config);
    // Alternating: never two failures in a row, but half of all calls fail.
    for i in 0..9 {
        let result = if i % 2 == 0 {
            Ok(())
        } else {
            Err(Code::ResourceExhausted)
        };
        let _ = call(&mut svc, &mut handle, result).await;
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "call {i}: below minimum calls"
        );
    }
    let _ = call(&mut svc, &mut handle, Err(Code::Unknown)).await;
    assert_eq!(breaker.state(), BreakerState::Open, "5 of 10 failed");
}

#[tokio::test(start_paused = true)]
async fn client_errors_never_count() {
    let (mut svc, mut handle, breaker) = spawn(&config());
    for code in [
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
        Code::AlreadyExists,
        Code::Cancelled,
    ]
    .into_iter()
    .cycle()
    .take(25)
    {
        call(&mut svc, &mut handle, Err(code)).await.unwrap_err();
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.stats().failures, 0);
    // Locally shed attempts say nothing about the server either.
    for _ in 0..5 {
        assert!(svc.poll_ready().is_ready());
        let fut = svc.call(request(None));
        let (_req, respond) = handle.next_request().await.unwrap();
        respond.send_error(crate::errors::load_shed(1));
        fut.await.unwrap_err();
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_n_probes() {
    let config = BreakerConfig {
        half_open_probes: 2,
        ..config()
    };
    let layer = CircuitBreakerLayer::new(&config);
    let breaker = layer.handle();
    let (inner, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let svc = layer.layer(inner);
    let mut one = mock::Spawn::new(svc.clone());
    for _ in 0..3 {
        call(&mut one, &mut handle, Err(Code::Unavailable))
            .await
            .unwrap_err();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;

    let mut probes = Vec::new();
    for _ in 0..2 {
        let mut clone = mock::Spawn::new(svc.clone());
        assert!(clone.poll_ready().is_ready());
        probes.push(clone.call(request(None)));
    }
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(breaker.stats().probes_in_flight, 2);
    assert_eq!(
        breaker.half_open_probes(),
        2,
        "the probes a caller may drive at once"
    );
    let mut responders = Vec::new();
    for _ in 0..2 {
        responders.push(handle.next_request().await.unwrap().1);
    }
    let mut third = mock::Spawn::new(svc.clone());
    rejected(&mut third, &mut handle).await;

    responders.pop().unwrap().send_response(ok());
    probes.pop().unwrap().await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
    // The other probe ends after the breaker closed: a stale result, ignored.
    responders
        .pop()
        .unwrap()
        .send_error(failure(Code::Unavailable));
    probes.pop().unwrap().await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failed_probes_reopen_for_longer_and_every_transition_is_reported() {
    let (mut svc, mut handle, breaker) = spawn(&config());
    let mut events = breaker.transitions();
    let mut watch = breaker.watch();
    for _ in 0..3 {
        call(&mut svc, &mut handle, Err(Code::Unavailable))
            .await
            .unwrap_err();
    }
    assert!(watch.has_changed().unwrap());
    assert_eq!(*watch.borrow_and_update(), BreakerState::Open);
    assert_eq!(breaker.open_period(), Some(Duration::from_secs(1)));

    let mut periods = vec![Duration::from_secs(1)];
    for _ in 0..3 {
        let period = breaker.open_period().unwrap();
        tokio::time::advance(period - Duration::from_millis(1)).await;
        rejected(&mut svc, &mut handle).await;
        tokio::time::advance(Duration::from_millis(1)).await;
        call(&mut svc, &mut handle, Err(Code::Unavailable))
            .await
            .unwrap_err();
        periods.push(breaker.open_period().unwrap());
    }
    assert_eq!(
        periods,
        [1, 2, 4, 8].map(Duration::from_secs),
        "each failed probe doubles the open period"
    );

    tokio::time::advance(Duration::from_secs(8)).await;
    call(&mut svc, &mut handle, Ok(())).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
    use BreakerState::*;
    assert_eq!(
        drain(&mut events),
        [
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed),
        ]
    );
    // Closing forgot the failures: a fresh streak is needed, and the period starts over.
    for _ in 0..3 {
        call(&mut svc, &mut handle, Err(Code::Unavailable))
            .await
            .unwrap_err();
    }
    assert_eq!(breaker.open_period(), Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn force_open_and_reset() {
    let (mut svc, mut handle, breaker) = spawn(&config());
    let mut events = breaker.transitions();
    breaker.force_open();
    assert_eq!(breaker.state(), BreakerState::ForcedOpen);
    tokio::time::advance(Duration::from_secs(3600)).await;
    rejected(&mut svc, &mut handle).await;
    breaker.reset();
    assert_eq!(breaker.state(), BreakerState::Closed);
    call(&mut svc, &mut handle, Ok(())).await.unwrap();
    use BreakerState::*;
    assert_eq!(
        drain(&mut events),
        [(Closed, ForcedOpen), (ForcedOpen, Closed)]
    );
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_probe_frees_its_slot() {
    let (mut svc, mut handle, breaker) = spawn(&config());
    for _ in 0..3 {
        call(&mut svc, &mut handle, Err(Code::Unavailable))
            .await
            .unwrap_err();
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(svc.poll_ready().is_ready());
    let probe = svc.call(request(None));
    let _ = handle.next_request().await.unwrap();
    assert_eq!(breaker.stats().probes_in_flight, 1);
    drop(probe);
    assert_eq!(breaker.stats().probes_in_flight, 0);
    call(&mut svc, &mut handle, Ok(())).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

/// The first three open periods of a breaker seeded with `seed` that fails every call (each
/// probe's failure re-opens it).
async fn seeded_periods(config: &BreakerConfig, seed: u64) -> Vec<Duration> {
    use rand::SeedableRng;
    let layer = CircuitBreakerLayer::from_rng(
        config,
        "seeded",
        &mut rand::rngs::StdRng::seed_from_u64(seed),
    );
    let breaker = layer.handle();
    let mut transitions = breaker.transitions();
    let (mut svc, mut handle) = mock::spawn_with(|m| layer.layer(m));
    let mut periods = Vec::new();
    for _ in 0..3 {
        call(&mut svc, &mut handle, Err(Code::Unavailable))
            .await
            .unwrap_err();
        let opened = std::iter::from_fn(|| transitions.try_recv().ok())
            .filter(|t| t.to == BreakerState::Open)
            .last()
            .expect("the failure opened the breaker");
        let period = opened.open_for.unwrap();
        assert_eq!(
            breaker.open_until(),
            Some(tokio::time::Instant::now() + period)
        );
        periods.push(period);
        tokio::time::advance(period).await;
    }
    periods
}

#[tokio::test(start_paused = true)]
async fn a_seeded_breaker_opens_for_the_seeded_jittered_periods() {
    use rand::SeedableRng;
    let config = BreakerConfig {
        consecutive_failures: 1,
        open_jitter: 0.5,
        ..config()
    };
    let seeded = seeded_periods(&config, 11).await;
    let expected: Vec<_> = crate::breaker::policy::OpenBackoff::with_rng(
        config.open_base,
        config.open_cap,
        config.open_jitter,
        crate::backoff::JitterRng::from_rng(&mut rand::rngs::StdRng::seed_from_u64(11)),
    )
    .take(3)
    .collect();
    assert_eq!(seeded, expected);
    assert_eq!(
        seeded,
        seeded_periods(&config, 11).await,
        "same seed, same periods"
    );
    assert_ne!(
        seeded,
        seeded_periods(&config, 12).await,
        "another seed, other periods"
    );
    assert!(
        seeded
            .iter()
            .zip([1, 2, 4])
            .any(|(p, s)| *p < Duration::from_secs(s)),
        "jittered: {seeded:?}"
    );
}
