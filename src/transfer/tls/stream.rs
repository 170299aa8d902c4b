//! [`TlsStream`]: an established TLS 1.3 connection with our own record layer, as an
//! `AsyncRead + AsyncWrite` that seals and opens one record at a time. It carries the
//! small headers; file data takes the bulk paths ([`super::send`], [`super::receive`]).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use crate::transfer::link::Link;
use rustls::ExtractedSecrets;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::record::{
    self, CLOSE_NOTIFY, Content, Control, Joiner, KEY_UPDATE, MAX_PAYLOAD, MAX_RECORD, Opener,
    Quiet, RecordError, Sealer, Side,
};
use super::{Keys, READ_BUFFER, Receiver, Rekey, WRITE_HIGH, next_rx_secrets, next_tx};

/// An established TLS 1.3 connection with our own record layer.
pub struct TlsStream {
    pub(super) sock: Link,
    /// Which end we are: only the client accepts session tickets.
    pub(super) side: Side,
    /// Records in a row without data so far.
    pub(super) quiet: Quiet,
    /// A handshake message split over records, until it is whole.
    pub(super) joiner: Joiner,
    /// `None` while the bulk send path holds it on its blocking thread.
    pub(super) sealer: Option<Sealer>,
    pub(super) opener: Opener,
    pub(super) keys: Keys,
    pub(super) peer_cert: Option<CertificateDer<'static>>,
    /// Application data that rustls decrypted while finishing the handshake.
    pub(super) early: Vec<u8>,
    /// Ciphertext in `rbuf[rstart..rend]`; decrypted payload not yet read in `plain`.
    pub(super) rbuf: Vec<u8>,
    pub(super) rstart: usize,
    pub(super) rend: usize,
    pub(super) plain: std::ops::Range<usize>,
    /// Sealed bytes not yet written: `wbuf[wpos..]`.
    pub(super) wbuf: Vec<u8>,
    pub(super) wpos: usize,
    pub(super) peer_closed: bool,
    pub(super) close_sent: bool,
    /// The peer asked for a key update; ours goes out before our next record.
    pub(super) update_owed: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .finish()
    }
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

impl TlsStream {
    /// The stream right after the handshake: `leftover` is ciphertext that arrived with
    /// the last handshake flight, `early` data rustls already decrypted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        sock: Link,
        side: Side,
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
            side,
            quiet: Quiet::default(),
            joiner: Joiner::default(),
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
    pub(super) fn queue(&mut self, data: &[u8], content: Content) -> io::Result<()> {
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
    fn control(
        &mut self,
        content: Content,
        payload: std::ops::Range<usize>,
    ) -> Result<(), RecordError> {
        let payload = &self.rbuf[payload];
        match content {
            Content::Alert => {
                if record::alert(payload)? == Control::Closed {
                    self.peer_closed = true;
                }
            }
            Content::Handshake => {
                let control = self.joiner.record(payload, self.side)?;
                self.quiet.handshake(control)?;
                if let Control::KeyUpdate { requested } = control {
                    let (seq, secrets) = next_rx_secrets(&self.keys)?;
                    self.opener.rekey(&secrets, seq)?;
                    self.update_owed |= requested;
                }
            }
            Content::ApplicationData => {}
        }
        Ok(())
    }

    /// Opens the next whole record in `rbuf`, if there is one. `Ok(false)` if more
    /// ciphertext is needed first.
    fn open_next(&mut self) -> Result<bool, RecordError> {
        let Some(n) = Opener::record_len(&self.rbuf[self.rstart..self.rend])? else {
            return Ok(false);
        };
        let at = self.rstart;
        let opened = self.opener.open_in_place(&mut self.rbuf[at..at + n])?;
        self.rstart += n;
        self.joiner.check(opened.content)?;
        let payload = at + opened.payload.start..at + opened.payload.end;
        match opened.content {
            Content::ApplicationData => {
                self.quiet.record(payload.len())?;
                self.plain = payload;
            }
            c => self.control(c, payload)?,
        }
        Ok(true)
    }

    /// Ends the connection after `e`: tells the peer why with the fatal alert that
    /// matches it (none if the peer sent an alert itself), sealed with the current key
    /// after whatever is still queued, written only as far as the socket takes it without
    /// waiting, then shuts our sending side. Best effort: never blocks, never fails.
    pub(super) fn fail(&mut self, e: &RecordError) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        let mut out = self.wbuf.split_off(self.wpos.min(self.wbuf.len()));
        self.wbuf.clear();
        self.wpos = 0;
        if let (Some(d), Some(sealer)) = (e.alert(), self.sealer.as_mut())
            && sealer
                .seal_to(&record::fatal_alert(d), Content::Alert, &mut out)
                .is_err()
        {
            out.clear();
        }
        let mut rest = &out[..];
        while !rest.is_empty() {
            match self.sock.try_write(rest) {
                Ok(n) if n > 0 => rest = &rest[n..],
                _ => break,
            }
        }
        self.sock.shutdown_now();
    }

    /// Reads more ciphertext into `rbuf`, first moving what is left to its start.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
            self.plain = 0..0;
        }
        if self.rbuf.len() - self.rend < MAX_RECORD {
            self.rbuf.resize(self.rend + MAX_RECORD.max(READ_BUFFER), 0);
        }
        let mut rb = ReadBuf::new(&mut self.rbuf[self.rend..]);
        ready!(Pin::new(&mut self.sock).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection without a TLS close_notify",
            )));
        }
        self.rend += n;
        Poll::Ready(Ok(()))
    }

    /// Takes the stream apart for [`Receiver::run`]: the socket, the receive state, and
    /// what was already read but not consumed (plaintext, then ciphertext).
    pub(crate) fn into_receiver(mut self) -> (Link, Receiver) {
        let mut plain = std::mem::take(&mut self.early);
        plain.extend_from_slice(&self.rbuf[self.plain.clone()]);
        let cipher = self.rbuf[self.rstart..self.rend].to_vec();
        (
            self.sock,
            Receiver {
                sealer: self.sealer,
                opener: self.opener,
                keys: self.keys,
                plain,
                cipher,
                peer_closed: self.peer_closed,
            },
        )
    }
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
            match this.open_next() {
                Ok(true) => {}
                Ok(false) => ready!(this.poll_fill(cx))?,
                Err(e) => {
                    this.fail(&e);
                    return Poll::Ready(Err(e.into()));
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
