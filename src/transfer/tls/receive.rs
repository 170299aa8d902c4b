//! The bulk receive path for the requester: [`Receiver::run`] reads records from a
//! blocking socket into large buffers, a cache-sized step at a time, and lets the
//! sans-io [`super::unpack`] open them in place; filled buffers of plaintext go to the
//! caller's writer.

use std::io;

use super::record::{self, CLOSE_NOTIFY, Content, MAX_RECORD, Opener, RecordError, Sealer};
use super::unpack::{Cursor, UnpackError, Unpacker};
use super::{Keys, READ_STEP, RECEIVE_BUFFER, next_rx_secrets};

/// The receive half of a [`super::TlsStream`], for the requester's bulk path.
pub(crate) struct Receiver {
    /// Seals our last record: close_notify when everything came, or the fatal alert that
    /// says why we stop (`None` while the send path holds it).
    pub(super) sealer: Option<Sealer>,
    pub(super) opener: Opener,
    pub(super) keys: Keys,
    /// Plaintext already decrypted, to be delivered first.
    pub plain: Vec<u8>,
    /// Ciphertext already read, to be opened before reading more.
    pub cipher: Vec<u8>,
    pub(super) peer_closed: bool,
}

/// One buffer of opened records: their plaintext is `buf[..len]`, side by side.
pub(crate) struct Plaintext {
    pub buf: Vec<u8>,
    pub len: usize,
}

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

impl From<UnpackError> for ReceiveError {
    fn from(e: UnpackError) -> Self {
        match e {
            UnpackError::Record(e) => ReceiveError::Record(e),
            // A failed key derivation, as the I/O error the reader reported before.
            UnpackError::KeyUpdate(e) => ReceiveError::Io(e.into()),
            UnpackError::TooMuch => ReceiveError::TooMuch,
        }
    }
}

impl ReceiveError {
    /// The alert that tells the peer why we stop, if it is the peer's doing.
    fn alert(&self) -> Option<u8> {
        match self {
            ReceiveError::Record(e) => e.alert(),
            ReceiveError::TooMuch => Some(record::alert::UNEXPECTED_MESSAGE),
            ReceiveError::Io(_) | ReceiveError::Closed(_) | ReceiveError::Stopped => None,
        }
    }
}

/// The socket the bulk receive path reads, and writes its one last record to.
pub(crate) trait Wire: io::Read {
    /// Writes as much of `bytes` as the socket takes at once, without waiting; errors
    /// are ignored (the record is a courtesy to the peer).
    fn send_now(&mut self, bytes: &[u8]);
}

impl Wire for std::net::TcpStream {
    fn send_now(&mut self, mut bytes: &[u8]) {
        use std::io::Write;
        if self.set_nonblocking(true).is_err() {
            return;
        }
        while !bytes.is_empty() {
            match self.write(bytes) {
                Ok(n) if n > 0 => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
        let _ = self.set_nonblocking(false);
    }
}

impl Wire for crate::transfer::link::BlockingLink {
    fn send_now(&mut self, bytes: &[u8]) {
        match self {
            Self::Tcp(s) => s.send_now(bytes),
            Self::Quic(s) => s.send_now(bytes),
        }
    }
}

/// Recorded streams in tests: nothing to write to.
impl Wire for &[u8] {
    fn send_now(&mut self, _: &[u8]) {}
}

impl Receiver {
    /// [`Receiver::receive`], then our last record: close_notify once everything came
    /// (the transfer is over for us too), or on an error that is the peer's the fatal
    /// alert that matches it, sealed with the current key and sent without waiting.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        mut self,
        sock: &mut impl Wire,
        want: u64,
        trailer: usize,
        fresh: impl FnMut() -> Option<Vec<u8>>,
        each: impl FnMut(&[u8]),
        deliver: impl FnMut(Plaintext) -> bool,
    ) -> Result<Vec<u8>, ReceiveError> {
        let sealer = self.sealer.take();
        let r = self.receive(sock, want, trailer, fresh, each, deliver);
        let last = match &r {
            Ok(_) => Some(CLOSE_NOTIFY),
            Err(e) => e.alert().map(record::fatal_alert),
        };
        if let (Some(last), Some(mut sealer)) = (last, sealer) {
            let mut out = Vec::new();
            if sealer.seal_to(&last, Content::Alert, &mut out).is_ok() {
                sock.send_now(&out);
            }
        }
        r
    }

    /// Reads records from `sock` (blocking) until `want` bytes of plaintext have come,
    /// then `trailer` more bytes, which it returns (the owner's hash, when it hashes).
    /// The data of each step read is shown to `each` as soon as its records are opened
    /// (still in cache, and in one run for a fast hash), then every filled buffer goes to
    /// `deliver`; `fresh` supplies empty buffers. Fails on a bad record, an alert, too
    /// many bytes, or the connection closing early.
    fn receive(
        mut self,
        sock: &mut impl io::Read,
        want: u64,
        trailer: usize,
        mut fresh: impl FnMut() -> Option<Vec<u8>>,
        mut each: impl FnMut(&[u8]),
        mut deliver: impl FnMut(Plaintext) -> bool,
    ) -> Result<Vec<u8>, ReceiveError> {
        let mut u = Unpacker::new(self.opener, want, trailer);
        if !self.plain.is_empty() {
            let buf = std::mem::take(&mut self.plain);
            let len = u.take_plaintext(&buf)?;
            each(&buf[..len]);
            if len > 0 && !deliver(Plaintext { buf, len }) {
                return Err(ReceiveError::Stopped);
            }
        }
        let mut reading = Reading {
            keys: self.keys,
            carry: std::mem::take(&mut self.cipher),
            eof: false,
            peer_closed: self.peer_closed,
        };
        // A buffer that ended up with no data (only control records) is used again, so
        // the pool `fresh` draws from never shrinks.
        let mut spare = None;
        while !u.is_done() {
            if reading.peer_closed || u.is_closed() || reading.eof {
                // Whatever is left is an incomplete record that can no longer grow.
                return Err(ReceiveError::Closed(u.received()));
            }
            let Some(buf) = spare.take().or_else(&mut fresh) else {
                return Err(ReceiveError::Stopped);
            };
            let filled = reading.fill(sock, &mut u, buf, &mut each)?;
            if filled.len == 0 {
                spare = Some(filled.buf);
            } else if !deliver(filled) {
                return Err(ReceiveError::Stopped);
            }
        }
        Ok(u.into_trailer())
    }
}

/// The state [`Receiver::run`] keeps from one buffer to the next.
struct Reading {
    keys: Keys,
    /// Ciphertext of an incomplete record, left at the end of the last buffer.
    carry: Vec<u8>,
    /// The socket reached its end.
    eof: bool,
    /// The peer's close_notify came before the bulk path started.
    peer_closed: bool,
}

impl Reading {
    /// Fills `buf` with records from `sock` and unpacks them, a step of [`READ_STEP`]
    /// at a time, showing each step's data to `each`; stops when the buffer cannot take
    /// another record, or the transfer is complete, or nothing more can come.
    fn fill(
        &mut self,
        sock: &mut impl io::Read,
        u: &mut Unpacker,
        mut buf: Vec<u8>,
        each: &mut impl FnMut(&[u8]),
    ) -> Result<Plaintext, ReceiveError> {
        let size = RECEIVE_BUFFER.max(self.carry.len() + MAX_RECORD);
        if buf.len() < size {
            buf.resize(size, 0);
        }
        buf[..self.carry.len()].copy_from_slice(&self.carry);
        // Records are read at `at.records..filled`; their data is packed at
        // `..at.data`, of which `..shown` has been through `each`.
        let (mut filled, mut at, mut shown) = (self.carry.len(), Cursor::default(), 0);
        let keys = &self.keys;
        let mut next_key = || next_rx_secrets(keys);
        // Read a cache-sized step at a time and open it at once, while it is hot.
        loop {
            at = u.unpack(&mut buf[..filled], at, &mut next_key)?;
            if shown < at.data {
                each(&buf[shown..at.data]);
                shown = at.data;
            }
            let stop = u.is_done() || u.is_closed() || self.peer_closed || self.eof;
            if stop || filled + MAX_RECORD > buf.len() {
                break;
            }
            let end = buf.len().min(filled + READ_STEP);
            match sock.read(&mut buf[filled..end]) {
                Ok(0) => self.eof = true,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReceiveError::Io(e)),
            }
        }
        self.carry.clear();
        self.carry.extend_from_slice(&buf[at.records..filled]);
        Ok(Plaintext { buf, len: at.data })
    }
}
