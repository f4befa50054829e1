use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, ServiceExt, service_fn};

use super::*;
use crate::errors::reason_of;
use crate::metadata::error_status_in;
use crate::test_support::{ok, request};

fn counted(
    layer: &FaultLayer,
) -> (
    Arc<AtomicUsize>,
    impl Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let inner = service_fn(move |_req: Request<Body>| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok::<_, BoxError>(ok())
        }
    });
    (calls, layer.layer(inner))
}

fn code(response: &Response<Body>) -> Code {
    error_status_in(response.headers()).map_or(Code::Ok, |s| s.code())
}

#[tokio::test(start_paused = true)]
async fn off_by_default_and_no_header_turns_it_on() {
    let layer = FaultLayer::disabled();
    let (calls, svc) = counted(&layer);
    let mut req = request(None);
    req.headers_mut()
        .insert("faults", "*:error=INTERNAL".parse().unwrap());
    req.headers_mut()
        .insert("x-fault", "drop_response".parse().unwrap());
    let response = svc.oneshot(req).await.unwrap();
    assert_eq!(code(&response), Code::Ok);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.handle().injected(), 0);
}

#[tokio::test(start_paused = true)]
async fn error_answers_without_running_the_handler() {
    let layer = FaultLayer::with_plan("CreateOrder:error=ABORTED".parse().unwrap());
    let (calls, svc) = counted(&layer);
    let response = svc.oneshot(request(None)).await.unwrap();
    assert_eq!(code(&response), Code::Aborted);
    let status = error_status_in(response.headers()).unwrap();
    assert_eq!(
        reason_of(&status).as_deref(),
        Some(crate::errors::reason::FAULT_INJECTED)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn drop_response_runs_the_handler_then_answers_unavailable() {
    let layer = FaultLayer::with_plan("*:drop_response".parse().unwrap());
    let (calls, svc) = counted(&layer);
    let response = svc.oneshot(request(None)).await.unwrap();
    assert_eq!(code(&response), Code::Unavailable);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn black_hole_runs_the_handler_then_never_answers() {
    let layer = FaultLayer::with_plan("*:black_hole".parse().unwrap());
    let (calls, svc) = counted(&layer);
    let waited = tokio::time::timeout(Duration::from_secs(60), svc.oneshot(request(None))).await;
    assert!(waited.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn delays_add_up_and_filters_apply() {
    let layer = FaultLayer::with_plan(
        "*:delay=100ms;CreateOrder:delay=50ms;GetOrder:delay=10s;/lab.order.v1.OrderService/CreateOrder:error=NOT_FOUND:0"
            .parse()
            .unwrap(),
    );
    let (calls, svc) = counted(&layer);
    let started = Instant::now();
    let response = svc.oneshot(request(None)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(150));
    assert_eq!(code(&response), Code::Ok, "probability 0 never fires");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.handle().injected(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_handle_changes_faults_at_run_time() {
    let layer = FaultLayer::disabled();
    let handle = layer.handle();
    let (_calls, svc) = counted(&layer);
    assert_eq!(
        code(&svc.clone().oneshot(request(None)).await.unwrap()),
        Code::Ok
    );
    handle
        .set_from_str("CreateOrder:error=UNAVAILABLE")
        .unwrap();
    assert_eq!(
        code(&svc.clone().oneshot(request(None)).await.unwrap()),
        Code::Unavailable
    );
    assert!(handle.set_from_str("CreateOrder:nonsense").is_err());
    assert_eq!(
        handle.plan().rules.len(),
        1,
        "a bad plan leaves the old one"
    );
    handle.clear();
    assert_eq!(code(&svc.oneshot(request(None)).await.unwrap()), Code::Ok);
}

#[tokio::test(start_paused = true)]
async fn probabilities_are_roughly_respected() {
    let layer = FaultLayer::with_plan("*:error=INTERNAL:0.5".parse().unwrap());
    let (calls, svc) = counted(&layer);
    for _ in 0..400 {
        let _ = svc.clone().oneshot(request(None)).await.unwrap();
    }
    let fired = layer.handle().injected() as usize;
    assert_eq!(fired + calls.load(Ordering::SeqCst), 400);
    assert!((120..=280).contains(&fired), "{fired} of 400 at p = 0.5");
}

#[tokio::test(start_paused = true)]
async fn a_rule_for_one_attempt_reads_the_previous_attempts_header() {
    let layer = FaultLayer::with_plan(
        "CreateOrder@1:error=UNAVAILABLE;CreateOrder@2:error=INTERNAL"
            .parse()
            .unwrap(),
    );
    let (calls, svc) = counted(&layer);
    let attempt = |previous: Option<&str>| {
        let mut req = request(Some("k"));
        if let Some(previous) = previous {
            req.headers_mut()
                .insert(GRPC_PREVIOUS_RPC_ATTEMPTS, previous.parse().unwrap());
        }
        req
    };
    let first = svc.clone().oneshot(attempt(None)).await.unwrap();
    assert_eq!(code(&first), Code::Unavailable);
    let second = svc.clone().oneshot(attempt(Some("1"))).await.unwrap();
    assert_eq!(code(&second), Code::Internal);
    let third = svc.clone().oneshot(attempt(Some("2"))).await.unwrap();
    assert_eq!(code(&third), Code::Ok, "no rule for the third attempt");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
