//! The punched path's byte stream: the one QUIC bidirectional stream as an
//! `AsyncRead + AsyncWrite` ([`QuicStream`]) that the transfer engine runs on directly
//! (with the peer's key QUIC's handshake verified, [`QuicStream::peer_key`]; no TLS
//! inside), a chunk writer for file data, and as a blocking reader ([`BlockingQuic`]) for the engine's bulk
//! receive thread. No loopback hop: the engine's bytes go straight into quinn's buffers.
//!
//! Half-closes map onto the stream: the engine's shutdown finishes our direction, the
//! peer's finish reads as the end of the stream. When the engine lets go of it, a task
//! waits until both directions are done (our data acknowledged, theirs read to its
//! end; bounded by [`LINGER`]), then closes the connection and drains the endpoint.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use quinn::{Connection, ConnectionError, Endpoint, ReadError, RecvStream, SendStream, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::identity::PublicKey;
use crate::transfer::secure::ed25519_key_of;

/// How long a stream the engine let go of may take to finish both directions.
pub const LINGER: Duration = Duration::from_secs(10);
/// How long the closed connection may take to drain (its last ACKs).
const DRAIN: Duration = Duration::from_secs(2);
/// Application close code: both directions ended normally.
const DONE: VarInt = VarInt::from_u32(0);
/// Application close code: a direction did not end normally.
const BROKEN: VarInt = VarInt::from_u32(1);

/// The one stream of a punched connection, and what keeps the connection up.
pub struct QuicStream {
    /// Both `Some` until dropped (then the linger task takes them).
    send: Option<SendStream>,
    recv: Option<RecvStream>,
    /// Our direction is finished (shutdown).
    finished: bool,
    /// The Ed25519 key the peer's certificate carried in the QUIC handshake, which
    /// verified its signature (`None` if it somehow presented no such certificate).
    peer_key: Option<PublicKey>,
    conn: Connection,
    endpoint: Endpoint,
    /// The runtime the linger task runs on (the stream may be dropped on a blocking
    /// thread).
    rt: Handle,
}

impl std::fmt::Debug for QuicStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicStream")
            .field("peer", &self.conn.remote_address())
            .finish()
    }
}

/// The Ed25519 key of the certificate the peer presented in `conn`'s handshake.
fn handshake_key(conn: &Connection) -> Option<PublicKey> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    ed25519_key_of(certs.first()?)
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the QUIC stream is closed")
}

impl QuicStream {
    /// Must be called within a tokio runtime.
    pub(super) fn new(
        send: SendStream,
        recv: RecvStream,
        conn: Connection,
        endpoint: Endpoint,
    ) -> QuicStream {
        let peer_key = handshake_key(&conn);
        QuicStream {
            send: Some(send),
            recv: Some(recv),
            finished: false,
            peer_key,
            conn,
            endpoint,
            rt: Handle::current(),
        }
    }

    /// The peer's UDP endpoint.
    pub fn peer(&self) -> std::net::SocketAddr {
        self.conn.remote_address()
    }

    /// The key the QUIC handshake authenticated the peer with: its certificate's key,
    /// whose private half signed the handshake. The transfer engine relies on it instead
    /// of a TLS session of its own (`MODE_QUIC`, `docs/PROTOCOL.md` §5).
    pub fn peer_key(&self) -> Option<PublicKey> {
        self.peer_key
    }

    fn send(&mut self) -> io::Result<&mut SendStream> {
        self.send.as_mut().ok_or_else(gone)
    }

    /// Writes what quinn takes now, without waiting (`WouldBlock` if nothing).
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let send = self.send()?;
        let mut cx = Context::from_waker(Waker::noop());
        match tokio::io::AsyncWrite::poll_write(Pin::new(send), &mut cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Queues `chunk` for sending without copying it, waiting while quinn's send window
    /// is full.
    pub async fn write_chunk(&mut self, chunk: bytes::Bytes) -> io::Result<()> {
        self.send()?
            .write_chunk(chunk)
            .await
            .map_err(io::Error::from)
    }

    /// Finishes our direction (once; later calls do nothing).
    pub fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.send()?.finish().map_err(io::Error::other)
    }

    /// The blocking reader for a receive thread: every read waits at most `stall`, and
    /// [`QuicStop::stop`] ends a waiting read at once.
    pub fn into_blocking(self, stall: Duration) -> (BlockingQuic, QuicStop) {
        let stop = Arc::new(Notify::new());
        (
            BlockingQuic {
                stream: self,
                stall,
                stop: stop.clone(),
            },
            QuicStop(stop),
        )
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        let (Some(send), Some(recv)) = (self.send.take(), self.recv.take()) else {
            return;
        };
        let (conn, endpoint) = (self.conn.clone(), self.endpoint.clone());
        self.rt
            .spawn(linger(send, recv, self.finished, conn, endpoint));
    }
}

/// Finishes our direction, waits (up to [`LINGER`]) for our data to be acknowledged and
/// the peer's to end, then closes the connection and lets it drain.
async fn linger(
    mut send: SendStream,
    mut recv: RecvStream,
    finished: bool,
    conn: Connection,
    endpoint: Endpoint,
) {
    if !finished {
        let _ = send.finish();
    }
    let acked = async {
        match send.stopped().await {
            Ok(None) => true,
            Err(quinn::StoppedError::ConnectionLost(e)) => closed_done(&e),
            _ => false,
        }
    };
    let drained = async {
        loop {
            match recv.read_chunk(usize::MAX, false).await {
                Ok(Some(_)) => {}
                Ok(None) => break true,
                Err(ReadError::ConnectionLost(e)) => break closed_done(&e),
                Err(_) => break false,
            }
        }
    };
    let ended = tokio::time::timeout(LINGER, async { tokio::join!(acked, drained) }).await;
    let code = match ended {
        Ok((true, true)) => DONE,
        _ => BROKEN,
    };
    let st = conn.stats();
    tracing::debug!(?ended, path = ?st.path, udp_tx = ?st.udp_tx, udp_rx = ?st.udp_rx, "punched stream ended");
    conn.close(code, b"");
    let _ = tokio::time::timeout(DRAIN, endpoint.wait_idle()).await;
}

/// The peer closed the connection saying both directions ended normally.
fn closed_done(e: &ConnectionError) -> bool {
    matches!(e, ConnectionError::ApplicationClosed(c) if c.error_code == DONE)
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.recv.as_mut() {
            Some(r) => Pin::new(r).poll_read(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let send = self.send()?;
        tokio::io::AsyncWrite::poll_write(Pin::new(send), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.finish())
    }
}

/// Ends a [`BlockingQuic`]'s waiting read (and every later one).
pub struct QuicStop(Arc<Notify>);

impl QuicStop {
    pub fn stop(&self) {
        self.0.notify_one();
    }
}

/// A [`QuicStream`] read from a blocking thread (one inside the runtime's blocking
/// pool, as `spawn_blocking` runs).
pub struct BlockingQuic {
    stream: QuicStream,
    stall: Duration,
    stop: Arc<Notify>,
}

impl io::Read for BlockingQuic {
    /// Takes everything quinn holds for us, up to `buf`'s length, in one go (one copy,
    /// as a socket read makes); waits for the first bytes up to `stall` (then
    /// `TimedOut`), or until stopped (`ConnectionAborted`).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let BlockingQuic {
            stream,
            stall,
            stop,
        } = self;
        let rt = stream.rt.clone();
        let Some(recv) = stream.recv.as_mut() else {
            return Err(gone());
        };
        rt.block_on(async {
            tokio::select! {
                biased;
                _ = stop.notified() => {
                    // Every later read stops too.
                    stop.notify_one();
                    Err(io::Error::new(io::ErrorKind::ConnectionAborted, "stopped"))
                }
                r = tokio::time::timeout(*stall, recv.read(buf)) => match r {
                    Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no data")),
                    Ok(Ok(Some(n))) => Ok(n),
                    Ok(Ok(None)) => Ok(0),
                    Ok(Err(e)) => Err(e.into()),
                },
            }
        })
    }
}

impl BlockingQuic {
    /// Writes as much of `bytes` as quinn takes now; errors are ignored.
    pub fn send_now(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.stream.try_write(bytes) {
                Ok(n) if n > 0 => bytes = &bytes[n..],
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests;
