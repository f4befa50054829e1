use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::Layer;
use tower_test::mock;

use super::*;
use crate::config::RetryConfig;
use crate::deadline::CallDeadline;
use crate::errors::{RETRY_STOP_KEY, is_retryable_code, stop};
use crate::metadata::{GRPC_PREVIOUS_RPC_ATTEMPTS, GRPC_RETRY_PUSHBACK_MS, IDEMPOTENCY_KEY};
use crate::test_support::{body_bytes, failure, ok, request, status};

struct Seen {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

type Answer = Result<Response<Body>, BoxError>;

/// Runs one logical call through `layer`, answering attempt i with `answer(i)`.
async fn drive(
    layer: &RetryLayer,
    req: Request<Body>,
    mut answer: impl FnMut(usize) -> Answer,
) -> (Answer, Vec<Seen>) {
    let (inner, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let mut svc = mock::Spawn::new(layer.layer(inner));
    assert!(svc.poll_ready().is_ready());
    let mut call = tokio::spawn(svc.call(req));
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            result = &mut call => return (result.unwrap(), seen),
            Some((req, respond)) = handle.next_request() => {
                let (parts, body) = req.into_parts();
                seen.push(Seen { headers: parts.headers, body: body_bytes(body).await, at: Instant::now() });
                match answer(seen.len() - 1) {
                    Ok(response) => respond.send_response(response),
                    Err(err) => respond.send_error(err),
                }
            }
        }
    }
}

fn config() -> RetryConfig {
    RetryConfig {
        max_attempts: 3,
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(50),
        ..RetryConfig::default()
    }
}

fn fail_then_ok(code: Code, failures: usize) -> impl FnMut(usize) -> Answer {
    move |i| {
        if i < failures {
            Err(failure(code))
        } else {
            Ok(ok())
        }
    }
}

fn pushback(value: &str) -> BoxError {
    let mut status = Status::unavailable("busy");
    status
        .metadata_mut()
        .insert(GRPC_RETRY_PUSHBACK_MS, value.parse().unwrap());
    Box::new(status)
}

fn stop_reason(answer: &Answer) -> Option<String> {
    let err = answer.as_ref().err()?;
    let value = status(err).metadata().get(RETRY_STOP_KEY)?;
    Some(value.to_str().unwrap().to_owned())
}

#[tokio::test(start_paused = true)]
async fn retries_exactly_the_retryable_codes() {
    let layer = RetryLayer::new(&config());
    for n in 1..=16 {
        let code = Code::from(n);
        let (result, seen) = drive(&layer, request(Some("k")), fail_then_ok(code, 1)).await;
        let expected = if is_retryable_code(code) { 2 } else { 1 };
        assert_eq!(seen.len(), expected, "{code:?}");
        assert_eq!(result.is_ok(), expected == 2, "{code:?}");
    }
    assert_eq!(
        layer.stats().retries(),
        4,
        "UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_never_retried() {
    let layer = RetryLayer::new(&config());
    let (result, seen) = drive(&layer, request(Some("k")), |_| {
        Err(Box::new(crate::errors::circuit_open("c")))
    })
    .await;
    assert_eq!(seen.len(), 1);
    assert!(crate::errors::is_circuit_open(status(&result.unwrap_err())));
}

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_the_same_key_and_body_and_counts_previous_attempts() {
    let layer = RetryLayer::new(&RetryConfig {
        max_attempts: 4,
        ..config()
    });
    let (result, seen) = drive(
        &layer,
        request(Some("key-42")),
        fail_then_ok(Code::Unavailable, 3),
    )
    .await;
    result.unwrap();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        assert_eq!(s.headers[IDEMPOTENCY_KEY], "key-42");
        assert_eq!(s.body, seen[0].body);
    }
    assert_eq!(&seen[0].body[..], b"\0\0\0\0\x02hi");
    let counters: Vec<_> = seen
        .iter()
        .map(|s| {
            s.headers
                .get(GRPC_PREVIOUS_RPC_ATTEMPTS)
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        counters,
        [None, Some("1".into()), Some("2".into()), Some("3".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_and_says_why() {
    let layer = RetryLayer::new(&config());
    let (result, seen) = drive(&layer, request(Some("k")), |_| {
        Err(failure(Code::Unavailable))
    })
    .await;
    assert_eq!(seen.len(), 3);
    assert_eq!(stop_reason(&result).as_deref(), Some(stop::MAX_ATTEMPTS));
}

#[tokio::test(start_paused = true)]
async fn a_call_without_key_is_retried_only_if_it_surely_never_left() {
    let layer = RetryLayer::new(&config());

    // The server answered: it may have done the work.
    let (result, seen) = drive(&layer, request(None), fail_then_ok(Code::Unavailable, 1)).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(stop_reason(&result).as_deref(), Some(stop::NOT_IDEMPOTENT));

    // An attempt timeout: the request may have been processed.
    let (_, seen) = drive(&layer, request(None), |i| {
        if i == 0 {
            Err(Box::new(crate::errors::attempt_timeout(
                Duration::from_millis(5),
            )))
        } else {
            Ok(ok())
        }
    })
    .await;
    assert_eq!(seen.len(), 1);

    // No connection was ever made.
    let (result, seen) = drive(&layer, request(None), |i| {
        if i == 0 {
            Err(crate::errors::into_status_error(tonic::ConnectError(
                "refused".into(),
            )))
        } else {
            Ok(ok())
        }
    })
    .await;
    assert_eq!(seen.len(), 2);
    result.unwrap();

    // Shed locally, never sent.
    let (result, seen) = drive(&layer, request(None), |i| {
        if i == 0 {
            Err(Box::new(crate::errors::load_shed(1)))
        } else {
            Ok(ok())
        }
    })
    .await;
    assert_eq!(seen.len(), 2);
    result.unwrap();

    // Listed as idempotent by configuration.
    let listed = RetryLayer::new(&RetryConfig {
        idempotent_rpcs: vec!["CreateOrder".into()],
        ..config()
    });
    let (result, seen) = drive(&listed, request(None), fail_then_ok(Code::Unavailable, 1)).await;
    assert_eq!(seen.len(), 2);
    result.unwrap();
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_stay_within_full_jitter_bounds() {
    let layer = RetryLayer::new(&RetryConfig {
        max_attempts: 4,
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(150),
        ..config()
    });
    let mut waits = Vec::new();
    for _ in 0..20 {
        let (result, seen) =
            drive(&layer, request(Some("k")), fail_then_ok(Code::Aborted, 3)).await;
        result.unwrap();
        for (i, pair) in seen.windows(2).enumerate() {
            let wait = pair[1].at - pair[0].at;
            let ceiling = [100, 150, 150][i];
            assert!(
                wait <= Duration::from_millis(ceiling),
                "retry {}: {wait:?}",
                i + 1
            );
            waits.push(wait);
        }
    }
    assert!(
        waits.iter().any(|w| !w.is_zero()),
        "jitter is not stuck at zero"
    );
    assert!(
        waits.iter().any(|w| *w != waits[0]),
        "waits are random, not constant"
    );
}

#[tokio::test(start_paused = true)]
async fn pushback_is_honoured_exactly_and_negative_or_malformed_stops() {
    let layer = RetryLayer::new(&config());
    let (result, seen) = drive(&layer, request(Some("k")), |i| {
        if i == 0 {
            Err(pushback("700"))
        } else {
            Ok(ok())
        }
    })
    .await;
    result.unwrap();
    assert_eq!(seen[1].at - seen[0].at, Duration::from_millis(700));

    for bad in ["-1", "soon"] {
        let (result, seen) = drive(&layer, request(Some("k")), |_| Err(pushback(bad))).await;
        assert_eq!(seen.len(), 1, "{bad}");
        assert_eq!(stop_reason(&result).as_deref(), Some(stop::PUSHBACK));
    }
}

#[tokio::test(start_paused = true)]
async fn never_sleeps_past_the_deadline() {
    let layer = RetryLayer::new(&config());
    let mut req = request(Some("k"));
    req.extensions_mut()
        .insert(CallDeadline::after(Duration::from_millis(500)));
    let started = Instant::now();
    let (result, seen) = drive(&layer, req, |_| Err(pushback("600"))).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "gave up without sleeping"
    );
    assert_eq!(stop_reason(&result).as_deref(), Some(stop::DEADLINE));

    // With time left, the same pushback is waited out.
    let mut req = request(Some("k"));
    req.extensions_mut()
        .insert(CallDeadline::after(Duration::from_millis(700)));
    let (result, seen) = drive(&layer, req, |i| {
        if i == 0 {
            Err(pushback("600"))
        } else {
            Ok(ok())
        }
    })
    .await;
    assert_eq!(seen.len(), 2);
    result.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_retries_in_a_failure_storm() {
    let config = RetryConfig {
        max_attempts: 5,
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(1),
        budget_ttl: Duration::from_secs(10),
        budget_min_per_sec: 1,
        budget_ratio: 0.1,
        ..RetryConfig::default()
    };
    let layer = RetryLayer::new(&config);
    let calls = 100u64;
    let mut exhausted = 0;
    for _ in 0..calls {
        let (result, _) = drive(&layer, request(Some("k")), |_| {
            Err(failure(Code::Unavailable))
        })
        .await;
        if stop_reason(&result).as_deref() == Some(stop::RETRY_BUDGET_EXHAUSTED) {
            exhausted += 1;
        }
    }
    let stats = layer.stats();
    // The budget: min_per_sec * ttl = 10 retries in reserve, plus 10 % of the calls.
    let share = 10 + calls / 10;
    assert!(
        stats.retries() <= share,
        "{} retries > {share}",
        stats.retries()
    );
    assert!(
        stats.retries() >= share - 1,
        "the reserve and deposits are usable"
    );
    assert!(stats.retries() < calls * 4, "far below the unbudgeted 400");
    assert!(stats.budget_exhausted() > 0);
    assert_eq!(stats.budget_exhausted(), exhausted);
    assert_eq!(stats.calls(), calls);
}

#[tokio::test(start_paused = true)]
async fn a_request_over_the_buffer_bound_is_sent_once_intact() {
    let layer = RetryLayer::new(&RetryConfig {
        max_request_bytes: 4,
        ..config()
    });
    let (result, seen) = drive(&layer, request(Some("k")), |_| {
        Err(failure(Code::Unavailable))
    })
    .await;
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].body[..], b"\0\0\0\0\x02hi");
    assert_eq!(status(&result.unwrap_err()).code(), Code::Unavailable);
    assert_eq!(layer.stats().not_buffered(), 1);
}

/// A request body that is not ready when the call is made.
struct Late {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    data: Option<Bytes>,
}

impl http_body::Body for Late {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        std::task::ready!(self.sleep.as_mut().poll(cx));
        std::task::Poll::Ready(self.data.take().map(|d| Ok(http_body::Frame::data(d))))
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_is_not_ready_yet_is_buffered_by_the_future() {
    let layer = RetryLayer::new(&config());
    let mut req = request(Some("k"));
    *req.body_mut() = Body::new(Late {
        sleep: Box::pin(tokio::time::sleep(Duration::from_millis(5))),
        data: Some(Bytes::from_static(b"late body")),
    });
    let (result, seen) = drive(&layer, req, fail_then_ok(Code::Unavailable, 1)).await;
    result.unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| &s.body[..] == b"late body"));
}

#[tokio::test(start_paused = true)]
async fn a_final_error_after_a_possibly_delivered_attempt_is_marked() {
    use crate::errors::{earlier_attempt_maybe_delivered, never_left_the_process};
    let layer = RetryLayer::new(&config());
    // A reply lost after the request was sent, then a refusal: the first may have done the work.
    let (result, seen) = drive(&layer, request(Some("k")), |i| match i {
        0 => Err(crate::errors::into_status_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset by peer",
        ))),
        _ => Err(failure(Code::Internal)),
    })
    .await;
    assert_eq!(seen.len(), 2);
    let err = result.unwrap_err();
    assert_eq!(
        status(&err).code(),
        Code::Internal,
        "the last answer's code"
    );
    assert!(earlier_attempt_maybe_delivered(status(&err)));

    // Surely unsent first (no connection), then the same refusal: a plain answer.
    let (result, _) = drive(&layer, request(Some("k")), |i| match i {
        0 => Err(Box::new(tonic::ConnectError("refused".into()))),
        _ => Err(failure(Code::Internal)),
    })
    .await;
    assert!(!earlier_attempt_maybe_delivered(status(
        &result.unwrap_err()
    )));

    // An answer from the server, then the local breaker: the call did leave the process.
    let (result, _) = drive(&layer, request(Some("k")), |i| match i {
        0 => Err(failure(Code::Unavailable)),
        _ => Err(Box::new(crate::errors::circuit_open("c"))),
    })
    .await;
    let err = result.unwrap_err();
    assert!(earlier_attempt_maybe_delivered(status(&err)));
    assert!(!never_left_the_process(status(&err)));

    // Refused by the breaker on the first try: it never left.
    let (result, _) = drive(&layer, request(Some("k")), |_| {
        Err(Box::new(crate::errors::circuit_open("c")))
    })
    .await;
    assert!(never_left_the_process(status(&result.unwrap_err())));
}

/// The waits a layer seeded with `seed` takes before each retry of one call failing
/// `failures` times (virtual time, so only the timer's millisecond rounding blurs them).
async fn seeded_waits(seed: u64, failures: usize) -> Vec<Duration> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let layer = RetryLayer::from_rng(
        &RetryConfig {
            max_attempts: 4,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(400),
            ..config()
        },
        "seeded",
        &mut rng,
    );
    let (result, seen) = drive(
        &layer,
        request(Some("k")),
        fail_then_ok(Code::Unavailable, failures),
    )
    .await;
    result.unwrap();
    seen.windows(2)
        .map(|pair| pair[1].at - pair[0].at)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_seeded_layer_waits_the_seeded_full_jitter_draws() {
    use rand::SeedableRng;
    let waits = seeded_waits(7, 3).await;
    // The same draws, made directly from a source seeded the same way.
    let backoff =
        crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
    let mut same = crate::backoff::JitterRng::from_rng(&mut rand::rngs::StdRng::seed_from_u64(7));
    let expected: Vec<_> = (1..=3).map(|n| backoff.delay_with(n, &mut same)).collect();
    assert_eq!(waits.len(), 3);
    for (i, (wait, expected)) in waits.iter().zip(&expected).enumerate() {
        let error = wait.abs_diff(*expected);
        assert!(
            error <= Duration::from_millis(1),
            "retry {}: waited {wait:?}, drew {expected:?}",
            i + 1
        );
        assert!(*wait <= backoff.ceiling(i as u32 + 1) + Duration::from_millis(1));
    }
    assert_eq!(waits, seeded_waits(7, 3).await, "same seed, same waits");
    assert_ne!(waits, seeded_waits(8, 3).await, "another seed, other waits");
}
