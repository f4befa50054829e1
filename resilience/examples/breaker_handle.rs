//! Observing and steering a circuit breaker through its [`BreakerHandle`]: force it open during
//! a known outage, watch the transitions, read when an open period ends, reset it.
//!
//! ```text
//! cargo run -p resilience --example breaker_handle
//! ```
//!
//! The server is an in-process `grpc.health.v1.Health` service; its fault plan plays a short
//! outage (every call UNAVAILABLE) so the breaker trips on its own, then recovers.

use std::time::Duration;

use resilience::{
    BreakerConfig, BreakerState, FaultLayer, ResilienceConfig, ResilientChannel, RetryConfig,
    errors,
};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

mod support;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let faults = FaultLayer::disabled();
    let outage = faults.handle();
    let channel = support::serve(faults).await?;

    let config = ResilienceConfig {
        client: "example".into(),
        retry: RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        },
        breaker: BreakerConfig {
            consecutive_failures: 3,
            failure_rate: None,
            open_base: Duration::from_millis(200),
            open_cap: Duration::from_secs(1),
            open_jitter: 0.0,
            ..BreakerConfig::default()
        },
        ..ResilienceConfig::default()
    };
    let (stack, breaker) = ResilientChannel::try_builder(config)?.build(channel);
    let mut client = HealthClient::new(stack);
    let mut transitions = breaker.transitions();

    // 1. Forced open: calls fail fast with CIRCUIT_OPEN and never reach the server.
    breaker.force_open();
    let refused = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert!(errors::is_circuit_open(&refused), "{refused:?}");
    println!("forced open: {:?} {}", refused.code(), refused.message());
    breaker.reset();

    // 2. An outage: three server failures in a row trip the breaker for 200 ms.
    outage.set_from_str("*:error=UNAVAILABLE")?;
    for _ in 0..3 {
        let failed = client
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(failed.code(), tonic::Code::Unavailable);
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    let until = breaker.open_until().expect("open: the period has an end");
    println!(
        "tripped; open for another {:?}",
        until.saturating_duration_since(tokio::time::Instant::now())
    );

    // 3. The outage ends; after the period the next call is the half-open probe and closes it.
    outage.clear();
    tokio::time::sleep_until(until).await;
    client.check(HealthCheckRequest::default()).await?;
    assert_eq!(breaker.state(), BreakerState::Closed);

    while let Ok(transition) = transitions.try_recv() {
        println!(
            "transition {} -> {} (open for {:?})",
            transition.from, transition.to, transition.open_for
        );
    }
    let stats = breaker.stats();
    println!(
        "opened {} times, {} calls rejected",
        stats.opened, stats.rejections
    );
    assert_eq!(stats.opened, 2, "forced once, tripped once");
    Ok(())
}
