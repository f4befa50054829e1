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

mod fault;
mod frames;

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use fault::{Fault, ParseFaultError};
use frames::{END_STREAM, FrameScanner, HEADERS, RST_STREAM};

/// How long the proxy waits for the upstream to accept a connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Chunks queued per direction before reading pauses (back-pressure).
const QUEUE_CHUNKS: usize = 64;

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

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
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

/// Closes with a TCP RST rather than a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
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

/// One chunk on its way to a writer.
enum Chunk {
    /// Bytes to write once `release_at` has passed.
    Data { bytes: Vec<u8>, release_at: Instant },
    /// Reset the connection (after everything queued before it).
    Reset,
}

/// Why a pump stopped early.
enum Stop {
    /// A fault asked for a reset.
    Reset,
    /// A peer went away abruptly.
    Io,
}

/// Pumps bytes both ways through the active fault until both directions end or a fault resets
/// the connection.
async fn pipe(
    shared: &Shared,
    mut client: TcpStream,
    mut upstream: TcpStream,
    mut faults: watch::Receiver<Fault>,
) {
    let _ = upstream.set_nodelay(true);
    let tainted = AtomicBool::new(false);
    let reset_both = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let (to_upstream, for_upstream) = mpsc::channel(QUEUE_CHUNKS);
        let (to_client, for_client) = mpsc::channel(QUEUE_CHUNKS);
        let (request_faults, response_faults) = (faults.clone(), faults.clone());
        let pumps = async {
            tokio::try_join!(
                forward_requests(shared, client_read, to_upstream, request_faults, &tainted),
                write_queued(upstream_write, for_upstream),
                forward_responses(shared, upstream_read, to_client, response_faults, &tainted),
                write_queued(client_write, for_client),
            )
        };
        tokio::select! {
            ended = pumps => ended.is_err(),
            () = killed(&mut faults, &tainted) => {
                shared.count(|c| &c.resets, 1);
                true
            }
        }
    };
    if reset_both {
        reset(client);
        reset(upstream);
    }
}

/// Resolves when a fault change must reset a live connection.
async fn killed(faults: &mut watch::Receiver<Fault>, tainted: &AtomicBool) {
    loop {
        if faults.changed().await.is_err() {
            return;
        }
        match *faults.borrow_and_update() {
            Fault::Reset | Fault::Refuse | Fault::Unavailable { .. } => return,
            Fault::Blackhole => {}
            _ if tainted.load(Ordering::Relaxed) => return,
            _ => {}
        }
    }
}

async fn write_queued(
    mut writer: impl tokio::io::AsyncWrite + Unpin,
    mut queue: mpsc::Receiver<Chunk>,
) -> Result<(), Stop> {
    while let Some(chunk) = queue.recv().await {
        match chunk {
            Chunk::Data { bytes, release_at } => {
                tokio::time::sleep_until(release_at).await;
                writer.write_all(&bytes).await.map_err(|_| Stop::Io)?;
            }
            Chunk::Reset => return Err(Stop::Reset),
        }
    }
    // The reading side ended cleanly: pass the half-close on.
    let _ = writer.shutdown().await;
    Ok(())
}

async fn forward_requests(
    shared: &Shared,
    mut reader: impl tokio::io::AsyncRead + Unpin,
    queue: mpsc::Sender<Chunk>,
    faults: watch::Receiver<Fault>,
    tainted: &AtomicBool,
) -> Result<(), Stop> {
    let mut scanner = FrameScanner::client_to_server();
    let mut last_stream = 0;
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let n = reader.read(&mut buffer).await.map_err(|_| Stop::Io)?;
        if n == 0 {
            return Ok(());
        }
        let chunk = &buffer[..n];
        if matches!(*faults.borrow(), Fault::Blackhole) {
            tainted.store(true, Ordering::Relaxed);
            shared.count(|c| &c.blackholed, n as u64);
            continue;
        }
        scanner.scan(chunk, |frame| {
            // Client streams open in increasing id order; a later HEADERS on the same stream
            // would be trailers, which gRPC clients do not send anyway.
            if frame.kind == HEADERS && frame.stream_id > last_stream {
                last_stream = frame.stream_id;
                shared.count(|c| &c.requests, 1);
            }
            false
        });
        shared.count(|c| &c.bytes_to_upstream, n as u64);
        let data = Chunk::Data {
            bytes: chunk.to_vec(),
            release_at: Instant::now(),
        };
        queue.send(data).await.map_err(|_| Stop::Io)?;
    }
}

async fn forward_responses(
    shared: &Shared,
    mut reader: impl tokio::io::AsyncRead + Unpin,
    queue: mpsc::Sender<Chunk>,
    faults: watch::Receiver<Fault>,
    tainted: &AtomicBool,
) -> Result<(), Stop> {
    let mut scanner = FrameScanner::server_to_client();
    // Streams whose response has started, so only a response's first HEADERS frame draws.
    let mut started: HashSet<u32> = HashSet::new();
    let mut forwarded: u64 = 0;
    let mut last_release = Instant::now();
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let n = reader.read(&mut buffer).await.map_err(|_| Stop::Io)?;
        if n == 0 {
            return Ok(());
        }
        let fault = faults.borrow().clone();
        if matches!(fault, Fault::Blackhole) {
            tainted.store(true, Ordering::Relaxed);
            shared.count(|c| &c.blackholed, n as u64);
            continue;
        }
        let mut chunk = &buffer[..n];
        let mut reset_after = false;

        let lose = match fault {
            Fault::LoseResponses { probability } => Some(probability),
            _ => None,
        };
        let cut_at = scanner.scan(chunk, |frame| {
            if started.len() > 10_000 {
                started.clear();
            }
            let first_headers =
                frame.kind == HEADERS && frame.stream_id != 0 && started.insert(frame.stream_id);
            if frame.flags & END_STREAM != 0 || frame.kind == RST_STREAM {
                started.remove(&frame.stream_id);
            }
            match lose {
                Some(probability) if first_headers => shared.draw() < probability,
                _ => false,
            }
        });
        if let Some(at) = cut_at {
            shared.count(|c| &c.responses_lost, 1);
            chunk = &chunk[..at];
            reset_after = true;
        }
        if let Fault::CutAfter { bytes } = fault {
            let room = bytes.saturating_sub(forwarded);
            if chunk.len() as u64 >= room {
                chunk = &chunk[..room as usize];
                if !reset_after {
                    shared.count(|c| &c.cuts, 1);
                }
                reset_after = true;
            }
        }

        let mut release_at = Instant::now();
        if let Fault::Latency { base, jitter } = fault {
            let spread = jitter.as_secs_f64() * (2.0 * shared.draw() - 1.0);
            let delay = (base.as_secs_f64() + spread).max(0.0);
            release_at += Duration::from_secs_f64(delay);
        }
        // Never overtake an earlier chunk: the byte order is the stream.
        release_at = release_at.max(last_release);
        last_release = release_at;

        if !chunk.is_empty() {
            forwarded += chunk.len() as u64;
            shared.count(|c| &c.bytes_to_client, chunk.len() as u64);
            let data = Chunk::Data {
                bytes: chunk.to_vec(),
                release_at,
            };
            queue.send(data).await.map_err(|_| Stop::Io)?;
        }
        if reset_after {
            // The writer resets after the bytes queued before; this side is done.
            let _ = queue.send(Chunk::Reset).await;
            return Ok(());
        }
    }
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
