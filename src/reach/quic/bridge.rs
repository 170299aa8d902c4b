//! The loopback bridge: the transfer engine speaks to a `TcpStream` (TLS on it, splice,
//! sendfile), so the QUIC stream is given to it as the near end of a loopback TCP pair
//! whose far end a task copies to and from the stream.
//!
//! Half-closes cross the bridge: the engine's TCP shutdown finishes the QUIC stream, the
//! peer's finish shuts the far end down. When both directions are done (our data
//! acknowledged, theirs all read) the connection is closed and the endpoint drained.

use std::io::{self, IoSlice};
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Bytes read from the engine's side per QUIC chunk.
pub const CHUNK: usize = 256 << 10;
/// Pieces of QUIC stream data taken at once for one vectored write (`IOV_MAX` is 1024).
const CHUNKS: usize = 256;
/// Loopback socket buffers of the bridge.
const SOCKET_BUFFER: u32 = 4 << 20;
/// How long the closed connection may take to drain (its last ACKs).
const DRAIN: Duration = Duration::from_secs(2);
/// Application close code: both directions ended normally.
const DONE: VarInt = VarInt::from_u32(0);
/// Application close code / stream reset code: the engine's side failed.
const BROKEN: VarInt = VarInt::from_u32(1);

/// A connected loopback pair: (near, far). The listener takes only the connection our
/// own socket made (another local process racing to connect is dropped).
pub(super) async fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let to = listener.local_addr()?;
    let socket = TcpSocket::new_v4()?;
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let pair = async {
        let (near, mut far) = tokio::try_join!(socket.connect(to), listener.accept())?;
        let ours = near.local_addr()?;
        while far.1 != ours {
            far = listener.accept().await?;
        }
        Ok::<_, io::Error>((near, far.0))
    };
    let (near, far) = tokio::time::timeout(Duration::from_secs(5), pair)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "loopback connect timed out"))??;
    for s in [&near, &far] {
        s.set_nodelay(true)?;
    }
    Ok((near, far))
}

/// Copies between `far` and the QUIC stream until both directions end, then closes
/// `conn` and drains `endpoint`.
pub(super) async fn run(
    far: TcpStream,
    send: SendStream,
    recv: RecvStream,
    conn: Connection,
    endpoint: Endpoint,
) {
    let (r, w) = far.into_split();
    let (up, down) = tokio::join!(tcp_to_quic(r, send), quic_to_tcp(recv, w));
    let code = if up.is_ok() && down.is_ok() {
        DONE
    } else {
        BROKEN
    };
    let st = conn.stats();
    tracing::debug!(?up, ?down, path = ?st.path, udp_tx = ?st.udp_tx, udp_rx = ?st.udp_rx, "punched stream ended");
    conn.close(code, b"");
    let _ = tokio::time::timeout(DRAIN, endpoint.wait_idle()).await;
}

/// The engine's bytes to the peer; the engine's shutdown finishes the stream, whose
/// data we then wait to see acknowledged.
async fn tcp_to_quic(mut r: OwnedReadHalf, mut send: SendStream) -> io::Result<()> {
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let n = match r.read_buf(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = send.reset(BROKEN);
                return Err(e);
            }
        };
        if n == 0 {
            break;
        }
        send.write_chunk(buf.freeze())
            .await
            .map_err(io::Error::from)?;
    }
    send.finish().map_err(io::Error::other)?;
    match send.stopped().await {
        Ok(None) => Ok(()),
        // The peer read everything and closed before its last ACK reached us.
        Err(quinn::StoppedError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(c)))
            if c.error_code == DONE =>
        {
            Ok(())
        }
        Ok(Some(code)) => Err(io::Error::other(format!(
            "the peer stopped the stream ({code})"
        ))),
        Err(e) => Err(io::Error::other(e)),
    }
}

/// The peer's bytes to the engine; the peer's finish shuts the engine's side down.
///
/// QUIC hands data out a packet's worth at a time (~1.4 kB): whatever is ready is taken
/// at once (up to `CHUNKS` pieces) and written with one vectored write, so the loopback
/// writes stay few and large without copying.
async fn quic_to_tcp(mut recv: RecvStream, mut w: OwnedWriteHalf) -> io::Result<()> {
    let mut chunks: Vec<Bytes> = vec![Bytes::new(); CHUNKS];
    loop {
        match recv.read_chunks(&mut chunks).await {
            Ok(Some(n)) => {
                if let Err(e) = write_all_vectored(&mut w, &mut chunks[..n]).await {
                    let _ = recv.stop(BROKEN);
                    return Err(e);
                }
            }
            Ok(None) => break,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    w.shutdown().await
}

/// Writes every byte of `chunks` (consuming them).
async fn write_all_vectored(w: &mut OwnedWriteHalf, chunks: &mut [Bytes]) -> io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[first..].iter().map(|c| IoSlice::new(c)).collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 && first < chunks.len() {
            let len = chunks[first].len();
            if n >= len {
                n -= len;
                first += 1;
            } else {
                chunks[first].advance(n);
                n = 0;
            }
        }
        while first < chunks.len() && chunks[first].is_empty() {
            first += 1;
        }
    }
    Ok(())
}
