//! Several scripted order services on loopback, each in its own runtime so that one can be
//! killed like a process (`kill -9`: every connection drops, the port refuses) or drained like
//! one receiving SIGTERM (GOAWAY, in-flight calls finish), and started again on the same port.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tonic::transport::Endpoint;
use tonic::transport::server::TcpIncoming;

use crate::common::{Script, order_service};

/// One order-svc instance.
pub(crate) struct Instance {
    pub addr: SocketAddr,
    pub script: Arc<Script>,
    runtime: Option<tokio::runtime::Runtime>,
    drain: Option<oneshot::Sender<()>>,
    drained: Option<oneshot::Receiver<()>>,
}

impl Instance {
    /// Starts an instance on a free loopback port.
    pub(crate) fn start() -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), Script::new())
    }

    /// Starts an instance on `addr` (e.g. where a killed one listened), answering from `script`.
    pub(crate) fn start_at(addr: SocketAddr, script: Arc<Script>) -> Self {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (drain, drain_signal) = oneshot::channel::<()>();
        let (drained_tx, drained) = oneshot::channel::<()>();
        let service = order_service(script.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = drain_signal.await;
                    },
                )
                .await;
            let _ = drained_tx.send(());
        });
        Self {
            addr,
            script,
            runtime: Some(runtime),
            drain: Some(drain),
            drained: Some(drained),
        }
    }

    pub(crate) fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(self.url()).unwrap()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Like `kill -9`: the listener and every connection close at once, calls in flight die.
    pub(crate) fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Like SIGTERM: stop accepting, GOAWAY, finish the calls in flight; resolves when done.
    pub(crate) async fn drain(&mut self) {
        if let Some(drain) = self.drain.take() {
            let _ = drain.send(());
        }
        if let Some(drained) = self.drained.take() {
            let _ = drained.await;
        }
        self.kill();
    }

    /// Starts a new instance where this one listened, with the same script.
    pub(crate) fn restart(&mut self) {
        self.kill();
        *self = Self::start_at(self.addr, self.script.clone());
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}
