//! A TCP fault proxy for gRPC over cleartext HTTP/2, to put between approval-svc and order-svc.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use lab_drill::proxy::{Fault, Proxy};
//! use std::time::Duration;
//!
//! let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), "127.0.0.1:50051").await?;
//! // point approval-svc at proxy.url() …
//! proxy.handle().set_fault(Fault::Latency {
//!     base: Duration::from_millis(1500),
//!     jitter: Duration::from_millis(100),
//! });
//! // …
//! proxy.handle().clear();
//! println!("{}", proxy.handle().stats());
//! # Ok(()) }
//! ```
//!
//! The proxy is a plain byte pump, with one exception: it follows HTTP/2 frame boundaries (not
//! their contents) so it can count requests and lose a response exactly when the upstream starts
//! sending it — after the upstream did the work. [`Fault::Unavailable`] answers calls itself with
//! a minimal HTTP/2 server. See [`Fault`] for every fault and its text form.
//!
//! # Admin protocol
//!
//! [`Proxy::serve_admin`] (and [`run_proxy`] with an admin address) listens on a TCP port for
//! drills: one command per line, one reply line per command, `ok …` or `err …`.
//!
//! | command | effect |
//! | --- | --- |
//! | `latency 200ms 50ms` | responses delayed by 200 ms ± 50 ms |
//! | `blackhole` | accept, never answer |
//! | `reset` | reset live and new connections |
//! | `cut 100` | reset each connection after 100 response bytes |
//! | `lose 0.5` | lose half of the responses after the upstream did the work |
//! | `unavailable [100ms]` | answer every call UNAVAILABLE (with that retry pushback) |
//! | `refuse` | stop listening until the next command |
//! | `clear` (or `none`) | pass traffic unchanged |
//! | `status` | the active fault and the counters ([`ProxyStats`]) |
//! | `help` | the command list |
//!
//! Fault commands answer `ok fault=<fault>`; for example `printf 'lose 1\n' | nc -q1 127.0.0.1
//! 7000`.

mod connection;
mod fault;
mod frames;
mod pump;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use fault::{Fault, ParseFaultError};

use connection::accept_loop;

/// A running proxy. Dropping it stops listening and closes every connection.
#[derive(Debug)]
pub struct Proxy {
    handle: ProxyHandle,
    accept: JoinHandle<()>,
    admin: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    /// Listens on `listen` (port 0 picks one) and forwards to `upstream` (`host:port`), with
    /// the random draws (jitter, lost responses) seeded by 0.
    pub async fn start(listen: SocketAddr, upstream: impl Into<String>) -> io::Result<Self> {
        Self::start_seeded(listen, upstream, 0).await
    }

    /// [`Proxy::start`] with a chosen seed for the random draws, so a run can be repeated.
    /// Concurrent connections draw from one generator, so the sequence of draws is fixed but not
    /// which connection gets which.
    pub async fn start_seeded(
        listen: SocketAddr,
        upstream: impl Into<String>,
        seed: u64,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let (fault, _) = watch::channel(Fault::None);
        let shared = Arc::new(Shared {
            fault,
            upstream: upstream.into(),
            local_addr,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            counters: Counters::default(),
        });
        let accept = tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(Self {
            handle: ProxyHandle { shared },
            accept,
            admin: Mutex::new(Vec::new()),
        })
    }

    /// A handle to change the fault and read the counters; cheap to clone.
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.shared.local_addr
    }

    /// `http://<local_addr>`, the URL to give a gRPC client.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr())
    }

    /// Serves the line-based admin protocol (see the module docs) on `admin` until the proxy is
    /// dropped; returns the bound address.
    pub async fn serve_admin(&self, admin: SocketAddr) -> io::Result<SocketAddr> {
        let listener = TcpListener::bind(admin).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(admin_loop(listener, self.handle()));
        self.admin
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(task);
        Ok(addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.accept.abort();
        for task in self
            .admin
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// Controls a running [`Proxy`]; all clones control the same proxy.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl ProxyHandle {
    /// Makes `fault` the active fault, at once, for new and live connections.
    pub fn set_fault(&self, fault: Fault) {
        tracing::info!(%fault, proxy = %self.shared.local_addr, "fault set");
        self.shared.fault.send_replace(fault);
    }

    /// Back to passing traffic unchanged (`Fault::None`).
    pub fn clear(&self) {
        self.set_fault(Fault::None);
    }

    /// The active fault.
    pub fn fault(&self) -> Fault {
        self.shared.fault.borrow().clone()
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The upstream `host:port`.
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// A snapshot of the counters (they only grow, except `connections_active`).
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProxyStats {
            fault: self.fault(),
            connections_accepted: get(&c.accepted),
            connections_active: get(&c.active),
            upstream_connect_failures: get(&c.upstream_failures),
            requests: get(&c.requests),
            bytes_to_upstream: get(&c.bytes_to_upstream),
            bytes_to_client: get(&c.bytes_to_client),
            connections_reset: get(&c.resets),
            connections_cut: get(&c.cuts),
            responses_lost: get(&c.responses_lost),
            bytes_blackholed: get(&c.blackholed),
            unavailable_answers: get(&c.unavailable_answers),
            unavailable_retries: get(&c.unavailable_retries),
        }
    }

    /// Runs one admin-protocol command (see the module docs) and returns its reply line.
    pub fn command(&self, line: &str) -> String {
        match line.trim() {
            "status" => format!("ok {}", self.stats()),
            "help" => format!("ok commands: status, help, {}", fault_help()),
            text => match text.parse::<Fault>() {
                Ok(fault) => {
                    self.set_fault(fault.clone());
                    format!("ok fault={fault}")
                }
                Err(error) => format!("err {error}"),
            },
        }
    }
}

fn fault_help() -> &'static str {
    "clear|none, latency BASE [JITTER], blackhole, reset, cut BYTES, lose [PROBABILITY], \
     unavailable [PUSHBACK], refuse"
}

/// Counters of a proxy, as read by [`ProxyHandle::stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyStats {
    /// The active fault.
    pub fault: Fault,
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_active: u64,
    /// Connections closed because the upstream could not be reached.
    pub upstream_connect_failures: u64,
    /// gRPC calls (HTTP/2 streams opened by the client) forwarded to the upstream.
    pub requests: u64,
    /// Bytes forwarded to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes forwarded to the client.
    pub bytes_to_client: u64,
    /// Connections reset by a fault (`reset`, `refuse`, `unavailable`, leaving `blackhole`).
    pub connections_reset: u64,
    /// Connections reset by `cut` after their byte allowance.
    pub connections_cut: u64,
    /// Responses lost by `lose` (each one reset its connection).
    pub responses_lost: u64,
    /// Bytes swallowed by `blackhole`.
    pub bytes_blackholed: u64,
    /// Calls answered UNAVAILABLE by the proxy itself.
    pub unavailable_answers: u64,
    /// Of those, calls that carried `grpc-previous-rpc-attempts` (client retries).
    pub unavailable_retries: u64,
}

impl fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fault={} accepted={} active={} upstream_failures={} requests={} reset={} cut={} \
             lost={} blackholed_bytes={} unavailable={} unavailable_retries={} up_bytes={} \
             down_bytes={}",
            self.fault,
            self.connections_accepted,
            self.connections_active,
            self.upstream_connect_failures,
            self.requests,
            self.connections_reset,
            self.connections_cut,
            self.responses_lost,
            self.bytes_blackholed,
            self.unavailable_answers,
            self.unavailable_retries,
            self.bytes_to_upstream,
            self.bytes_to_client,
        )
    }
}

/// What [`run_proxy`] needs: the `lab proxy` subcommand's flags.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Where clients connect (approval-svc's `--order-svc-url` points here).
    pub listen: SocketAddr,
    /// Where traffic goes, `host:port` (order-svc).
    pub upstream: String,
    /// Where the admin protocol listens; none to run without one.
    pub admin: Option<SocketAddr>,
    /// Seed of the random draws (latency jitter, lost responses).
    pub seed: u64,
    /// The fault active from the start.
    pub initial_fault: Fault,
}

/// Runs a proxy (and its admin port) until `shutdown` resolves: the body of `lab proxy`. Logs
/// `proxy listening on <addr>` and, with an admin port, `admin listening on <addr>`.
pub async fn run_proxy(
    options: ProxyOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let proxy = Proxy::start_seeded(options.listen, options.upstream.clone(), options.seed).await?;
    proxy.handle().set_fault(options.initial_fault);
    tracing::info!(upstream = %options.upstream, "proxy listening on {}", proxy.local_addr());
    if let Some(admin) = options.admin {
        let addr = proxy.serve_admin(admin).await?;
        tracing::info!("admin listening on {addr}");
    }
    shutdown.await;
    tracing::info!(stats = %proxy.handle().stats(), "proxy stopped");
    Ok(())
}

#[derive(Debug)]
struct Shared {
    fault: watch::Sender<Fault>,
    upstream: String,
    local_addr: SocketAddr,
    rng: Mutex<StdRng>,
    counters: Counters,
}

impl Shared {
    fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64, n: u64) {
        counter(&self.counters).fetch_add(n, Ordering::Relaxed);
    }

    /// A uniform draw in `[0, 1)`.
    fn draw(&self) -> f64 {
        self.rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .random::<f64>()
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    active: AtomicU64,
    upstream_failures: AtomicU64,
    requests: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_to_client: AtomicU64,
    resets: AtomicU64,
    cuts: AtomicU64,
    responses_lost: AtomicU64,
    blackholed: AtomicU64,
    unavailable_answers: AtomicU64,
    unavailable_retries: AtomicU64,
}

/// Closes with a TCP RST rather than a FIN: what a fault's peer sees as a dropped connection.
fn reset(stream: tokio::net::TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn admin_loop(listener: TcpListener, handle: ProxyHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let (reader, mut writer) = stream.into_split();
            let mut lines = BufReader::new(reader.take(64 * 1024)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "quit" {
                    return;
                }
                if line.trim().is_empty() {
                    continue;
                }
                let reply = handle.command(&line);
                if writer
                    .write_all(format!("{reply}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}
