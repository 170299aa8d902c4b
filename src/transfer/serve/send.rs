//! How file bytes reach a requester: [`PeerStream`] over plain TCP (zero-copy
//! `sendfile`), over TLS (sealed in place, [`TlsStream::send_file`]), or through a
//! user-space copy ([`copy_file_buffered`]) for any other stream (plaintext on the
//! punched QUIC stream).

use std::fs::File;
use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::reach::quic::QuicStream;
use crate::transfer::link::Link;
use crate::transfer::stopped_reading;
use crate::transfer::tls::TlsStream;

/// Bytes asked of one `sendfile` call (Linux caps one call at 0x7fff_f000 anyway).
#[cfg(target_os = "linux")]
const SENDFILE_CHUNK: usize = 1 << 30;
/// Bytes of one chunk the punched QUIC stream's send reads ahead, and how many chunks.
const QUIC_CHUNK: usize = 1 << 20;
const READ_AHEAD: usize = 4;
/// Bytes of the user-space copy buffer of [`copy_file_buffered`].
const COPY_BUFFER: usize = 1 << 20;

/// A byte stream to a requester. Plain TCP sends file data with zero-copy `sendfile`;
/// TLS seals the file in place on a blocking thread ([`TlsStream::send_file`]); any other stream
/// can use [`copy_file_buffered`]. The protocol logic is the same for all.
pub trait PeerStream: tokio::io::AsyncRead + AsyncWrite + Unpin + Send {
    /// Writes `len` bytes of `file` starting at `offset`, failing if no progress is made
    /// for `stall`. With `hash` (only on an [`PeerStream::authenticated`] stream) it
    /// returns the BLAKE3 hash of the bytes as they were read and sent.
    fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        stall: Duration,
        hash: bool,
    ) -> impl Future<Output = io::Result<Option<[u8; 32]>>> + Send;

    /// Whether every byte is authenticated on the way (TLS), so that the requester may
    /// rely on a hash the owner computed while sending
    /// ([`crate::transfer::header::Request::owner_hashes`]).
    fn authenticated(&self) -> bool {
        false
    }
}

/// Plain streams cannot vouch for what they carry (checked before any byte is sent).
fn no_owner_hash(hash: bool) -> io::Result<()> {
    if hash {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "owner hashing needs an encrypted connection",
        ));
    }
    Ok(())
}

impl PeerStream for TcpStream {
    async fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        stall: Duration,
        hash: bool,
    ) -> io::Result<Option<[u8; 32]>> {
        no_owner_hash(hash)?;
        #[cfg(target_os = "linux")]
        sendfile_all(self, file, offset, len, stall).await?;
        #[cfg(not(target_os = "linux"))]
        copy_file_buffered(self, file, offset, len, stall).await?;
        Ok(None)
    }
}

/// TCP takes its `sendfile`; the punched QUIC stream the user-space copy.
impl PeerStream for Link {
    async fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        stall: Duration,
        hash: bool,
    ) -> io::Result<Option<[u8; 32]>> {
        match self {
            Link::Tcp(s) => s.send_file(file, offset, len, stall, hash).await,
            Link::Quic(q) => send_file_chunks(q, file, offset, len, stall, hash).await,
        }
    }

    /// QUIC's packet protection authenticates every byte, between the keys its handshake
    /// verified.
    fn authenticated(&self) -> bool {
        self.quic_peer_key().is_some()
    }
}

impl PeerStream for TlsStream {
    async fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        stall: Duration,
        hash: bool,
    ) -> io::Result<Option<[u8; 32]>> {
        TlsStream::send_file(self, file, offset, len, stall, hash).await
    }

    fn authenticated(&self) -> bool {
        true
    }
}

/// Zero-copy send on a non-blocking socket: `sendfile` moves as much as the socket buffer
/// takes, and tokio tells us when there is room again, so no thread is parked per
/// transfer. (A cold-cache disk read inside `sendfile` does block the worker briefly;
/// the same trade-off every sendfile server makes.)
#[cfg(target_os = "linux")]
async fn sendfile_all(
    sock: &TcpStream,
    file: &File,
    offset: u64,
    len: u64,
    stall: Duration,
) -> io::Result<()> {
    use tokio::io::Interest;
    let end = range_end(offset, len)?;
    let mut pos = offset;
    while pos < end {
        let chunk = (end - pos).min(SENDFILE_CHUNK as u64) as usize;
        let step = async {
            loop {
                sock.writable().await?;
                let r = sock.try_io(Interest::WRITABLE, || {
                    let mut off = pos;
                    crate::sys::sendfile(sock, file, &mut off, chunk)
                });
                match r {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        let n = timeout(stall, step).await.map_err(stopped_reading)??;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            ));
        }
        pos += n as u64;
    }
    Ok(())
}

/// The punched QUIC stream's send: a blocking thread reads the file ahead (hashing it
/// with `hash`) in chunks that quinn takes over without a copy
/// ([`QuicStream::write_chunk`]); only packet sealing touches the bytes again.
async fn send_file_chunks(
    q: &mut QuicStream,
    file: &File,
    offset: u64,
    len: u64,
    stall: Duration,
    hash: bool,
) -> io::Result<Option<[u8; 32]>> {
    let end = range_end(offset, len)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(READ_AHEAD);
    let file = file.try_clone()?;
    let reader = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut hasher = hash.then(blake3::Hasher::new);
        let mut pos = offset;
        while pos < end {
            let mut chunk = vec![0u8; (end - pos).min(QUIC_CHUNK as u64) as usize];
            let read = file
                .read_exact_at(&mut chunk, pos)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => {
                        io::Error::new(e.kind(), "file shrank while being sent")
                    }
                    _ => e,
                });
            pos += chunk.len() as u64;
            let failed = read.is_err();
            if let (Some(h), false) = (hasher.as_mut(), failed) {
                h.update(&chunk);
            }
            // The sender gone (it failed or stopped): nothing more to read.
            if tx.blocking_send(read.map(|()| chunk.into())).is_err() || failed {
                return None;
            }
        }
        hasher.map(|h| *h.finalize().as_bytes())
    });
    let mut sent = 0u64;
    while sent < len {
        let chunk = timeout(stall, rx.recv())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "disk read stalled"))?
            .ok_or_else(|| io::Error::other("the file reader stopped"))??;
        sent += chunk.len() as u64;
        timeout(stall, q.write_chunk(chunk))
            .await
            .map_err(stopped_reading)??;
    }
    drop(rx);
    reader.await.map_err(io::Error::other)
}

/// Where `len` bytes from `offset` end.
fn range_end(offset: u64, len: u64) -> io::Result<u64> {
    offset
        .checked_add(len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range overflows"))
}

/// Portable fallback: large-buffer copy through user space.
pub async fn copy_file_buffered<S: AsyncWrite + Unpin + Send>(
    sock: &mut S,
    file: &File,
    offset: u64,
    len: u64,
    stall: Duration,
) -> io::Result<()> {
    let mut f = tokio::fs::File::from_std(file.try_clone()?);
    f.seek(io::SeekFrom::Start(offset)).await?;
    let mut f = f.take(len);
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut left = len;
    while left > 0 {
        let n = timeout(stall, f.read(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "disk read stalled"))??;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            ));
        }
        timeout(stall, sock.write_all(&buf[..n]))
            .await
            .map_err(stopped_reading)??;
        left -= n as u64;
    }
    sock.flush().await
}
