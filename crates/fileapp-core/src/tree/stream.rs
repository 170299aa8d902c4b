//! The tree stream (`docs/PROTOCOL.md` §3.2): what follows an `Ok` answer to a folder
//! request. The manifest header, then one record per entry in manifest order, each file
//! entry followed by its bytes (all of them, some or none: see [`start_of`]), then an
//! end record. The owner may instead end with an abort record saying why.
//!
//! ```text
//! stream  header (32) | record... | 'Z'
//! record  'E' entry [file bytes]  |  'X' len u16 | message (len ≤ 512, UTF-8)  |  'Z'
//! ```
//!
//! [`TreeReader`] decodes it incrementally and checks everything a requester relies
//! on: the manifest's own rules, totals that match the header, and at the end the hash
//! of the manifest it saw (which the requester compares with the folder's hash).
//! [`TreeStart`] is what a requester sends right after its request header: where to
//! resume.

use super::manifest::{self, Decoded, Entry, Header, ManifestError, ManifestHasher};
use super::manifest::{HEADER_LEN, MAX_ENTRY_LEN};

/// Tag of an entry record.
pub const TAG_ENTRY: u8 = b'E';
/// Tag of an abort record.
pub const TAG_ABORT: u8 = b'X';
/// Tag of the end record.
pub const TAG_END: u8 = b'Z';
/// Longest abort message.
pub const MAX_ABORT_LEN: usize = 512;
/// Longest record without file bytes.
const MAX_RECORD: usize = 1 + MAX_ENTRY_LEN;

/// First four bytes of a [`TreeStart`].
pub const START_MAGIC: [u8; 4] = *b"FATS";
/// Encoded length of a [`TreeStart`].
pub const START_LEN: usize = 4 + 1 + 8 + 8;

/// Where a folder download (re)starts: the first entry the requester still needs and
/// how many bytes of it it has. Honoured only when the request's expected hash is the
/// folder's current hash; otherwise everything is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeStart {
    pub index: u64,
    pub offset: u64,
}

impl TreeStart {
    /// The reserved start of a **listing request** (`docs/PROTOCOL.md` §3.4): index and
    /// offset both `u64::MAX`. The owner answers with the manifest part of the tree
    /// stream only (no entry carries bytes, as for any start past the last entry) and
    /// only if the request's expected hash is the folder's current one.
    pub const LISTING: TreeStart = TreeStart {
        index: u64::MAX,
        offset: u64::MAX,
    };

    pub fn encode(&self) -> [u8; START_LEN] {
        let mut b = [0u8; START_LEN];
        b[..4].copy_from_slice(&START_MAGIC);
        b[4] = 1;
        b[5..13].copy_from_slice(&self.index.to_le_bytes());
        b[13..21].copy_from_slice(&self.offset.to_le_bytes());
        b
    }

    /// `None` until [`START_LEN`] bytes are there; an error for a wrong magic.
    pub fn decode(buf: &[u8]) -> Result<Option<TreeStart>, TreeError> {
        let n = buf.len().min(5);
        if buf[..n] != [b'F', b'A', b'T', b'S', 1][..n] {
            return Err(TreeError::Start);
        }
        if buf.len() < START_LEN {
            return Ok(None);
        }
        let u = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(a)
        };
        Ok(Some(TreeStart {
            index: u(5),
            offset: u(13),
        }))
    }
}

/// The first byte of entry `index` (of `size` bytes) that the stream carries, given the
/// honoured resume point: `size` (nothing) before it, the offset at it (0 if the offset
/// is past the end), 0 after it.
pub fn start_of(resume: Option<TreeStart>, index: u64, size: u64) -> u64 {
    match resume {
        Some(r) if index < r.index => size,
        Some(r) if index == r.index && r.offset <= size => r.offset,
        _ => 0,
    }
}

/// Why a tree stream is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("bad manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("unknown record tag 0x{0:02x}")]
    Tag(u8),
    #[error("more entries, files or bytes than the header announced")]
    TooMany,
    #[error("the stream ended with fewer entries, files or bytes than announced")]
    TooFew,
    #[error("an abort message of {0} bytes is too long")]
    AbortLength(usize),
    #[error("bytes after the end of the stream")]
    Trailing,
    #[error("not a folder download start")]
    Start,
}

/// What the reader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    Header(Header),
    /// Entry number `index`; for a file, its bytes from `start` follow as [`Event::Data`],
    /// then [`Event::FileEnd`].
    Entry {
        index: u64,
        entry: Entry,
        start: u64,
    },
    Data(&'a [u8]),
    FileEnd,
    /// The owner gave up, saying why.
    Abort(String),
    /// The stream is complete; `hash` is the hash of the manifest it carried.
    End {
        hash: [u8; 32],
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Record,
    Data { left: u64 },
    Done,
}

/// One record without its file bytes.
enum Record {
    Entry(Entry),
    Abort(String),
    End,
}

/// Incremental decoder of a tree stream; see the module comment.
#[derive(Debug, Clone)]
pub struct TreeReader {
    resume: Option<TreeStart>,
    state: State,
    /// An incomplete record (at most [`MAX_RECORD`] bytes).
    pending: Vec<u8>,
    header: Header,
    hasher: Option<ManifestHasher>,
    index: u64,
    files: u64,
    bytes: u64,
    previous: Option<String>,
}

impl TreeReader {
    /// A reader for a stream that honours `resume` (`None`: everything is sent).
    pub fn new(resume: Option<TreeStart>) -> TreeReader {
        TreeReader {
            resume,
            state: State::Header,
            pending: Vec::new(),
            header: Header::default(),
            hasher: None,
            index: 0,
            files: 0,
            bytes: 0,
            previous: None,
        }
    }

    /// How many entries were read: the index of the next one.
    pub fn position(&self) -> u64 {
        self.index
    }

    /// Whether the end (or an abort) was read.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `input`: how many bytes it used and what it found.
    /// `(0, None)` means it needs more input. Call again with the rest until then.
    pub fn step<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<Event<'a>>), TreeError> {
        match self.state {
            State::Done if input.is_empty() => Ok((0, None)),
            State::Done => Err(TreeError::Trailing),
            State::Data { left: 0 } => {
                self.state = State::Record;
                Ok((0, Some(Event::FileEnd)))
            }
            State::Data { left } => {
                let n = (left.min(input.len() as u64)) as usize;
                if n == 0 {
                    return Ok((0, None));
                }
                self.state = State::Data {
                    left: left - n as u64,
                };
                Ok((n, Some(Event::Data(&input[..n]))))
            }
            State::Header => {
                let (used, found) = self.gather(input, |b| Ok(Header::decode(b)?))?;
                let Some(h) = found else {
                    return Ok((used, None));
                };
                self.header = h;
                self.hasher = Some(ManifestHasher::new(&h));
                self.state = State::Record;
                Ok((used, Some(Event::Header(h))))
            }
            State::Record => {
                let (used, found) = self.gather(input, decode_record)?;
                let event = match found {
                    None => None,
                    Some(Record::Entry(e)) => Some(self.entry(e)?),
                    Some(Record::Abort(m)) => {
                        self.state = State::Done;
                        Some(Event::Abort(m))
                    }
                    Some(Record::End) => Some(self.end()?),
                };
                Ok((used, event))
            }
        }
    }

    /// Decodes one item with `decode`, from `pending` plus `input` if a piece is
    /// pending. Returns the bytes of `input` used.
    fn gather<T>(
        &mut self,
        input: &[u8],
        decode: impl Fn(&[u8]) -> Result<Decoded<T>, TreeError>,
    ) -> Result<(usize, Option<T>), TreeError> {
        if self.pending.is_empty() {
            return match decode(input)? {
                Decoded::Done(t, used) => Ok((used, Some(t))),
                Decoded::NeedMore => {
                    self.pending.extend_from_slice(input);
                    Ok((input.len(), None))
                }
            };
        }
        let had = self.pending.len();
        let room = MAX_RECORD.max(HEADER_LEN).saturating_sub(had);
        let take = input.len().min(room);
        self.pending.extend_from_slice(&input[..take]);
        match decode(&self.pending)? {
            Decoded::Done(t, used) => {
                self.pending.clear();
                Ok((used - had, Some(t)))
            }
            Decoded::NeedMore => Ok((take, None)),
        }
    }

    fn entry<'a>(&mut self, e: Entry) -> Result<Event<'a>, TreeError> {
        manifest::check_order(self.previous.as_deref(), &e.path)?;
        self.index += 1;
        if e.is_file() {
            self.files += 1;
            self.bytes = self.bytes.checked_add(e.size).ok_or(TreeError::TooMany)?;
        }
        let h = &self.header;
        if self.index > h.entries || self.files > h.files || self.bytes > h.bytes {
            return Err(TreeError::TooMany);
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.add(&e);
        }
        let index = self.index - 1;
        let start = if e.is_file() {
            start_of(self.resume, index, e.size)
        } else {
            0
        };
        self.state = if e.is_file() {
            State::Data {
                left: e.size - start,
            }
        } else {
            State::Record
        };
        self.previous = Some(e.path.clone());
        Ok(Event::Entry {
            index,
            entry: e,
            start,
        })
    }

    fn end<'a>(&mut self) -> Result<Event<'a>, TreeError> {
        let h = &self.header;
        if (self.index, self.files, self.bytes) != (h.entries, h.files, h.bytes) {
            return Err(TreeError::TooFew);
        }
        self.state = State::Done;
        let hash = self.hasher.as_ref().map(|h| h.finish()).unwrap_or_default();
        Ok(Event::End { hash })
    }
}

fn decode_record(buf: &[u8]) -> Result<Decoded<Record>, TreeError> {
    let Some(&tag) = buf.first() else {
        return Ok(Decoded::NeedMore);
    };
    match tag {
        TAG_ENTRY => Ok(match Entry::decode(&buf[1..])? {
            Decoded::NeedMore => Decoded::NeedMore,
            Decoded::Done(e, n) => Decoded::Done(Record::Entry(e), n + 1),
        }),
        TAG_END => Ok(Decoded::Done(Record::End, 1)),
        TAG_ABORT => {
            if buf.len() < 3 {
                return Ok(Decoded::NeedMore);
            }
            let len = u16::from_le_bytes([buf[1], buf[2]]) as usize;
            if len > MAX_ABORT_LEN {
                return Err(TreeError::AbortLength(len));
            }
            if buf.len() < 3 + len {
                return Ok(Decoded::NeedMore);
            }
            let m = String::from_utf8_lossy(&buf[3..3 + len]).into_owned();
            Ok(Decoded::Done(Record::Abort(m), 3 + len))
        }
        t => Err(TreeError::Tag(t)),
    }
}

/// Appends an entry record (without its file bytes).
pub fn put_entry(e: &Entry, out: &mut Vec<u8>) {
    out.push(TAG_ENTRY);
    e.encode_into(out);
}

/// Appends an abort record (the message cut to [`MAX_ABORT_LEN`] bytes).
pub fn put_abort(message: &str, out: &mut Vec<u8>) {
    let m = crate::transfer::header::truncate_utf8(message, MAX_ABORT_LEN);
    out.push(TAG_ABORT);
    out.extend_from_slice(&(m.len() as u16).to_le_bytes());
    out.extend_from_slice(m.as_bytes());
}

/// Appends the end record.
pub fn put_end(out: &mut Vec<u8>) {
    out.push(TAG_END);
}
