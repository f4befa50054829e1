//! The server side: a [`FaultLayer`] around a tonic server injects the faults of its
//! [`FaultPlan`], changed at run time through the [`FaultHandle`](resilience::FaultHandle).
//!
//! ```text
//! cargo run -p resilience --example fault_plan
//! ```
//!
//! A plain tonic client (no resilience stack, so nothing is retried) calls an in-process
//! `grpc.health.v1.Health` service under three plans, in the text form the services read from
//! their `FAULTS` variable: a delay, a lost response, and a failure of the first try only.

use std::time::{Duration, Instant};

use resilience::errors::{self, reason};
use resilience::metadata::GRPC_PREVIOUS_RPC_ATTEMPTS;
use resilience::{FaultLayer, FaultPlan};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

mod support;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let faults = FaultLayer::disabled();
    let handle = faults.handle();
    let channel = support::serve(faults).await?;
    let mut client = HealthClient::new(channel);

    // No plan: straight through.
    client.check(HealthCheckRequest::default()).await?;

    // A delay on every Check.
    handle.set_from_str("Check:delay=100ms")?;
    let started = Instant::now();
    client.check(HealthCheckRequest::default()).await?;
    let took = started.elapsed();
    println!("delay: answered after {took:?}");
    assert!(took >= Duration::from_millis(100));

    // A lost response: the handler ran, the client is told UNAVAILABLE.
    let plan: FaultPlan = "Check:drop_response".parse()?;
    println!("plan in force: {plan}");
    handle.set(plan);
    let lost = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    println!("drop_response: {:?} {}", lost.code(), lost.message());
    assert_eq!(lost.code(), tonic::Code::Unavailable);
    assert_eq!(
        errors::reason_of(&lost).as_deref(),
        Some(reason::FAULT_INJECTED)
    );

    // One call's story: its first try fails, its retry (attempt 2) goes through.
    handle.set_from_str("Check@1:error=INTERNAL")?;
    let first = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(first.code(), tonic::Code::Internal);
    let mut retry = tonic::Request::new(HealthCheckRequest::default());
    retry
        .metadata_mut()
        .insert(GRPC_PREVIOUS_RPC_ATTEMPTS, "1".parse()?);
    client.check(retry).await?;
    println!("first try: {:?}; retry: OK", first.code());

    handle.clear();
    println!("{} faults injected", handle.injected());
    assert_eq!(handle.injected(), 3);
    Ok(())
}
