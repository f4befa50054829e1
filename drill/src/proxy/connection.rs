//! The proxy's listener and what each accepted connection meets: the fault active when it
//! arrives decides whether it is reset, black-holed, answered UNAVAILABLE by the proxy itself,
//! or piped to the upstream ([`super::pump`]).

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::pump::pipe;
use super::{Fault, Shared, reset};

/// How long the proxy waits for the upstream to accept a connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts connections until the proxy is dropped; stops listening while the fault is `refuse`.
pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut listener = Some(listener);
    let mut faults = shared.fault.subscribe();
    let mut connections = JoinSet::new();
    loop {
        let refusing = matches!(*faults.borrow_and_update(), Fault::Refuse);
        if refusing {
            listener = None;
        } else if listener.is_none() {
            match TcpListener::bind(shared.local_addr).await {
                Ok(bound) => listener = Some(bound),
                Err(error) => {
                    tracing::warn!(%error, "proxy cannot listen again yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        tokio::select! {
            accepted = accept(listener.as_ref()) => match accepted {
                Ok(stream) => {
                    connections.spawn(connection(shared.clone(), stream));
                }
                Err(error) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(%error, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            changed = faults.changed() => if changed.is_err() { return },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

/// Counts a connection as active for as long as it lives.
struct Active(Arc<Shared>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(shared: Arc<Shared>, client: TcpStream) {
    shared.count(|c| &c.accepted, 1);
    shared.count(|c| &c.active, 1);
    let _active = Active(shared.clone());
    let _ = client.set_nodelay(true);
    let mut faults = shared.fault.subscribe();
    let fault = faults.borrow_and_update().clone();
    match fault {
        Fault::Reset | Fault::Refuse => {
            shared.count(|c| &c.resets, 1);
            reset(client);
        }
        Fault::Blackhole => blackhole(&shared, client, faults).await,
        Fault::Unavailable { pushback } => unavailable(&shared, client, faults, pushback).await,
        Fault::None
        | Fault::Latency { .. }
        | Fault::CutAfter { .. }
        | Fault::LoseResponses { .. } => {
            let connected = tokio::time::timeout(
                UPSTREAM_CONNECT_TIMEOUT,
                TcpStream::connect(&shared.upstream),
            )
            .await;
            match connected {
                Ok(Ok(upstream)) => pipe(&shared, client, upstream, faults).await,
                _ => {
                    shared.count(|c| &c.upstream_failures, 1);
                    reset(client);
                }
            }
        }
    }
}

/// A connection accepted while black-holed: swallow its bytes; reset it when the fault changes.
async fn blackhole(shared: &Shared, mut client: TcpStream, mut faults: watch::Receiver<Fault>) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        tokio::select! {
            read = client.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => shared.count(|c| &c.blackholed, n as u64),
            },
            changed = faults.changed() => {
                if changed.is_err() || !matches!(*faults.borrow_and_update(), Fault::Blackhole) {
                    shared.count(|c| &c.resets, 1);
                    reset(client);
                    return;
                }
            }
        }
    }
}

/// A connection accepted while `unavailable`: a minimal HTTP/2 server answers every call with a
/// trailers-only `UNAVAILABLE`; the connection is reset when the fault changes.
async fn unavailable(
    shared: &Arc<Shared>,
    client: TcpStream,
    mut faults: watch::Receiver<Fault>,
    pushback: Option<Duration>,
) {
    let counted = shared.clone();
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            counted.count(|c| &c.unavailable_answers, 1);
            if request.headers().contains_key("grpc-previous-rpc-attempts") {
                counted.count(|c| &c.unavailable_retries, 1);
            }
            let mut response = http::Response::new(http_body_util::Empty::<Bytes>::new());
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", http::HeaderValue::from_static("14"));
            headers.insert(
                "grpc-message",
                http::HeaderValue::from_static(
                    "unavailable%20%28injected%20by%20the%20fault%20proxy%29",
                ),
            );
            if let Some(pushback) = pushback {
                headers.insert(
                    "grpc-retry-pushback-ms",
                    http::HeaderValue::from(pushback.as_millis() as u64),
                );
            }
            async move { Ok::<_, Infallible>(response) }
        });
    let serving = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(client), service);
    tokio::select! {
        _ = serving => {}
        () = wait_until(&mut faults, |fault| !matches!(fault, Fault::Unavailable { .. })) => {
            // Dropping the connection closes it; the client reconnects to whatever comes next.
            shared.count(|c| &c.resets, 1);
        }
    }
}

async fn wait_until(faults: &mut watch::Receiver<Fault>, done: impl Fn(&Fault) -> bool) {
    loop {
        if faults.changed().await.is_err() || done(&faults.borrow_and_update()) {
            return;
        }
    }
}
