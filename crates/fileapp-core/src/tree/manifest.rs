//! The manifest of a folder, byte by byte (`docs/PROTOCOL.md` §3.1), and its hash.
//!
//! ```text
//! header  "FAMF" | version 1 | 3 zero bytes | entries u64 | files u64 | bytes u64   (32)
//! entry   kind u8 (0 folder, 1 file) | len u16 | path (len bytes, UTF-8) | mode u32
//!         file only: size u64 | mtime seconds i64 | mtime nanoseconds u32 | BLAKE3 (32)
//! ```
//!
//! Little-endian integers. Entries are sorted by path, bytewise, strictly (no
//! duplicates); a path is relative to the offered folder ([`super::valid_tree_path`]).
//! The folder's hash is BLAKE3 of the header followed by every entry.

use super::{MAX_ENTRIES, MAX_PATH_LEN, MODE_MASK, valid_tree_path};

/// First four bytes of a manifest.
pub const MANIFEST_MAGIC: [u8; 4] = *b"FAMF";
/// Manifest format version.
pub const MANIFEST_VERSION: u8 = 1;
/// Encoded length of [`Header`].
pub const HEADER_LEN: usize = 32;
/// Fixed part of an encoded entry (kind, length, mode).
const ENTRY_FIXED: usize = 1 + 2 + 4;
/// What a file entry adds (size, mtime, hash).
const FILE_EXTRA: usize = 8 + 8 + 4 + 32;
/// Longest encoded entry.
pub const MAX_ENTRY_LEN: usize = ENTRY_FIXED + MAX_PATH_LEN + FILE_EXTRA;

/// Totals of a manifest, first in it (so a receiver can size its progress bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Number of entries (folders and files) that follow.
    pub entries: u64,
    /// How many of them are files.
    pub files: u64,
    /// Sum of the files' sizes.
    pub bytes: u64,
}

/// A folder or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// One entry of a manifest. For a folder, `size`, `mtime` and `hash` are zero and not
/// encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Relative path, `/`-separated.
    pub path: String,
    /// Permission bits (`& 0o777`).
    pub mode: u32,
    pub size: u64,
    /// Modification time: seconds since the epoch and nanoseconds (< 10^9).
    pub mtime: (i64, u32),
    pub hash: [u8; 32],
}

/// Why manifest bytes are not a valid manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("not a manifest (bad magic or version)")]
    Magic,
    #[error("the manifest's totals are impossible")]
    Totals,
    #[error("unknown entry kind {0}")]
    Kind(u8),
    #[error("a path of {0} bytes is too long")]
    PathLength(usize),
    #[error(
        "a path is not one this side can hold (empty part, '.', '..', '\\' or a control character)"
    )]
    Path,
    #[error("entries are not sorted (or repeat)")]
    Order,
    #[error("a mode or time out of range")]
    Field,
}

/// What decoding found so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    NeedMore,
    /// The item and how many bytes it took.
    Done(T, usize),
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&MANIFEST_MAGIC);
        b[4] = MANIFEST_VERSION;
        b[8..16].copy_from_slice(&self.entries.to_le_bytes());
        b[16..24].copy_from_slice(&self.files.to_le_bytes());
        b[24..32].copy_from_slice(&self.bytes.to_le_bytes());
        b
    }

    pub fn decode(buf: &[u8]) -> Result<Decoded<Header>, ManifestError> {
        if buf.len() < HEADER_LEN {
            // Reject a wrong magic as soon as it is visible.
            let n = buf.len().min(5);
            let want = [&MANIFEST_MAGIC[..], &[MANIFEST_VERSION]].concat();
            if buf[..n] != want[..n] {
                return Err(ManifestError::Magic);
            }
            return Ok(Decoded::NeedMore);
        }
        if buf[..4] != MANIFEST_MAGIC || buf[4] != MANIFEST_VERSION || buf[5..8] != [0; 3] {
            return Err(ManifestError::Magic);
        }
        let h = Header {
            entries: u64_at(buf, 8),
            files: u64_at(buf, 16),
            bytes: u64_at(buf, 24),
        };
        if h.entries > MAX_ENTRIES || h.files > h.entries {
            return Err(ManifestError::Totals);
        }
        Ok(Decoded::Done(h, HEADER_LEN))
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

impl Entry {
    /// A folder entry.
    pub fn dir(path: impl Into<String>, mode: u32) -> Entry {
        Entry {
            kind: Kind::Dir,
            path: path.into(),
            mode: mode & MODE_MASK,
            size: 0,
            mtime: (0, 0),
            hash: [0; 32],
        }
    }

    /// A file entry.
    pub fn file(
        path: impl Into<String>,
        mode: u32,
        size: u64,
        mtime: (i64, u32),
        hash: [u8; 32],
    ) -> Entry {
        Entry {
            kind: Kind::File,
            path: path.into(),
            mode: mode & MODE_MASK,
            size,
            mtime,
            hash,
        }
    }

    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }

    /// Appends the encoding to `out`. The path must be valid (the offer checks it).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let path = self.path.as_bytes();
        let len = path.len().min(MAX_PATH_LEN);
        out.push(match self.kind {
            Kind::Dir => 0,
            Kind::File => 1,
        });
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&path[..len]);
        out.extend_from_slice(&(self.mode & MODE_MASK).to_le_bytes());
        if self.kind == Kind::File {
            out.extend_from_slice(&self.size.to_le_bytes());
            out.extend_from_slice(&self.mtime.0.to_le_bytes());
            out.extend_from_slice(&self.mtime.1.to_le_bytes());
            out.extend_from_slice(&self.hash);
        }
    }

    /// Decodes one entry from the front of `buf`. Checks the entry alone (path, mode,
    /// time); the order of entries is [`check_order`]'s.
    pub fn decode(buf: &[u8]) -> Result<Decoded<Entry>, ManifestError> {
        let Some(&kind) = buf.first() else {
            return Ok(Decoded::NeedMore);
        };
        let kind = match kind {
            0 => Kind::Dir,
            1 => Kind::File,
            k => return Err(ManifestError::Kind(k)),
        };
        if buf.len() < 3 {
            return Ok(Decoded::NeedMore);
        }
        let len = u16::from_le_bytes([buf[1], buf[2]]) as usize;
        if len > MAX_PATH_LEN {
            return Err(ManifestError::PathLength(len));
        }
        let total = ENTRY_FIXED + len + if kind == Kind::File { FILE_EXTRA } else { 0 };
        if buf.len() < total {
            return Ok(Decoded::NeedMore);
        }
        let path = std::str::from_utf8(&buf[3..3 + len]).map_err(|_| ManifestError::Path)?;
        if !valid_tree_path(path) {
            return Err(ManifestError::Path);
        }
        let at = 3 + len;
        let mode = u32_at(buf, at);
        if mode & !MODE_MASK != 0 {
            return Err(ManifestError::Field);
        }
        let mut e = Entry::dir(path, mode);
        if kind == Kind::File {
            let at = at + 4;
            let secs = u64_at(buf, at + 8) as i64;
            let nanos = u32_at(buf, at + 16);
            if nanos >= 1_000_000_000 {
                return Err(ManifestError::Field);
            }
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&buf[at + 20..at + 52]);
            e = Entry::file(path, mode, u64_at(buf, at), (secs, nanos), hash);
        }
        Ok(Decoded::Done(e, total))
    }
}

/// Entries must be sorted by path, bytewise, with no repeats.
pub fn check_order(previous: Option<&str>, next: &str) -> Result<(), ManifestError> {
    match previous {
        Some(p) if p.as_bytes() >= next.as_bytes() => Err(ManifestError::Order),
        _ => Ok(()),
    }
}

/// Computes a folder's hash from its header and entries, in order, as they are encoded.
#[derive(Debug, Clone)]
pub struct ManifestHasher {
    hasher: blake3::Hasher,
    scratch: Vec<u8>,
}

impl ManifestHasher {
    pub fn new(header: &Header) -> ManifestHasher {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&header.encode());
        ManifestHasher {
            hasher,
            scratch: Vec::with_capacity(256),
        }
    }

    pub fn add(&mut self, e: &Entry) {
        self.scratch.clear();
        e.encode_into(&mut self.scratch);
        self.hasher.update(&self.scratch);
    }

    /// Adds bytes that are already one encoded entry.
    pub fn add_encoded(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    pub fn finish(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }
}

/// The header and hash of a complete list of entries (sorted by the caller).
pub fn summarize(entries: &[Entry]) -> (Header, [u8; 32]) {
    let header = Header {
        entries: entries.len() as u64,
        files: entries.iter().filter(|e| e.is_file()).count() as u64,
        bytes: entries.iter().map(|e| e.size).sum(),
    };
    let mut h = ManifestHasher::new(&header);
    entries.iter().for_each(|e| h.add(e));
    (header, h.finish())
}
