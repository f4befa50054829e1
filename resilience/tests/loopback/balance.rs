//! Many instances behind one client: losing or draining one of three must fail no call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lab_proto::order::v1::order_service_client::OrderServiceClient;
use resilience::ResilientChannel;
use tokio::sync::Barrier;

use crate::common::{config, create_order};
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
                if let Err(status) = client.create_order(create_order(Some(&format!("k{i}")))).await {
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
    let (stack, _breaker) = ResilientChannel::builder(config).balance(endpoints);
    let client = OrderServiceClient::new(stack);
    let victim = Arc::new(std::sync::Mutex::new(fleet));
    let killer = victim.clone();
    let failures = load(client, 3_000, move || killer.lock().unwrap()[1].kill()).await;
    assert!(
        failures.is_empty(),
        "{} calls failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
}
