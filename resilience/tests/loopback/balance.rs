//! Many instances behind one client: losing or draining one of three must fail no call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lab_proto::order::v1::order_service_client::OrderServiceClient;
use resilience::endpoints::{Resolve, Resolved};
use resilience::errors::{self, reason};
use resilience::{BreakerState, Discovery, EndpointState, ResilientChannel};
use tokio::sync::Barrier;
use tokio::time::Instant;
use tonic::Code;

use crate::common::{Step, config, create_order};
use crate::fleet::Instance;

const CALLERS: usize = 32;

/// Runs `calls` CreateOrder calls from CALLERS concurrent callers, each with its own key;
/// `at_half` runs once when half of them have finished. Returns the failures.
async fn load<S, F>(client: OrderServiceClient<S>, calls: usize, at_half: F) -> Vec<tonic::Status>
where
    S: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + 'static,
    S::Future: Send,
    S::ResponseBody: Send,
    <S::ResponseBody as http_body::Body>::Error: Into<tower::BoxError> + Send,
    S::Error: Into<tower::BoxError>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes>,
    F: FnOnce() + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CALLERS));
    let at_half = Arc::new(std::sync::Mutex::new(Some(at_half)));
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (mut client, next, done, barrier, at_half) = (
            client.clone(),
            next.clone(),
            done.clone(),
            barrier.clone(),
            at_half.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut failures = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= calls {
                    return failures;
                }
                if let Err(status) = client
                    .create_order(create_order(Some(&format!("k{i}"))))
                    .await
                {
                    failures.push(status);
                }
                if done.fetch_add(1, Ordering::SeqCst) + 1 == calls / 2
                    && let Some(f) = at_half.lock().unwrap().take()
                {
                    f();
                }
            }
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_instances_mid_load_fails_no_call() {
    let fleet: Vec<_> = (0..3).map(|_| Instance::start()).collect();
    let endpoints: Vec<_> = fleet.iter().map(Instance::endpoint).collect();
    let mut config = config();
    config.attempt_timeout = Duration::from_millis(500);
    config.outlier.eject_base = Duration::from_millis(200);
    let (stack, breaker) = ResilientChannel::builder(config).balance(endpoints);
    let handle = stack.endpoints().expect("a balanced stack");
    let client = OrderServiceClient::new(stack);
    let victim = Arc::new(std::sync::Mutex::new(fleet));
    let killer = victim.clone();
    let failures = load(client.clone(), 3_000, move || {
        killer.lock().unwrap()[1].kill()
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} calls failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let dead = victim.lock().unwrap()[1].url();
    // Killed late in the load, the dead endpoint may only have been avoided so far (it failed
    // last, so it lost every draw): the next calls that draw it meet a refused connection, which
    // ejects it. Every one of them must still succeed, elsewhere.
    let mut client = client;
    let started = Instant::now();
    let mut i = 0;
    while handle.endpoint(&dead).unwrap().ejections == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            handle.endpoint(&dead)
        );
        client
            .create_order(create_order(Some(&format!("after{i}"))))
            .await
            .unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "two endpoints were left"
    );

    // It comes back on the same port: a probe readmits it and it takes calls again.
    victim.lock().unwrap()[1].restart();
    let before = victim.lock().unwrap()[1].script.calls();
    let started = Instant::now();
    let mut i = 0;
    while handle.endpoint(&dead).unwrap().state != EndpointState::Admitted {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            handle.endpoint(&dead)
        );
        client
            .create_order(create_order(Some(&format!("again{i}"))))
            .await
            .unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        victim.lock().unwrap()[1].script.calls() > before,
        "the probe reached it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_another_endpoint_than_the_failed_attempt() {
    let fleet: Vec<_> = (0..3).map(|_| Instance::start()).collect();
    for instance in &fleet {
        instance.script.set_default(Step::fail(Code::Unavailable));
    }
    let mut config = config();
    // Keep every endpoint admitted: this is about where each retry goes.
    config.outlier.consecutive_failures = 0;
    config.outlier.failure_rate = None;
    let (stack, _) =
        ResilientChannel::builder(config).balance(fleet.iter().map(Instance::endpoint));
    let mut client = OrderServiceClient::new(stack);
    for round in 0..20 {
        let key = format!("r{round}");
        let status = client
            .create_order(create_order(Some(&key)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        // Which instance took attempt n (grpc-previous-rpc-attempts n, none on the first).
        let mut took = Vec::new();
        for n in 0..3 {
            let previous = (n > 0).then(|| n.to_string());
            let at = fleet
                .iter()
                .position(|i| {
                    i.script
                        .seen()
                        .iter()
                        .any(|s| s.key.as_deref() == Some(&key) && s.previous_attempts == previous)
                })
                .expect("every attempt reached a server");
            took.push(at);
        }
        assert!(
            took.windows(2).all(|w| w[0] != w[1]),
            "round {round}: attempts went to instances {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_down_calls_fail_fast_with_circuit_open() {
    let mut fleet: Vec<_> = (0..3).map(|_| Instance::start()).collect();
    let (stack, breaker) =
        ResilientChannel::builder(config()).balance(fleet.iter().map(Instance::endpoint));
    let handle = stack.endpoints().unwrap();
    let mut client = OrderServiceClient::new(stack);
    client
        .create_order(create_order(Some("warm")))
        .await
        .unwrap();
    for instance in &mut fleet {
        instance.kill();
    }
    let mut last = None;
    for i in 0..10 {
        if let Err(status) = client
            .create_order(create_order(Some(&format!("d{i}"))))
            .await
        {
            last = Some(status);
        }
        if breaker.state() != BreakerState::Closed {
            break;
        }
    }
    assert!(last.is_some(), "calls to dead endpoints fail");
    assert!(
        handle
            .endpoints()
            .iter()
            .all(|e| e.state == EndpointState::Ejected),
        "{:?}",
        handle.endpoints()
    );
    assert_eq!(breaker.state(), BreakerState::Open);
    let started = Instant::now();
    let status = client
        .create_order(create_order(Some("fast")))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        errors::reason_of(&status).as_deref(),
        Some(reason::CIRCUIT_OPEN)
    );
    assert!(errors::refused_by_local_breaker(&status));

    // They come back: the breaker's half-open probe reaches a probing endpoint, which is
    // readmitted, and the circuit closes.
    for instance in &mut fleet {
        instance.restart();
    }
    let started = Instant::now();
    let mut i = 0;
    loop {
        let answered = client
            .create_order(create_order(Some(&format!("b{i}"))))
            .await
            .is_ok();
        if answered && breaker.state() == BreakerState::Closed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            handle.endpoints()
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        handle
            .endpoints()
            .iter()
            .any(|e| e.state == EndpointState::Admitted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_instance_under_load_fails_no_call() {
    let fleet: Vec<_> = (0..3).map(|_| Instance::start()).collect();
    for instance in &fleet {
        // Calls in flight when the drain starts must be finished, not cut.
        instance
            .script
            .set_default(Step::ok().after(Duration::from_millis(20)));
    }
    let (stack, _) =
        ResilientChannel::builder(config()).balance(fleet.iter().map(Instance::endpoint));
    let client = OrderServiceClient::new(stack);
    let fleet = Arc::new(tokio::sync::Mutex::new(fleet));
    let drainer = fleet.clone();
    let (drained_tx, drained) = tokio::sync::oneshot::channel();
    let failures = load(client, 2_000, move || {
        tokio::spawn(async move {
            drainer.lock().await[0].drain().await;
            let _ = drained_tx.send(());
        });
    })
    .await;
    drained.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} calls failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
}

/// A name service the test rewrites: `shop` resolves to whatever `addrs` holds.
#[derive(Clone, Default)]
struct Names(Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>);

impl Names {
    fn set(&self, instances: &[&Instance]) {
        *self.0.lock().unwrap() = instances.iter().map(|i| i.addr).collect();
    }
}

impl Resolve for Names {
    fn resolve(&self, host: &str, port: u16) -> Resolved {
        assert_eq!(host, "shop");
        let addrs: Vec<_> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|addr| std::net::SocketAddr::new(addr.ip(), port))
            .collect();
        Box::pin(async move { Ok(addrs) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_adds_and_removes_endpoints_live() {
    // All instances share one port number on different loopback addresses, as pods of a
    // headless service do.
    let a = Instance::start_at("127.0.0.2:0".parse().unwrap(), crate::common::Script::new());
    let port = a.addr.port();
    let b = Instance::start_at(
        format!("127.0.0.3:{port}").parse().unwrap(),
        crate::common::Script::new(),
    );
    let names = Names::default();
    names.set(&[&a]);
    let discovery = Discovery::new(
        &[format!("http://shop:{port}")],
        Duration::from_millis(20),
        Duration::from_secs(1),
    )
    .unwrap()
    .with_resolver(names.clone());
    let (stack, _) = ResilientChannel::builder(config())
        .discover(discovery)
        .await;
    let handle = stack.endpoints().unwrap();
    let addresses = |handle: &resilience::EndpointsHandle| {
        handle
            .endpoints()
            .into_iter()
            .map(|e| e.address)
            .collect::<Vec<_>>()
    };
    assert_eq!(addresses(&handle), [a.url()], "resolved once at start");
    let mut client = OrderServiceClient::new(stack);

    // b appears: it joins and takes calls.
    names.set(&[&a, &b]);
    let started = Instant::now();
    while addresses(&handle).len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(5), "b never joined");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..40 {
        client
            .create_order(create_order(Some(&format!("j{i}"))))
            .await
            .unwrap();
    }
    assert!(b.script.calls() > 0, "the new endpoint takes calls");

    // a vanishes: it leaves, and calls go to b only.
    names.set(&[&b]);
    let started = Instant::now();
    while addresses(&handle) != [b.url()] {
        assert!(started.elapsed() < Duration::from_secs(5), "a never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = a.script.calls();
    for i in 0..20 {
        client
            .create_order(create_order(Some(&format!("l{i}"))))
            .await
            .unwrap();
    }
    assert_eq!(
        a.script.calls(),
        before,
        "a removed endpoint takes no calls"
    );

    // The name resolves to nothing for a while: the last addresses are kept.
    names.set(&[]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(addresses(&handle), [b.url()]);
}
