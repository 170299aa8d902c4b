//! Sans-io unpacking of received TLS 1.3 records, the pure half of the bulk receive path
//! (the `fileapp` crate's `transfer::tls::receive` is the I/O loop around it).
//!
//! Given a buffer of bytes as they came off the socket, [`Unpacker::unpack`] finds the
//! complete records in it, opens each in place and moves its plaintext down so that the
//! data of all of them ends up side by side at the start of the buffer, ready to be
//! hashed and written in one run. Records without data are dealt with on the way: a key
//! update switches to the peer's next key (the caller derives it), session tickets and
//! empty records are skipped, close_notify ends the stream, any other alert is an error.
//! More than [`record::MAX_WITHOUT_DATA`] records in a row without data are an error, so
//! a peer cannot keep the receiver busy without sending anything. The receiver is the
//! requester, the TLS client: session tickets are allowed.
//! Plaintext past the announced data length is the trailer (the owner's hash), kept
//! apart up to its announced length; more than that is an error.
//!
//! Uses only std, rustls' secret type and the record codec, and is fuzzed: no input
//! bytes make it panic.

use std::fmt;

use rustls::ConnectionTrafficSecrets;

use super::record::{self, Content, Control, Joiner, Opener, Quiet, RecordError, Side};

/// Why unpacking failed. Every one of these ends the transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnpackError {
    /// A record that is malformed, forged or not allowed here (a fatal alert, say).
    Record(RecordError),
    /// The peer updated its key and its next key could not be had.
    KeyUpdate(RecordError),
    /// More plaintext than the data and the trailer announced.
    TooMuch,
}

impl UnpackError {
    /// The fatal alert that tells the peer about this error, if one should be sent.
    pub fn alert(&self) -> Option<u8> {
        match self {
            UnpackError::Record(e) => e.alert(),
            UnpackError::KeyUpdate(_) => Some(record::alert::INTERNAL_ERROR),
            UnpackError::TooMuch => Some(record::alert::UNEXPECTED_MESSAGE),
        }
    }
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnpackError::Record(e) | UnpackError::KeyUpdate(e) => e.fmt(f),
            UnpackError::TooMuch => f.write_str("the owner sent more data than announced"),
        }
    }
}

impl std::error::Error for UnpackError {}

impl From<RecordError> for UnpackError {
    fn from(e: RecordError) -> Self {
        UnpackError::Record(e)
    }
}

/// How far a buffer is unpacked: `buf[..data]` is data, packed; `buf[records..]` is
/// ciphertext not opened yet. Between the two lies nothing of use. A fresh buffer that
/// starts with ciphertext is `Cursor::default()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub data: usize,
    pub records: usize,
}

/// The peer's next traffic secrets and the sequence number they start at, asked for when
/// it updates its key.
pub type NextKey<'a> = dyn FnMut() -> Result<(u64, ConnectionTrafficSecrets), RecordError> + 'a;

/// The receive state of one transfer: `want` bytes of data, then `trailer` bytes.
pub struct Unpacker {
    opener: Opener,
    want: u64,
    got: u64,
    trailer_len: usize,
    trailer: Vec<u8>,
    closed: bool,
    quiet: Quiet,
    joiner: Joiner,
}

impl Unpacker {
    /// Expects `want` bytes of data and then `trailer` bytes, in records that `opener`
    /// opens.
    pub fn new(opener: Opener, want: u64, trailer: usize) -> Unpacker {
        Unpacker {
            opener,
            want,
            got: 0,
            trailer_len: trailer,
            trailer: Vec::with_capacity(trailer),
            closed: false,
            quiet: Quiet::default(),
            joiner: Joiner::default(),
        }
    }

    /// Counts plaintext that was opened elsewhere (before the bulk path took over):
    /// returns how much of its start is data; the rest is kept as trailer.
    pub fn take_plaintext(&mut self, plain: &[u8]) -> Result<usize, UnpackError> {
        let data = (self.want - self.got).min(plain.len() as u64) as usize;
        let extra = &plain[data..];
        if self.trailer.len() + extra.len() > self.trailer_len {
            return Err(UnpackError::TooMuch);
        }
        self.trailer.extend_from_slice(extra);
        self.got += data as u64;
        Ok(data)
    }

    /// Opens every complete record in `buf` from `at.records` on and packs their data
    /// after `at.data`, stopping early at close_notify. Returns where the buffer now
    /// stands: what is left from `records` on is at most the start of a record (or
    /// whatever followed close_notify). Calls `next_key` at each key update.
    ///
    /// Panics if `at` does not lie in `buf` in order (`data <= records <= buf.len()`), a
    /// mistake of the caller; no content of `buf` makes it panic.
    pub fn unpack(
        &mut self,
        buf: &mut [u8],
        at: Cursor,
        next_key: &mut NextKey<'_>,
    ) -> Result<Cursor, UnpackError> {
        assert!(
            at.data <= at.records && at.records <= buf.len(),
            "cursor {at:?} outside a buffer of {}",
            buf.len()
        );
        let Cursor {
            mut data,
            mut records,
        } = at;
        while !self.closed {
            let Some(n) = Opener::record_len(&buf[records..])? else {
                break;
            };
            // The record lies at `records..records + n`; its plaintext lands at `data`.
            let opened = self
                .opener
                .open_within(&mut buf[data..records + n], records - data)?;
            let payload = data..data + opened.payload.len();
            records += n;
            self.joiner.check(opened.content)?;
            match opened.content {
                Content::ApplicationData => {
                    self.quiet.record(payload.len())?;
                    data += self.take_plaintext(&buf[payload])?;
                }
                Content::Alert => {
                    if record::alert(&buf[payload])? == Control::Closed {
                        self.closed = true;
                    }
                }
                Content::Handshake => {
                    // Only a key update matters; tickets are of no use to us.
                    let control = self.joiner.record(&buf[payload], Side::Client)?;
                    self.quiet.handshake(control)?;
                    if let Control::KeyUpdate { .. } = control {
                        let (seq, secrets) = next_key().map_err(UnpackError::KeyUpdate)?;
                        self.opener
                            .rekey(&secrets, seq)
                            .map_err(UnpackError::KeyUpdate)?;
                    }
                }
            }
        }
        Ok(Cursor { data, records })
    }

    /// Bytes of data so far (not counting the trailer).
    pub fn received(&self) -> u64 {
        self.got
    }

    /// Whether all the data and the whole trailer have come.
    pub fn is_done(&self) -> bool {
        self.got == self.want && self.trailer.len() == self.trailer_len
    }

    /// Whether the peer sent close_notify: nothing more will come.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The trailer so far (all of it once [`Unpacker::is_done`]).
    pub fn trailer(&self) -> &[u8] {
        &self.trailer
    }

    /// The trailer, for the caller to check.
    pub fn into_trailer(self) -> Vec<u8> {
        self.trailer
    }
}

#[cfg(test)]
mod tests;
