//! [`Link`]: the connection a transfer runs on. A TCP connection (direct, reverse,
//! relayed) or the one stream of a punched QUIC connection; the peer protocol is the
//! same on both, except that on QUIC, whose own TLS 1.3 handshake already
//! authenticated both pinned keys, no second TLS session runs inside (`MODE_QUIC`). TCP keeps its own fast paths (`splice`, `sendfile`,
//! blocking socket reads); QUIC takes the portable ones, or reads quinn's buffers
//! straight from the receive thread ([`BlockingLink`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::reach::quic::{BlockingQuic, QuicStop, QuicStream};

/// The connection to the peer.
#[derive(Debug)]
pub enum Link {
    Tcp(TcpStream),
    Quic(QuicStream),
}

impl From<TcpStream> for Link {
    fn from(s: TcpStream) -> Link {
        Link::Tcp(s)
    }
}

impl From<QuicStream> for Link {
    fn from(s: QuicStream) -> Link {
        Link::Quic(s)
    }
}

impl Link {
    /// Small writes go out at once (TCP's Nagle off; QUIC sends at once anyway).
    pub fn set_nodelay(&self) {
        if let Link::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }

    /// The peer's key as the QUIC handshake under this link authenticated it: `Some`
    /// only on a punched QUIC stream. TCP links carry no authentication of their own.
    pub fn quic_peer_key(&self) -> Option<crate::identity::PublicKey> {
        match self {
            Link::Tcp(_) => None,
            Link::Quic(s) => s.peer_key(),
        }
    }

    /// Writes what the connection takes now, without waiting.
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Tcp(s) => s.try_write(buf),
            Link::Quic(s) => s.try_write(buf),
        }
    }

    /// Ends our sending direction now (best effort).
    pub fn shutdown_now(&mut self) {
        match self {
            Link::Tcp(s) => {
                let _ = socket2::SockRef::from(&*s).shutdown(std::net::Shutdown::Write);
            }
            Link::Quic(s) => {
                let _ = s.finish();
            }
        }
    }

    /// The connection for a blocking receive thread, every read bounded by `stall`, and
    /// what wakes that thread when the receive is cancelled.
    pub(crate) fn into_blocking(self, stall: Duration) -> io::Result<(BlockingLink, Killer)> {
        match self {
            Link::Tcp(s) => {
                let (sock, killer) = blocking_tcp(s, stall)?;
                Ok((BlockingLink::Tcp(sock), killer))
            }
            Link::Quic(s) => {
                let (sock, stop) = s.into_blocking(stall);
                Ok((BlockingLink::Quic(Box::new(sock)), Killer::Quic(stop)))
            }
        }
    }
}

/// Tests take the TCP connection back out.
#[cfg(test)]
impl Link {
    pub(crate) fn into_tcp(self) -> TcpStream {
        match self {
            Link::Tcp(s) => s,
            Link::Quic(_) => panic!("not a TCP connection"),
        }
    }

    pub(crate) fn as_tcp(&self) -> &TcpStream {
        match self {
            Link::Tcp(s) => s,
            Link::Quic(_) => panic!("not a TCP connection"),
        }
    }
}

/// `stream` switched to blocking mode with every read bounded by `stall` (an expired
/// wait surfaces as `EAGAIN`), and a clone that can shut it down.
pub(crate) fn blocking_tcp(
    stream: TcpStream,
    stall: Duration,
) -> io::Result<(std::net::TcpStream, Killer)> {
    let sock = stream.into_std()?;
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(stall))?;
    let killer = sock.try_clone()?;
    Ok((sock, Killer::Tcp(killer)))
}

/// Wakes a blocking receive that is to stop.
pub(crate) enum Killer {
    Tcp(std::net::TcpStream),
    Quic(QuicStop),
}

impl Killer {
    pub(crate) fn kill(&self) {
        match self {
            Killer::Tcp(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Killer::Quic(s) => s.stop(),
        }
    }
}

/// A [`Link`] read from a blocking thread.
pub(crate) enum BlockingLink {
    Tcp(std::net::TcpStream),
    Quic(Box<BlockingQuic>),
}

impl io::Read for BlockingLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlockingLink::Tcp(s) => s.read(buf),
            BlockingLink::Quic(s) => s.read(buf),
        }
    }
}

impl AsyncRead for Link {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Link::Quic(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Link {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Link::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Link::Quic(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Link::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Link::Quic(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Link::Tcp(s) => s.is_write_vectored(),
            Link::Quic(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Tcp(s) => Pin::new(s).poll_flush(cx),
            Link::Quic(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Link::Quic(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
