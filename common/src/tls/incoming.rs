//! The connections a gRPC server accepts: plain TCP, or TLS once the handshake succeeded.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

use super::ServerTls;

/// How long a client may take to complete its TLS handshake; one that stalls holds a task
/// and a socket, nothing else.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const READY_BACKLOG: usize = 64;

/// An accepted connection.
#[derive(Debug)]
pub enum Conn {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS, handshake done (client certificate verified under mutual TLS).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl Connected for Conn {
    // The TCP addresses for both kinds, so `Request::remote_addr` answers either way.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        let tcp = self.tcp();
        TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: tcp.peer_addr().ok(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The stream of accepted connections to give `serve_with_incoming_shutdown`.
///
/// With TLS, handshakes run in their own tasks (a slow or hostile client does not hold up the
/// others), and a failed one (no client certificate, one from another CA, not TLS at all) is
/// logged and dropped: the server never sees it. Dropping the stream (tonic does at shutdown)
/// closes the listening socket and abandons the handshakes in progress.
pub struct Incoming {
    inner: Inner,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Plain(_) => "plain",
            Inner::Tls(_) => "tls",
        };
        f.debug_struct("Incoming").field("kind", &kind).finish()
    }
}

enum Inner {
    Plain(TcpIncoming),
    Tls(mpsc::Receiver<Conn>),
}

impl Incoming {
    /// Plain connections from `tcp`, or TLS ones with `tls`.
    pub fn new(tcp: TcpIncoming, tls: Option<&ServerTls>) -> Self {
        let inner = match tls {
            None => Inner::Plain(tcp),
            Some(tls) => {
                let (ready, receiver) = mpsc::channel(READY_BACKLOG);
                tokio::spawn(accept(tcp, tls.acceptor(), ready));
                Inner::Tls(receiver)
            }
        };
        Self { inner }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.get_mut().inner {
            Inner::Plain(tcp) => Pin::new(tcp)
                .poll_next(cx)
                .map(|accepted| accepted.map(|result| result.map(Conn::Plain))),
            Inner::Tls(ready) => ready.poll_recv(cx).map(|conn| conn.map(Ok)),
        }
    }
}

async fn accept(mut tcp: TcpIncoming, acceptor: TlsAcceptor, ready: mpsc::Sender<Conn>) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            () = ready.closed() => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            accepted = tcp.next() => match accepted {
                None => return,
                Some(Err(error)) => tracing::warn!(%error, "accepting a connection failed"),
                Some(Ok(stream)) => {
                    handshakes.spawn(handshake(acceptor.clone(), stream, ready.clone()));
                }
            },
        }
    }
}

async fn handshake(acceptor: TlsAcceptor, stream: TcpStream, ready: mpsc::Sender<Conn>) {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            // The server has stopped taking connections when this fails; the connection closes.
            let _ = ready.send(Conn::Tls(Box::new(tls))).await;
        }
        Ok(Err(error)) => tracing::info!(?peer, %error, "TLS handshake refused"),
        Err(_) => tracing::info!(?peer, ?HANDSHAKE_TIMEOUT, "TLS handshake timed out"),
    }
}
