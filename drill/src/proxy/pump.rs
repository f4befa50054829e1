//! The byte pump of a piped connection: both directions through the active fault (latency,
//! a byte allowance, lost responses, a black hole that taints the connection), following the
//! HTTP/2 frame boundaries to count requests and to lose a response exactly where it starts.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::frames::{END_STREAM, FrameScanner, HEADERS, RST_STREAM};
use super::{Fault, Shared, reset};

/// Chunks queued per direction before reading pauses (back-pressure).
const QUEUE_CHUNKS: usize = 64;

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
pub(super) async fn pipe(
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
        let seen_faults = faults.clone();
        let link = Link {
            shared,
            faults: &seen_faults,
            tainted: &tainted,
        };
        let pumps = async {
            tokio::try_join!(
                forward_requests(link, client_read, to_upstream),
                write_queued(upstream_write, for_upstream),
                forward_responses(link, upstream_read, to_client),
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
    link: Link<'_>,
    mut reader: impl tokio::io::AsyncRead + Unpin,
    queue: mpsc::Sender<Chunk>,
) -> Result<(), Stop> {
    let shared = link.shared;
    let mut scanner = FrameScanner::client_to_server();
    let mut last_stream = 0;
    let mut buffer = vec![0; 16 * 1024];
    while let Some((n, _)) = link.read_forwardable(&mut reader, &mut buffer).await? {
        let chunk = &buffer[..n];
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
    Ok(())
}

async fn forward_responses(
    link: Link<'_>,
    mut reader: impl tokio::io::AsyncRead + Unpin,
    queue: mpsc::Sender<Chunk>,
) -> Result<(), Stop> {
    let shared = link.shared;
    let mut scanner = FrameScanner::server_to_client();
    // Streams whose response has started, so only a response's first HEADERS frame draws.
    let mut started: HashSet<u32> = HashSet::new();
    let mut forwarded: u64 = 0;
    let mut last_release = Instant::now();
    let mut buffer = vec![0; 16 * 1024];
    while let Some((n, fault)) = link.read_forwardable(&mut reader, &mut buffer).await? {
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
    Ok(())
}

/// What the two directions of one piped connection share: the proxy's state, the active fault,
/// and whether a black hole swallowed bytes.
#[derive(Clone, Copy)]
struct Link<'a> {
    shared: &'a Shared,
    faults: &'a watch::Receiver<Fault>,
    tainted: &'a AtomicBool,
}

impl Link<'_> {
    /// Reads the next chunk to forward and the fault it meets; `None` when the peer ended
    /// cleanly. Chunks read while black-holed are swallowed, and taint the connection: leaving
    /// the black hole then resets it, as the peer's bytes are gone.
    async fn read_forwardable(
        self,
        reader: &mut (impl tokio::io::AsyncRead + Unpin),
        buffer: &mut [u8],
    ) -> Result<Option<(usize, Fault)>, Stop> {
        loop {
            let n = reader.read(buffer).await.map_err(|_| Stop::Io)?;
            if n == 0 {
                return Ok(None);
            }
            let fault = self.faults.borrow().clone();
            if !matches!(fault, Fault::Blackhole) {
                return Ok(Some((n, fault)));
            }
            self.tainted.store(true, Ordering::Relaxed);
            self.shared.count(|c| &c.blackholed, n as u64);
        }
    }
}
