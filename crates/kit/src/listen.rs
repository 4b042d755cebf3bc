//! Accepting connections: every listener, plaintext or TLS, gives a new connection
//! one deadline to speak. Its TLS handshake (if any) and the 24-byte HTTP/2 preface
//! must both arrive within `server.handshake_timeout_seconds`, or the connection is
//! closed. Without it a peer that connects and says nothing holds a file descriptor
//! forever, and enough of them starve the health checks.
//!
//! The accept loop survives running out of file descriptors (EMFILE, ENFILE): it logs
//! once, backs off (up to a second) and keeps accepting, so connections already open
//! (health probes among them) keep being served.
//!
//! Listeners are TCP ports or Unix sockets ([`Acceptor`]); a Unix socket's peer is
//! reported as [`LOCAL_PEER`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::tls::ServerTls;

/// What every HTTP/2 client sends first (RFC 9113, 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Connections that have spoken, waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 128;
/// Longest pause of the accept loop after a failed accept.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A connection whose first bytes (the preface) were read to see that it speaks;
/// they are handed to the server first, as if never read.
pub struct Spoken<T> {
    inner: T,
    peer: SocketAddr,
    first: [u8; 24],
    len: usize,
    pos: usize,
}

impl<T: AsyncRead + Unpin> AsyncRead for Spoken<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.len {
            let n = (this.len - this.pos).min(buf.remaining());
            buf.put_slice(&this.first[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Spoken<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Where a call's connection came from; in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl<T> Connected for Spoken<T> {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        Peer(self.peer)
    }
}

/// Reads until the preface is complete, or until the bytes stop matching it (the
/// server then answers whatever was said).
async fn hear<T: AsyncRead + Unpin>(mut io: T, peer: SocketAddr) -> io::Result<Spoken<T>> {
    let mut first = [0u8; 24];
    let mut len = 0;
    while len < first.len() {
        let n = io.read(&mut first[len..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        if first[..len] != PREFACE[..len] {
            break;
        }
    }
    Ok(Spoken {
        inner: io,
        peer,
        first,
        len,
        pos: 0,
    })
}

/// The peer of a connection over a Unix socket: this host.
pub const LOCAL_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A listener the accept loop takes connections from: a TCP port or a Unix socket.
pub trait Acceptor: Send + 'static {
    /// One accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and where it came from.
    fn accept_one(&self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Acceptor for TcpListener {
    type Io = TcpStream;
    async fn accept_one(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (tcp, peer) = self.accept().await?;
        // Small answers must not wait for Nagle (40 ms stalls against delayed ACKs).
        let _ = tcp.set_nodelay(true);
        Ok((tcp, peer))
    }
}

impl Acceptor for UnixListener {
    type Io = UnixStream;
    async fn accept_one(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, LOCAL_PEER))
    }
}

/// When the server stops taking connections: once the value is `true`, the listener
/// is closed, so new connections are refused by the kernel rather than accepted and
/// dropped. A closed channel never stops it.
pub type Closing = tokio::sync::watch::Receiver<bool>;

/// The plaintext connections of `listener` that speak within `deadline`, until
/// `closing`.
pub fn incoming_plain<L: Acceptor>(
    listener: L,
    deadline: Duration,
    closing: Closing,
) -> ReceiverStream<Result<Spoken<L::Io>, io::Error>> {
    accept_loop(listener, deadline, closing, |tcp, peer| async move {
        hear(tcp, peer).await
    })
}

/// The TLS connections of `listener` whose handshake (with the files current when it
/// was accepted) and preface complete within `deadline`.
pub fn incoming_tls(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    deadline: Duration,
    closing: Closing,
) -> ReceiverStream<Result<Spoken<TlsStream<TcpStream>>, io::Error>> {
    accept_loop(listener, deadline, closing, move |tcp, peer| {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        async move { hear(acceptor.accept(tcp).await?, peer).await }
    })
}

/// Accepts until the stream is dropped; each connection is prepared by `speak` in a
/// task of its own, so a slow or silent peer holds up no one.
fn accept_loop<L, T, F, Fut>(
    listener: L,
    deadline: Duration,
    mut closing: Closing,
    speak: F,
) -> ReceiverStream<Result<T, io::Error>>
where
    L: Acceptor,
    T: Send + 'static,
    F: Fn(L::Io, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = io::Result<T>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
    tokio::spawn(async move {
        let mut backoff = Duration::ZERO;
        let closed = async move {
            // A dropped sender never closes the listener.
            if closing.wait_for(|c| *c).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(closed);
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                _ = &mut closed => return,
                a = listener.accept_one() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => {
                    backoff = Duration::ZERO;
                    a
                }
                Err(e) => {
                    // EMFILE and the like: pause rather than spin; say so once a streak.
                    if backoff.is_zero() {
                        tracing::warn!(error = %e, "accept failed (out of file descriptors?): backing off");
                        crate::metrics::accept_failed();
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let tx = tx.clone();
            let ready = speak(tcp, peer);
            tokio::spawn(async move {
                match tokio::time::timeout(deadline, ready).await {
                    Ok(Ok(io)) => {
                        let _ = tx.send(Ok(io)).await;
                    }
                    Ok(Err(e)) => refused(peer, &e.to_string()),
                    Err(_) => refused(peer, "did not speak in time"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

fn refused(peer: SocketAddr, why: &str) {
    // Debug: port scanners, load balancer probes and plaintext clients are routine.
    tracing::debug!(peer = %peer.ip(), reason = why, "connection closed before it spoke");
    crate::metrics::connection_silent();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn health_server(deadline: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(incoming_plain(
                    listener,
                    deadline,
                    tokio::sync::watch::channel(false).1,
                )),
        );
        addr
    }

    /// Waits for the peer to close; the time it took.
    async fn closed_within(mut s: TcpStream, limit: Duration) -> Option<Duration> {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(limit, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                Ok(Ok(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    #[tokio::test]
    async fn silent_connections_are_closed_and_speaking_ones_served() {
        let addr = health_server(Duration::from_millis(500)).await;
        let mut silent = vec![];
        for _ in 0..50 {
            silent.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // Half a preface, then nothing: also silent.
        let mut half = TcpStream::connect(addr).await.expect("connect");
        half.write_all(&PREFACE[..10]).await.expect("write");
        silent.push(half);
        for s in silent {
            assert!(
                closed_within(s, Duration::from_secs(10)).await.is_some(),
                "a silent connection stays open"
            );
        }
        // A real client still gets its answer, the preface replayed to the server.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let answer = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health answers");
        assert_eq!(answer.get_ref().status, 1, "SERVING");
    }

    #[tokio::test]
    async fn a_connection_that_speaks_is_not_closed_by_the_deadline() {
        let addr = health_server(Duration::from_millis(300)).await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("first");
        tokio::time::sleep(Duration::from_millis(900)).await;
        client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("the same connection still serves past the deadline");
    }
}
