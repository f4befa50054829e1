//! The metric names the crate documents really move.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lab_proto::order::v1::order_service_client::OrderServiceClient;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use resilience::ResilientChannel;
use tonic::Code;

use crate::common::{Step, TestServer, config, create_order};

#[derive(Default)]
struct Capture {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Capture {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<_> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.values.lock().unwrap().entry(name).or_default().clone()
    }

    fn get(&self, name: &str) -> u64 {
        self.values
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }

    fn gauge(&self, name: &str) -> f64 {
        f64::from_bits(self.get(name))
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test]
async fn retries_breaker_and_calls_are_counted_under_the_client_label() {
    let server = TestServer::start().await;
    let capture = Capture::default();
    let mut cfg = config();
    cfg.client = "orders".into();
    cfg.breaker.consecutive_failures = 2;
    let (stack, breaker) = metrics::with_local_recorder(&capture, || {
        ResilientChannel::builder(cfg).build(server.channel())
    });
    let mut client = OrderServiceClient::new(stack);

    server.script.push([Step::fail(Code::Unavailable)]);
    client.create_order(create_order(Some("k"))).await.unwrap();
    assert_eq!(capture.get("resilience_attempts_total{client=orders}"), 2);
    assert_eq!(capture.get("resilience_retries_total{client=orders}"), 1);
    assert_eq!(
        capture.get("resilience_calls_total{client=orders,code=OK}"),
        1
    );

    server.script.set_default(Step::fail(Code::Unavailable));
    let status = client
        .create_order(create_order(Some("k")))
        .await
        .unwrap_err();
    assert!(resilience::errors::is_circuit_open(&status));
    assert_eq!(capture.get("resilience_attempts_total{client=orders}"), 4);
    assert_eq!(breaker.state(), resilience::BreakerState::Open);
    assert_eq!(
        capture.gauge("resilience_breaker_state{client=orders}"),
        1.0
    );
    assert_eq!(
        capture.get("resilience_breaker_transitions_total{client=orders,to=open}"),
        1
    );
    // Two failed attempts opened it; the third met the open breaker and retry stopped there.
    assert_eq!(
        capture.get("resilience_breaker_rejections_total{client=orders}"),
        1
    );
    assert_eq!(
        capture.get("resilience_calls_total{client=orders,code=UNAVAILABLE}"),
        1
    );
}
