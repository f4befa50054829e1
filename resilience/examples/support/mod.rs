//! The server every example calls: an in-process `grpc.health.v1.Health` service on
//! `127.0.0.1:0` behind a [`FaultLayer`], so the examples need nothing running.

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

use resilience::FaultLayer;

/// Serves the health service behind `faults` in the background; returns a lazy channel to it.
pub(crate) async fn serve(faults: FaultLayer) -> Result<Channel, Box<dyn std::error::Error>> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .layer(faults)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Ok(Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy())
}
