//! Sans-io codec for the TCP transfer protocol (see `docs/PROTOCOL.md §2`).
//!
//! One connection carries one transfer. The requester sends a [`Request`]; the provider
//! answers with a [`Response`] and, if the status is [`Status::Ok`], exactly
//! `size - start` raw file bytes, then closes.
//!
//! Every field has a fixed width or a small length prefix with a hard cap, so a decoder
//! never needs more than [`MAX_REQUEST_LEN`] / [`MAX_RESPONSE_LEN`] bytes to decide, and
//! rejects a hostile length as soon as the length byte arrives. Integers are little-endian.
//! Decoding is incremental: feed whatever bytes have arrived; the answer is
//! [`Decoded::NeedMore`], [`Decoded::Done`] with the number of bytes consumed, or an error.

use crate::proto::{MAX_FILE_NAME_LEN, MAX_NAME_LEN};

/// First four bytes of a request.
pub const REQUEST_MAGIC: [u8; 4] = *b"FAXQ";
/// First four bytes of a response.
pub const RESPONSE_MAGIC: [u8; 4] = *b"FAXR";
/// Transfer protocol version.
pub const VERSION: u8 = 1;
/// Longest response message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 512;

/// Request flag: a 32-byte expected hash follows the offset.
pub const FLAG_HAS_HASH: u8 = 0x01;
/// Request flag: send data only if the file's hash equals the expected hash; otherwise
/// answer [`Status::Changed`] without data. Used to compare against an existing file.
pub const FLAG_IF_MATCH: u8 = 0x02;
/// Request flag: the requester will not hash what it receives. The owner hashes the
/// bytes as it reads and sends them and, after the data, sends that BLAKE3 hash (32
/// bytes) as a trailer. Only for whole-file requests (no expected hash, offset 0) over
/// TLS, where the records' AEAD proves the requester got exactly the bytes hashed.
pub const FLAG_OWNER_HASHES: u8 = 0x04;
/// Length of the trailer that [`FLAG_OWNER_HASHES`] asks for.
pub const OWNER_HASH_LEN: usize = 32;
const KNOWN_FLAGS: u8 = FLAG_HAS_HASH | FLAG_IF_MATCH | FLAG_OWNER_HASHES;

/// Longest possible encoded request.
pub const MAX_REQUEST_LEN: usize = 4 + 1 + 1 + 1 + MAX_FILE_NAME_LEN + 1 + MAX_NAME_LEN + 8 + 32;
/// Longest possible encoded response header.
pub const MAX_RESPONSE_LEN: usize = 4 + 1 + 1 + 2 + MAX_MESSAGE_LEN + 8 + 32 + 8;

/// Requester -> provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The offered file name (1..=255 bytes). Not checked for path safety here: the
    /// provider does that, so it can refuse with a message.
    pub file: String,
    /// The requester's client name (0..=64 bytes), for the provider's messages.
    pub requester: String,
    /// Where to start, if `expected_hash` still matches the provider's file.
    pub offset: u64,
    /// Hash of the whole file the partial download was started against.
    pub expected_hash: Option<[u8; 32]>,
    /// Only send data if `expected_hash` matches (see [`FLAG_IF_MATCH`]).
    pub if_match: bool,
    /// The owner hashes what it sends and sends the hash after the data (see
    /// [`FLAG_OWNER_HASHES`]).
    pub owner_hashes: bool,
}

/// Outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Data follows.
    Ok = 0,
    /// The name is not (or no longer) offered.
    NotOffered = 1,
    /// `if_match` was set and the file's hash differs; `size` and `hash` describe it.
    Changed = 2,
    /// Too many transfers in progress; try later.
    Busy = 3,
    /// Anything else; see the message.
    Error = 4,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::NotOffered,
            2 => Status::Changed,
            3 => Status::Busy,
            4 => Status::Error,
            _ => return None,
        })
    }
}

/// Provider -> requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    /// Short human-readable reason (0..=512 bytes of UTF-8); empty on success.
    pub message: String,
    /// Size of the whole file (0 when unknown, e.g. on refusal).
    pub size: u64,
    /// BLAKE3 hash of the whole file (zero when unknown).
    pub hash: [u8; 32],
    /// First byte that follows; 0 unless the requester's resume hash matched.
    /// `start <= size` always holds for a decoded `Ok` response.
    pub start: u64,
}

impl Response {
    /// A refusal with `message` cut to [`MAX_MESSAGE_LEN`] bytes at a character boundary.
    pub fn refuse(status: Status, message: &str) -> Response {
        Response {
            status,
            message: truncate_utf8(message, MAX_MESSAGE_LEN).to_string(),
            size: 0,
            hash: [0; 32],
            start: 0,
        }
    }
}

/// Result of an incremental decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// The bytes so far are a valid prefix; read more.
    NeedMore,
    /// A complete header, and how many bytes of the input it used.
    Done(T, usize),
}

/// Why bytes are not a valid header, or a header cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported transfer protocol version {0}")]
    Version(u8),
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    #[error("{0} length {1} out of range")]
    Length(&'static str, usize),
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    #[error("unknown status {0}")]
    Status(u8),
    #[error("start offset {start} beyond file size {size}")]
    Offset { start: u64, size: u64 },
    #[error("owner hashing is only for whole-file requests")]
    OwnerHashesPartial,
}

/// Cuts `s` to at most `max` bytes without splitting a character.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A cursor that reports "need more" instead of failing when the input runs out.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// `None` = the input ended; the caller turns it into [`Decoded::NeedMore`].
impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(b))
    }
    fn hash(&mut self) -> Option<[u8; 32]> {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.take(32)?);
        Some(b)
    }
}

/// Checks the magic against however many bytes are present, so garbage is rejected at
/// the first wrong byte rather than after a timeout.
fn check_magic(buf: &[u8], magic: &[u8; 4]) -> Result<(), HeaderError> {
    let n = buf.len().min(4);
    if buf[..n] != magic[..n] {
        return Err(HeaderError::BadMagic);
    }
    Ok(())
}

/// Decodes a string field; `len` was already checked against its cap.
fn string(
    c: &mut Cursor<'_>,
    len: usize,
    what: &'static str,
) -> Option<Result<String, HeaderError>> {
    let bytes = c.take(len)?;
    Some(
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| HeaderError::Utf8(what)),
    )
}

/// Evaluates an `Option` from the cursor; `None` means the input is a valid prefix.
macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(Decoded::NeedMore),
        }
    };
}

impl Request {
    /// Encodes the request. Fails if a field exceeds its cap or the file name is empty.
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        let (file, who) = (self.file.as_bytes(), self.requester.as_bytes());
        if file.is_empty() || file.len() > MAX_FILE_NAME_LEN {
            return Err(HeaderError::Length("file name", file.len()));
        }
        if who.len() > MAX_NAME_LEN {
            return Err(HeaderError::Length("requester name", who.len()));
        }
        let mut flags = 0;
        if self.expected_hash.is_some() {
            flags |= FLAG_HAS_HASH;
        }
        if self.if_match {
            flags |= FLAG_IF_MATCH;
        }
        if self.owner_hashes {
            if self.expected_hash.is_some() || self.offset != 0 {
                return Err(HeaderError::OwnerHashesPartial);
            }
            flags |= FLAG_OWNER_HASHES;
        }
        let mut out = Vec::with_capacity(MAX_REQUEST_LEN);
        out.extend_from_slice(&REQUEST_MAGIC);
        out.push(VERSION);
        out.push(flags);
        out.push(file.len() as u8);
        out.extend_from_slice(file);
        out.push(who.len() as u8);
        out.extend_from_slice(who);
        out.extend_from_slice(&self.offset.to_le_bytes());
        if let Some(h) = &self.expected_hash {
            out.extend_from_slice(h);
        }
        Ok(out)
    }

    /// Decodes a request from the start of `buf`. Never panics.
    pub fn decode(buf: &[u8]) -> Result<Decoded<Request>, HeaderError> {
        check_magic(buf, &REQUEST_MAGIC)?;
        let mut c = Cursor { buf, pos: 0 };
        need!(c.take(4));
        let version = need!(c.u8());
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        let flags = need!(c.u8());
        if flags & !KNOWN_FLAGS != 0 {
            return Err(HeaderError::Flags(flags));
        }
        let file_len = need!(c.u8()) as usize;
        if file_len == 0 {
            return Err(HeaderError::Length("file name", 0));
        }
        let file = need!(string(&mut c, file_len, "file name"))?;
        let who_len = need!(c.u8()) as usize;
        if who_len > MAX_NAME_LEN {
            return Err(HeaderError::Length("requester name", who_len));
        }
        let requester = need!(string(&mut c, who_len, "requester name"))?;
        let offset = need!(c.u64());
        let expected_hash = if flags & FLAG_HAS_HASH != 0 {
            Some(need!(c.hash()))
        } else {
            None
        };
        let owner_hashes = flags & FLAG_OWNER_HASHES != 0;
        if owner_hashes && (expected_hash.is_some() || offset != 0) {
            return Err(HeaderError::OwnerHashesPartial);
        }
        let req = Request {
            file,
            requester,
            offset,
            expected_hash,
            if_match: flags & FLAG_IF_MATCH != 0,
            owner_hashes,
        };
        Ok(Decoded::Done(req, c.pos))
    }
}

impl Response {
    /// Encodes the response header. Fails if the message exceeds its cap or an `Ok`
    /// response starts beyond the end of the file.
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        let msg = self.message.as_bytes();
        if msg.len() > MAX_MESSAGE_LEN {
            return Err(HeaderError::Length("message", msg.len()));
        }
        if self.status == Status::Ok && self.start > self.size {
            return Err(HeaderError::Offset {
                start: self.start,
                size: self.size,
            });
        }
        let mut out = Vec::with_capacity(MAX_RESPONSE_LEN);
        out.extend_from_slice(&RESPONSE_MAGIC);
        out.push(VERSION);
        out.push(self.status as u8);
        out.extend_from_slice(&(msg.len() as u16).to_le_bytes());
        out.extend_from_slice(msg);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.start.to_le_bytes());
        Ok(out)
    }

    /// Decodes a response header from the start of `buf`; bytes after it are file data.
    /// Never panics.
    pub fn decode(buf: &[u8]) -> Result<Decoded<Response>, HeaderError> {
        check_magic(buf, &RESPONSE_MAGIC)?;
        let mut c = Cursor { buf, pos: 0 };
        need!(c.take(4));
        let version = need!(c.u8());
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        let status_byte = need!(c.u8());
        let status = Status::from_u8(status_byte).ok_or(HeaderError::Status(status_byte))?;
        let msg_len = need!(c.u16()) as usize;
        if msg_len > MAX_MESSAGE_LEN {
            return Err(HeaderError::Length("message", msg_len));
        }
        let message = need!(string(&mut c, msg_len, "message"))?;
        let size = need!(c.u64());
        let hash = need!(c.hash());
        let start = need!(c.u64());
        if status == Status::Ok && start > size {
            return Err(HeaderError::Offset { start, size });
        }
        let resp = Response {
            status,
            message,
            size,
            hash,
            start,
        };
        Ok(Decoded::Done(resp, c.pos))
    }
}

#[cfg(test)]
mod tests;
