//! The full client stack against a flaky server: every call's first two tries fail with
//! UNAVAILABLE, and the retry layer gets each call through on its third attempt.
//!
//! ```text
//! cargo run -p resilience --example stack
//! ```
//!
//! The server is an in-process `grpc.health.v1.Health` service behind a [`FaultLayer`] scripted
//! per attempt (`Check@1` and `Check@2` fail, read from `grpc-previous-rpc-attempts`). `Check`
//! sends no idempotency key, so the client lists it in `idempotent_rpcs`: without that a
//! failure the server answered might mean the work was done, and only surely-unsent attempts
//! would be retried. The retry backoff draws from a seeded RNG, so every run waits the same.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use resilience::{FaultLayer, FaultPlan, ResilienceConfig, ResilientChannel, RetryConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

mod support;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The flaky server: the first two tries of every Check fail.
    let plan: FaultPlan = "Check@1:error=UNAVAILABLE;Check@2:error=UNAVAILABLE".parse()?;
    let faults = FaultLayer::with_plan(plan);
    let injected = faults.handle();
    let channel = support::serve(faults).await?;

    // The client: deadline, budgeted retries, breaker, shedding, per-attempt timeout.
    let config = ResilienceConfig {
        client: "example".into(),
        deadline: Duration::from_secs(2),
        attempt_timeout: Duration::from_millis(500),
        retry: RetryConfig {
            max_attempts: 3,
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(50),
            idempotent_rpcs: vec!["Check".into()],
            ..RetryConfig::default()
        },
        ..ResilienceConfig::default()
    };
    let (stack, breaker) = ResilientChannel::try_builder(config)?
        .from_rng(&mut StdRng::seed_from_u64(15))
        .build(channel);
    let stats = stack.retry_stats();
    let mut client = HealthClient::new(stack);

    for call in 1..=3 {
        let answer = client.check(HealthCheckRequest::default()).await?;
        println!("call {call}: {:?}", answer.into_inner().status());
    }
    println!(
        "{} retries, {} faults injected, breaker {}",
        stats.retries(),
        injected.injected(),
        breaker.state()
    );
    assert_eq!(stats.retries(), 6, "two retries per call");
    assert_eq!(injected.injected(), 6);
    Ok(())
}
