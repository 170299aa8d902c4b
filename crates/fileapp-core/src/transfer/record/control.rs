//! The records that carry no data: alerts, post-handshake messages (key updates,
//! tickets, joined across records when split), and the cap on how many of them may come
//! in a row.

use super::{Content, RecordError};

/// Records in a row without application data the receiver accepts, of each kind: empty
/// data records and session tickets on one count, key updates on another; the next one
/// of a kind is [`RecordError::TooManyWithoutData`]. Data starts both counts again.
/// rustls 0.23 allows 32 consecutive empty fragments (`conn.rs`,
/// `ALLOWED_CONSECUTIVE_EMPTY_FRAGMENTS_MAX`) and 32 key updates without data in between
/// (`common_state.rs`, `INITIAL_KEY_UPDATE_REQUESTS`, after BoringSSL's `kMaxKeyUpdates`);
/// it does not count tickets, which we count with the empty records, so a stock rustls
/// server's few tickets plus its 32 key updates still pass.
pub const MAX_WITHOUT_DATA: u8 = 32;

/// Counts the records in a row without application data; see [`MAX_WITHOUT_DATA`].
#[derive(Debug, Clone, Default)]
pub struct Quiet {
    empty: u8,
    updates: u8,
}

impl Quiet {
    fn tick(count: &mut u8) -> Result<(), RecordError> {
        if *count >= MAX_WITHOUT_DATA {
            return Err(RecordError::TooManyWithoutData);
        }
        *count += 1;
        Ok(())
    }

    /// Notes an empty data record or a handshake record without a key update.
    pub fn empty(&mut self) -> Result<(), RecordError> {
        Self::tick(&mut self.empty)
    }

    /// Notes a key update.
    pub fn key_update(&mut self) -> Result<(), RecordError> {
        Self::tick(&mut self.updates)
    }

    /// Notes a handshake record that asks for `control`.
    pub fn handshake(&mut self, control: Control) -> Result<(), RecordError> {
        match control {
            Control::KeyUpdate { .. } => self.key_update(),
            _ => self.empty(),
        }
    }

    /// Notes an application-data record of `len` payload bytes: data starts the counts
    /// again, an empty one counts.
    #[inline]
    pub fn record(&mut self, len: usize) -> Result<(), RecordError> {
        if len == 0 {
            return self.empty();
        }
        *self = Quiet::default();
        Ok(())
    }
}

/// Which end of the TLS connection we are: only a client receives session tickets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// A KeyUpdate handshake message, update not requested (RFC 8446 §4.6.3).
pub const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];
/// The close_notify alert: warning level, description 0.
pub const CLOSE_NOTIFY: [u8; 2] = [1, 0];

/// What a non-data record asks of the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The peer finished sending (close_notify).
    Closed,
    /// Switch to the next receive key; `requested` asks us to update ours too.
    KeyUpdate { requested: bool },
    /// Nothing to do (a NewSessionTicket, which we never use).
    Nothing,
}

/// Interprets the payload of an alert record.
pub fn alert(payload: &[u8]) -> Result<Control, RecordError> {
    match payload {
        [_, 0] => Ok(Control::Closed),
        [_, d] => Err(RecordError::Alert(*d)),
        _ => Err(RecordError::BadHandshake),
    }
}

/// The longest post-handshake message joined from fragments (rustls 0.23:
/// `MAX_HANDSHAKE_SIZE`, 0xffff); a longer one is a decode_error as soon as its header
/// says so.
pub const MAX_HANDSHAKE: usize = 0xffff;

/// The complete handshake messages at the start of `payload`, received by `side`: what
/// they ask, and the bytes of an incomplete last message (empty if none). A key update
/// must end its record (RFC 8446 §5.1); a NewSessionTicket is only for a client (RFC
/// 8446 §4.6.1: the server sends it), so a server that receives one, or anyone
/// receiving another message, fails with [`RecordError::UnexpectedMessage`].
fn messages(payload: &[u8], side: Side) -> Result<(Control, &[u8]), RecordError> {
    let mut rest = payload;
    let mut out = Control::Nothing;
    while !rest.is_empty() {
        if out != Control::Nothing {
            return Err(RecordError::BadHandshake);
        }
        let [t, a, b, c, body @ ..] = rest else {
            return Ok((out, rest));
        };
        let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
        if len > MAX_HANDSHAKE {
            return Err(RecordError::BadHandshake);
        }
        if body.len() < len {
            return Ok((out, rest));
        }
        out = match (*t, &body[..len]) {
            (24, [0]) => Control::KeyUpdate { requested: false },
            (24, [1]) => Control::KeyUpdate { requested: true },
            (24, _) => return Err(RecordError::BadHandshake),
            // NewSessionTicket: resumption is off, so it is of no use.
            (4, _) if side == Side::Client => Control::Nothing,
            (t, _) => return Err(RecordError::UnexpectedMessage(t)),
        };
        rest = &body[len..];
    }
    Ok((out, rest))
}

/// Interprets the payload of one post-handshake handshake record received by `side`,
/// on its own: several messages may share it (see [`messages`] for what is refused),
/// and one split over records is a [`RecordError::BadHandshake`]. Receivers use a
/// [`Joiner`], which joins split ones.
pub fn handshake(payload: &[u8], side: Side) -> Result<Control, RecordError> {
    match messages(payload, side)? {
        (control, []) => Ok(control),
        _ => Err(RecordError::BadHandshake),
    }
}

/// Joins post-handshake messages split over several records (RFC 8446 §5.1; stock
/// rustls does so with a small `max_fragment_size`). While a message is incomplete no
/// other record type may come ([`RecordError::Interleaved`]).
#[derive(Debug, Default)]
pub struct Joiner {
    partial: Vec<u8>,
}

impl Joiner {
    /// Whether a handshake message is incomplete: the next record must continue it.
    #[inline]
    pub fn pending(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Checks a record of `content` may come now.
    #[inline]
    pub fn check(&self, content: Content) -> Result<(), RecordError> {
        if self.pending() && content != Content::Handshake {
            return Err(RecordError::Interleaved);
        }
        Ok(())
    }

    /// Interprets the payload of a handshake record: what the messages it completes ask
    /// (a key update only if it ends the record); keeps an incomplete last message.
    pub fn record(&mut self, payload: &[u8], side: Side) -> Result<Control, RecordError> {
        if self.partial.is_empty() {
            let (control, rest) = messages(payload, side)?;
            self.partial.extend_from_slice(rest);
            return Ok(control);
        }
        let mut buf = std::mem::take(&mut self.partial);
        buf.extend_from_slice(payload);
        let (control, used) = {
            let (control, rest) = messages(&buf, side)?;
            (control, buf.len() - rest.len())
        };
        buf.drain(..used);
        self.partial = buf;
        Ok(control)
    }
}
