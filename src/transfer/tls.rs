//! TLS 1.3 connections for transfers: rustls runs the handshake (its unbuffered API,
//! driven here over a tokio socket), then hands the traffic secrets to our own record
//! layer ([`super::record`]), the way kernel TLS offload does. The result is a
//! [`TlsStream`]: an `AsyncRead + AsyncWrite` for the small headers, plus two bulk paths
//! that encrypt and decrypt in place in large buffers on blocking threads:
//! [`TlsStream::send_file`] (provider) and [`TlsStream::into_receiver`] (requester).
//!
//! Key updates (RFC 8446 §4.6.3) are sent before a key reaches its confidentiality
//! limit and followed when the peer sends one; rustls' [`KernelConnection`] derives the
//! next secrets.

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustls::client::UnbufferedClientConnection;
use rustls::kernel::KernelConnection;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError, UnbufferedStatus};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::record::{
    self, CLOSE_NOTIFY, Content, Control, KEY_UPDATE, MAX_PAYLOAD, MAX_RECORD, OVERHEAD, Opener,
    RecordError, Sealer,
};

/// Derives the next traffic secrets at a key update.
pub(crate) trait Rekey: Send {
    fn next_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
    fn next_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
}

impl<D: Send> Rekey for KernelConnection<D> {
    fn next_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_tx_secret()
    }
    fn next_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_rx_secret()
    }
}

type Keys = Arc<Mutex<Box<dyn Rekey>>>;

fn rekey_error(e: impl std::fmt::Display) -> io::Error {
    RecordError::KeyUpdate(e.to_string()).into()
}

fn next_tx(keys: &Keys, sealer: &mut Sealer) -> io::Result<()> {
    let (seq, secrets) = keys
        .lock()
        .map_err(rekey_error)?
        .next_tx()
        .map_err(rekey_error)?;
    Ok(sealer.rekey(&secrets, seq)?)
}

fn next_rx(keys: &Keys, opener: &mut Opener) -> io::Result<()> {
    let (seq, secrets) = keys
        .lock()
        .map_err(rekey_error)?
        .next_rx()
        .map_err(rekey_error)?;
    Ok(opener.rekey(&secrets, seq)?)
}

/// Seals `data` as application-data records onto `out`, sending a key update first
/// whenever the key is due for one.
fn seal_data(keys: &Keys, sealer: &mut Sealer, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    for piece in data.chunks(MAX_PAYLOAD) {
        if sealer.wants_key_update(1) {
            sealer.seal_to(&KEY_UPDATE, Content::Handshake, out)?;
            next_tx(keys, sealer)?;
        }
        sealer.seal_to(piece, Content::ApplicationData, out)?;
    }
    Ok(())
}

/// The handshake half of a rustls unbuffered connection, client or server.
trait Handshake: Sized {
    fn process<'c>(&'c mut self, incoming: &mut [u8]) -> Status<'c>;
    fn finish(
        self,
    ) -> Result<(ExtractedSecrets, Box<dyn Rekey>, SupportedCipherSuite), rustls::Error>;
    fn peer_certificate(&self) -> Option<CertificateDer<'static>>;
}

/// Encodes a pending handshake record into the given buffer.
type Encoder<'c> = Box<dyn FnMut(&mut [u8]) -> Result<usize, EncodeError> + 'c>;

/// `UnbufferedStatus` with the side erased: only the parts the driver uses.
enum Status<'c> {
    Error(usize, rustls::Error),
    Encode(usize, Encoder<'c>),
    Transmit(usize, Box<dyn FnOnce() + 'c>),
    Read(usize, Vec<u8>),
    NeedMore(usize),
    Done(usize),
    Closed(usize),
}

fn erase<'c, D: 'c>(s: UnbufferedStatus<'c, '_, D>) -> Status<'c> {
    let d = s.discard;
    match s.state {
        Err(e) => Status::Error(d, e),
        Ok(ConnectionState::EncodeTlsData(mut e)) => {
            Status::Encode(d, Box::new(move |out: &mut [u8]| e.encode(out)))
        }
        Ok(ConnectionState::TransmitTlsData(t)) => Status::Transmit(d, Box::new(move || t.done())),
        Ok(ConnectionState::ReadTraffic(mut r)) => {
            let mut data = Vec::new();
            let mut extra = 0;
            while let Some(rec) = r.next_record() {
                match rec {
                    Ok(rec) => {
                        extra += rec.discard;
                        data.extend_from_slice(rec.payload);
                    }
                    Err(e) => return Status::Error(d + extra, e),
                }
            }
            Status::Read(d + extra, data)
        }
        Ok(ConnectionState::BlockedHandshake) => Status::NeedMore(d),
        Ok(ConnectionState::WriteTraffic(_)) => Status::Done(d),
        Ok(_) => Status::Closed(d),
    }
}

fn confidentiality_limit(suite: SupportedCipherSuite) -> u64 {
    match suite {
        SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
        #[allow(unreachable_patterns)]
        _ => 1 << 23,
    }
}

/// The client and server connections offer the same calls under different types.
macro_rules! handshake_for {
    ($conn:ty) => {
        impl Handshake for $conn {
            fn process<'c>(&'c mut self, incoming: &mut [u8]) -> Status<'c> {
                erase(self.process_tls_records(incoming))
            }
            fn finish(
                self,
            ) -> Result<(ExtractedSecrets, Box<dyn Rekey>, SupportedCipherSuite), rustls::Error>
            {
                let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
                let suite = kernel.negotiated_cipher_suite();
                Ok((secrets, Box::new(kernel), suite))
            }
            fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
                self.peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.clone().into_owned())
            }
        }
    };
}

handshake_for!(UnbufferedClientConnection);
handshake_for!(UnbufferedServerConnection);

/// A rustls error as an `io::Error` that callers can downcast back.
fn tls_io(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Runs the handshake on `sock`. Errors carry the `rustls::Error` when there is one;
/// the alert that tells the peer why is sent before returning it.
async fn drive<H: Handshake>(mut conn: H, mut sock: TcpStream) -> io::Result<TlsStream> {
    let mut inbuf = vec![0u8; 2 * MAX_RECORD];
    let mut used = 0;
    let mut out = vec![0u8; 4096];
    let mut out_used = 0;
    let mut early = Vec::new();
    let mut failed: Option<rustls::Error> = None;
    loop {
        enum Next {
            Continue,
            Write,
            Read,
            Done,
            Stop,
        }
        let (discard, next) = match conn.process(&mut inbuf[..used]) {
            Status::Error(d, e) => {
                // Loop once more (with nothing new) so the alert gets encoded and sent.
                let first = failed.is_none();
                failed.get_or_insert(e);
                (d, if first { Next::Continue } else { Next::Stop })
            }
            Status::Encode(d, mut encode) => loop {
                match encode(&mut out[out_used..]) {
                    Ok(n) => {
                        out_used += n;
                        break (d, Next::Continue);
                    }
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        out.resize(out_used + required_size, 0);
                    }
                    Err(e) => return Err(io::Error::other(e.to_string())),
                }
            },
            Status::Transmit(d, done) => {
                done();
                (d, Next::Write)
            }
            Status::Read(d, data) => {
                early.extend_from_slice(&data);
                (d, Next::Continue)
            }
            Status::NeedMore(d) => (
                d,
                if failed.is_some() {
                    Next::Stop
                } else {
                    Next::Read
                },
            ),
            Status::Done(d) => (
                d,
                if failed.is_some() {
                    Next::Stop
                } else {
                    Next::Done
                },
            ),
            Status::Closed(d) => (d, Next::Stop),
        };
        if discard > 0 {
            inbuf.copy_within(discard..used, 0);
            used -= discard;
        }
        match next {
            Next::Continue => {}
            Next::Write => {
                let w = sock.write_all(&out[..out_used]).await;
                out_used = 0;
                if let Err(e) = w {
                    return Err(failed.map(tls_io).unwrap_or(e));
                }
            }
            Next::Read => {
                if used == inbuf.len() {
                    inbuf.resize(inbuf.len() * 2, 0);
                }
                let n = sock.read(&mut inbuf[used..]).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ));
                }
                used += n;
            }
            Next::Stop => {
                return Err(match failed {
                    Some(e) => tls_io(e),
                    None => io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the peer ended the TLS handshake",
                    ),
                });
            }
            Next::Done => break,
        }
    }
    let peer_cert = conn.peer_certificate();
    let (secrets, keys, suite) = conn.finish().map_err(tls_io)?;
    // Well inside the limit: a key update costs one small record.
    let limit = confidentiality_limit(suite);
    let limit = limit - limit / 4;
    inbuf.truncate(used);
    TlsStream::new(sock, secrets, keys, limit, peer_cert, early, inbuf)
}

/// Requester side: TLS client handshake on `sock` with `config`.
pub async fn connect(
    sock: TcpStream,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<TlsStream> {
    let conn = UnbufferedClientConnection::new(config, name).map_err(tls_io)?;
    drive(conn, sock).await
}

/// Provider side: TLS server handshake on `sock` with `config`.
pub async fn accept(sock: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_io)?;
    drive(conn, sock).await
}

/// Ciphertext read buffer of the stream (header exchange; bulk data has its own).
const READ_BUFFER: usize = 64 << 10;
/// Sealed bytes buffered by `poll_write` before it waits for the socket.
const WRITE_HIGH: usize = 256 << 10;

/// An established TLS 1.3 connection with our own record layer.
pub struct TlsStream {
    sock: TcpStream,
    sealer: Option<Sealer>,
    opener: Opener,
    keys: Keys,
    peer_cert: Option<CertificateDer<'static>>,
    /// Application data that rustls decrypted while finishing the handshake.
    early: Vec<u8>,
    /// Ciphertext in `rbuf[rstart..rend]`; decrypted payload not yet read in `plain`.
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    plain: std::ops::Range<usize>,
    /// Sealed bytes not yet written: `wbuf[wpos..]`.
    wbuf: Vec<u8>,
    wpos: usize,
    peer_closed: bool,
    close_sent: bool,
    /// The peer asked for a key update; ours goes out before our next record.
    update_owed: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .finish()
    }
}

impl TlsStream {
    fn new(
        sock: TcpStream,
        secrets: ExtractedSecrets,
        keys: Box<dyn Rekey>,
        limit: u64,
        peer_cert: Option<CertificateDer<'static>>,
        early: Vec<u8>,
        mut leftover: Vec<u8>,
    ) -> io::Result<TlsStream> {
        let sealer = Sealer::new(&secrets.tx.1, secrets.tx.0, limit)?;
        let opener = Opener::new(&secrets.rx.1, secrets.rx.0)?;
        let rend = leftover.len();
        leftover.resize(rend.max(READ_BUFFER), 0);
        Ok(TlsStream {
            sock,
            sealer: Some(sealer),
            opener,
            keys: Arc::new(Mutex::new(keys)),
            peer_cert,
            early,
            rbuf: leftover,
            rstart: 0,
            rend,
            plain: 0..0,
            wbuf: Vec::new(),
            wpos: 0,
            peer_closed: false,
            close_sent: false,
            update_owed: false,
        })
    }

    /// The certificate the peer presented in the handshake.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.peer_cert.as_ref()
    }

    /// Makes the sender update its key after every `records` records (tests).
    #[cfg(test)]
    pub(crate) fn set_key_update_limit(&mut self, records: u64) {
        if let Some(s) = self.sealer.as_mut() {
            s.set_limit(records);
        }
    }

    fn sealer(&mut self) -> io::Result<&mut Sealer> {
        self.sealer
            .as_mut()
            .ok_or_else(|| io::Error::other("TLS sender busy"))
    }

    /// Seals `data` (or just pending control records) onto the write buffer.
    fn queue(&mut self, data: &[u8], content: Content) -> io::Result<()> {
        let keys = self.keys.clone();
        let owed = std::mem::take(&mut self.update_owed);
        let mut wbuf = std::mem::take(&mut self.wbuf);
        let r = (|| {
            let sealer = self.sealer()?;
            if owed {
                sealer.seal_to(&KEY_UPDATE, Content::Handshake, &mut wbuf)?;
                next_tx(&keys, sealer)?;
            }
            match content {
                Content::ApplicationData => seal_data(&keys, sealer, data, &mut wbuf),
                // (Empty control data: only the owed key update goes out.)
                _ if data.is_empty() => Ok(()),
                c => Ok(sealer.seal_to(data, c, &mut wbuf)?),
            }
        })();
        self.wbuf = wbuf;
        r
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.sock).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }

    /// Handles one opened non-data record.
    fn control(&mut self, content: Content, payload: std::ops::Range<usize>) -> io::Result<()> {
        let payload = &self.rbuf[payload];
        match content {
            Content::Alert => {
                if record::alert(payload)? == Control::Closed {
                    self.peer_closed = true;
                }
            }
            Content::Handshake => {
                if let Control::KeyUpdate { requested } = record::handshake(payload)? {
                    next_rx(&self.keys, &mut self.opener)?;
                    self.update_owed |= requested;
                }
            }
            Content::ApplicationData => {}
        }
        Ok(())
    }

    /// Sends `len` bytes of `file` from `offset`: a blocking thread reads the file
    /// straight into the payload slots of a buffer of records and seals them in place,
    /// while this task writes sealed buffers to the socket. With `hash`, the thread also
    /// hashes each record's bytes (BLAKE3, in cache) just before sealing them, and the
    /// hash of everything sent is returned.
    pub async fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        stall: Duration,
        hash: bool,
    ) -> io::Result<Option<[u8; 32]>> {
        // Whatever is queued (the answer header, a key update we owe) goes first.
        if self.update_owed {
            self.queue(&[], Content::Handshake)?;
        }
        timeout(stall, self.flush())
            .await
            .map_err(super::stopped_reading)??;
        let mut sealer = self
            .sealer
            .take()
            .ok_or_else(|| io::Error::other("TLS sender busy"))?;
        let file = file.try_clone()?;
        let keys = self.keys.clone();
        let (full_tx, mut full_rx) = mpsc::channel::<io::Result<Sealed>>(SEND_BUFFERS);
        let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(SEND_BUFFERS);
        let sealer_job = tokio::task::spawn_blocking(move || {
            let mut hasher = hash.then(blake3::Hasher::new);
            let to = Sending {
                file: &file,
                offset,
                len,
                hasher: hasher.as_mut(),
            };
            if let Err(e) = seal_file(to, &mut sealer, &keys, &full_tx, empty_rx) {
                let _ = full_tx.blocking_send(Err(e));
            }
            (sealer, hasher)
        });
        let result = async {
            let mut sent = 0u64;
            // Ends when the sealer is done (or failed: its error is the last item).
            while let Some(item) = timeout(stall, full_rx.recv())
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "disk read stalled"))?
            {
                let sealed = item?;
                timeout(stall, self.sock.write_all(&sealed.buf[..sealed.len]))
                    .await
                    .map_err(super::stopped_reading)??;
                sent += sealed.payload;
                if sealed.payload > 0 {
                    // A data buffer (not a key update): reuse it.
                    let _ = empty_tx.try_send(sealed.buf);
                }
            }
            if sent != len {
                return Err(io::Error::other("file reader stopped"));
            }
            Ok(())
        }
        .await;
        drop(full_rx);
        drop(empty_tx);
        let hasher = match sealer_job.await {
            Ok((s, h)) => {
                self.sealer = Some(s);
                h
            }
            Err(e) => return Err(io::Error::other(e)),
        };
        result.map(|()| hasher.map(|h| *h.finalize().as_bytes()))
    }

    /// Takes the stream apart for [`Receiver::run`]: the socket, the receive state, and
    /// what was already read but not consumed (plaintext, then ciphertext).
    pub(crate) fn into_receiver(mut self) -> (TcpStream, Receiver) {
        let mut plain = std::mem::take(&mut self.early);
        plain.extend_from_slice(&self.rbuf[self.plain.clone()]);
        let cipher = self.rbuf[self.rstart..self.rend].to_vec();
        (
            self.sock,
            Receiver {
                opener: self.opener,
                keys: self.keys,
                plain,
                cipher,
                peer_closed: self.peer_closed,
            },
        )
    }
}

/// A buffer of sealed records, ready for the socket.
struct Sealed {
    buf: Vec<u8>,
    /// Bytes of `buf` to send.
    len: usize,
    /// File bytes they carry.
    payload: u64,
}

/// Sealed buffers in flight on the sending side.
const SEND_BUFFERS: usize = 4;
/// Records per sending buffer (1 MiB of payload).
const SEND_RECORDS: usize = 64;
/// Records read and sealed in one step (256 KiB: stays in cache between the two).
const SEAL_STEP: usize = 16;

/// What [`seal_file`] sends: `len` bytes of `file` from `offset`, shown to `hasher` (if
/// any) as they are read.
struct Sending<'a> {
    file: &'a File,
    offset: u64,
    len: u64,
    hasher: Option<&'a mut blake3::Hasher>,
}

/// Blocking body of [`TlsStream::send_file`].
fn seal_file(
    to: Sending<'_>,
    sealer: &mut Sealer,
    keys: &Keys,
    full_tx: &mpsc::Sender<io::Result<Sealed>>,
    empty_rx: std::sync::mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let Sending {
        file,
        offset,
        len,
        mut hasher,
    } = to;
    let stride = MAX_PAYLOAD + OVERHEAD;
    let mut pos = offset;
    let end = offset.saturating_add(len);
    let mut allocated = 0;
    while pos < end {
        let mut buf = if allocated < SEND_BUFFERS {
            allocated += 1;
            vec![0u8; SEND_RECORDS * stride]
        } else {
            match empty_rx.recv() {
                Ok(b) => b,
                Err(_) => return Ok(()), // the writer gave up; it reports why
            }
        };
        let want = (end - pos).min((SEND_RECORDS * MAX_PAYLOAD) as u64) as usize;
        let records = want.div_ceil(MAX_PAYLOAD);
        if sealer.wants_key_update(records as u64) {
            let mut ku = Vec::new();
            sealer.seal_to(&KEY_UPDATE, Content::Handshake, &mut ku)?;
            next_tx(keys, sealer)?;
            let len = ku.len();
            let update = Sealed {
                buf: ku,
                len,
                payload: 0,
            };
            if full_tx.blocking_send(Ok(update)).is_err() {
                return Ok(());
            }
        }
        // A cache-sized step at a time: read, then seal while the bytes are hot.
        for first in (0..records).step_by(SEAL_STEP) {
            let last = records.min(first + SEAL_STEP);
            let from = first * MAX_PAYLOAD;
            let bytes = want.min(last * MAX_PAYLOAD) - from;
            read_into_records(file, &mut buf[first * stride..], pos + from as u64, bytes)?;
            for i in first..last {
                let payload = (want - i * MAX_PAYLOAD).min(MAX_PAYLOAD);
                let at = i * stride;
                if let Some(h) = hasher.as_deref_mut() {
                    h.update(&buf[at + record::HEADER_LEN..at + record::HEADER_LEN + payload]);
                }
                sealer.seal_in_place(
                    &mut buf[at..at + payload + OVERHEAD],
                    payload,
                    Content::ApplicationData,
                )?;
            }
        }
        pos += want as u64;
        let sealed = Sealed {
            buf,
            len: record::sealed_len(want),
            payload: want as u64,
        };
        if full_tx.blocking_send(Ok(sealed)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Fills the payload slots of the records in `buf` (stride `MAX_PAYLOAD + OVERHEAD`,
/// payload after each 5-byte header) with `want` bytes of `file` from `pos`, using
/// `preadv` so one syscall fills many records.
fn read_into_records(file: &File, buf: &mut [u8], pos: u64, want: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let stride = MAX_PAYLOAD + OVERHEAD;
    let mut done = 0;
    while done < want {
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(SEND_RECORDS);
        let mut at = done;
        while at < want && iov.len() < 1024 {
            let (rec, within) = (at / MAX_PAYLOAD, at % MAX_PAYLOAD);
            let n = (want - at).min(MAX_PAYLOAD - within);
            let start = rec * stride + record::HEADER_LEN + within;
            iov.push(libc::iovec {
                iov_base: buf[start..start + n].as_mut_ptr().cast(),
                iov_len: n,
            });
            at += n;
        }
        // SAFETY: every iovec points into `buf`, which outlives the call, and the slots
        // do not overlap.
        let n = unsafe {
            libc::preadv(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                (pos + done as u64) as libc::off_t,
            )
        };
        match n {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ));
            }
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => done += n as usize,
        }
    }
    Ok(())
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.early.is_empty() {
                let n = this.early.len().min(out.remaining());
                out.put_slice(&this.early[..n]);
                this.early.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if !this.plain.is_empty() {
                let n = this.plain.len().min(out.remaining());
                out.put_slice(&this.rbuf[this.plain.start..this.plain.start + n]);
                this.plain.start += n;
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            match Opener::record_len(&this.rbuf[this.rstart..this.rend])? {
                Some(n) => {
                    let at = this.rstart;
                    let opened = this.opener.open_in_place(&mut this.rbuf[at..at + n])?;
                    this.rstart += n;
                    let payload = at + opened.payload.start..at + opened.payload.end;
                    match opened.content {
                        Content::ApplicationData => this.plain = payload,
                        c => this.control(c, payload)?,
                    }
                }
                None => {
                    if this.rstart > 0 {
                        this.rbuf.copy_within(this.rstart..this.rend, 0);
                        this.rend -= this.rstart;
                        this.rstart = 0;
                        this.plain = 0..0;
                    }
                    if this.rbuf.len() - this.rend < MAX_RECORD {
                        this.rbuf.resize(this.rend + MAX_RECORD.max(READ_BUFFER), 0);
                    }
                    let mut rb = ReadBuf::new(&mut this.rbuf[this.rend..]);
                    ready!(Pin::new(&mut this.sock).poll_read(cx, &mut rb))?;
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the peer closed the connection without a TLS close_notify",
                        )));
                    }
                    this.rend += n;
                }
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.wbuf.len() - this.wpos >= WRITE_HIGH {
            ready!(this.poll_write_out(cx))?;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(WRITE_HIGH);
        this.queue(&buf[..n], Content::ApplicationData)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.sock).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.close_sent {
            this.queue(&CLOSE_NOTIFY, Content::Alert)?;
            this.close_sent = true;
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.sock).poll_shutdown(cx)
    }
}

/// The receive half of a [`TlsStream`], for the requester's bulk path.
pub(crate) struct Receiver {
    opener: Opener,
    keys: Keys,
    /// Plaintext already decrypted, to be delivered first.
    pub plain: Vec<u8>,
    /// Ciphertext already read, to be opened before reading more.
    pub cipher: Vec<u8>,
    peer_closed: bool,
}

/// One buffer of opened records: their plaintext is `buf[..len]`, side by side.
pub(crate) struct Plaintext {
    pub buf: Vec<u8>,
    pub len: usize,
}

/// Buffers the requester's reader fills (each about 1 MiB of records).
pub(crate) const RECEIVE_BUFFER: usize = (1 << 20) + MAX_RECORD;

impl Receiver {
    /// Reads records from `sock` (blocking) until `want` bytes of plaintext have come,
    /// then `trailer` more bytes, which it returns (the owner's hash, when it hashes).
    /// The data of each step read is shown to `each` as soon as its records are opened
    /// (still in cache, and in one run for a fast hash), then every filled buffer goes to
    /// `deliver`; `fresh` supplies empty buffers. Fails on a bad record, an alert, too
    /// many bytes, or the connection closing early.
    pub(crate) fn run(
        mut self,
        sock: &mut impl io::Read,
        want: u64,
        trailer: usize,
        mut fresh: impl FnMut() -> Option<Vec<u8>>,
        mut each: impl FnMut(&[u8]),
        mut deliver: impl FnMut(Plaintext) -> bool,
    ) -> Result<Vec<u8>, ReceiveError> {
        let mut got = 0u64;
        let mut tail = Vec::with_capacity(trailer);
        // Splits plaintext `p` into data (what is still wanted, counted in `got`) and
        // trailer (copied to `tail`); returns the data's length.
        let split = |got: &mut u64, tail: &mut Vec<u8>, p: &[u8]| {
            let data = (want - *got).min(p.len() as u64) as usize;
            let extra = &p[data..];
            if tail.len() + extra.len() > trailer {
                return Err(ReceiveError::TooMuch);
            }
            tail.extend_from_slice(extra);
            *got += data as u64;
            Ok(data)
        };
        if !self.plain.is_empty() {
            let buf = std::mem::take(&mut self.plain);
            let len = split(&mut got, &mut tail, &buf)?;
            each(&buf[..len]);
            if len > 0 && !deliver(Plaintext { buf, len }) {
                return Err(ReceiveError::Stopped);
            }
        }
        let mut carry = std::mem::take(&mut self.cipher);
        let mut eof = false;
        // A buffer that ended up with no data (only control records) is used again, so
        // the pool `fresh` draws from never shrinks.
        let mut spare = None;
        while got < want || tail.len() < trailer {
            if self.peer_closed || eof {
                // Whatever is left is an incomplete record that can no longer grow.
                return Err(ReceiveError::Closed(got));
            }
            let Some(mut buf) = spare.take().or_else(&mut fresh) else {
                return Err(ReceiveError::Stopped);
            };
            let size = RECEIVE_BUFFER.max(carry.len() + MAX_RECORD);
            if buf.len() < size {
                buf.resize(size, 0);
            }
            buf[..carry.len()].copy_from_slice(&carry);
            // Records are read at `at..filled`; their data is packed at `..len`, of which
            // `..shown` has been through `each`.
            let (mut filled, mut at, mut len, mut shown) = (carry.len(), 0, 0, 0);
            // Read a cache-sized step at a time and open it at once, while it is hot.
            loop {
                while let Some(n) = Opener::record_len(&buf[at..filled])? {
                    let opened = self.opener.open_within(&mut buf[len..at + n], at - len)?;
                    let p = len..len + opened.payload.len();
                    at += n;
                    match opened.content {
                        Content::ApplicationData => len += split(&mut got, &mut tail, &buf[p])?,
                        Content::Alert => {
                            if record::alert(&buf[p])? == Control::Closed {
                                self.peer_closed = true;
                                break;
                            }
                        }
                        Content::Handshake => {
                            if let Control::KeyUpdate { .. } = record::handshake(&buf[p])? {
                                next_rx(&self.keys, &mut self.opener).map_err(ReceiveError::Io)?;
                            }
                        }
                    }
                }
                if shown < len {
                    each(&buf[shown..len]);
                    shown = len;
                }
                let done = got == want && tail.len() == trailer;
                if done || self.peer_closed || eof || filled + MAX_RECORD > buf.len() {
                    break;
                }
                let end = buf.len().min(filled + READ_STEP);
                match sock.read(&mut buf[filled..end]) {
                    Ok(0) => eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ReceiveError::Io(e)),
                }
            }
            carry.clear();
            carry.extend_from_slice(&buf[at..filled]);
            if len == 0 {
                spare = Some(buf);
            } else if !deliver(Plaintext { buf, len }) {
                return Err(ReceiveError::Stopped);
            }
        }
        Ok(tail)
    }
}

/// Bytes read from the socket before they are opened: small enough to stay in cache.
const READ_STEP: usize = 256 << 10;

/// Why [`Receiver::run`] stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReceiveError {
    #[error("{0}")]
    Io(io::Error),
    #[error("{0}")]
    Record(#[from] RecordError),
    #[error("the owner sent more data than announced")]
    TooMuch,
    #[error("the connection closed after {0} bytes")]
    Closed(u64),
    #[error("stopped")]
    Stopped,
}

#[cfg(test)]
mod tests;
