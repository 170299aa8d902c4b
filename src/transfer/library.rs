//! The offered library: the shared folder, the offered names and their cached hashes,
//! and the one safe way to open an offered file.
//!
//! Safety rules, enforced at offer time *and again at every open*, because the folder can
//! change under us between the two:
//! - only names in the offered set are served, and only names that pass
//!   [`crate::proto::valid_file_name`] (no `/`, `\`, `.`, `..`, control characters);
//! - the opened file must be a regular file whose canonical path lies directly inside the
//!   canonical shared folder, and the file we hold open must be the very inode that
//!   canonical path names (so a symlink swapped in between the checks is caught);
//! - the hash sent is always the hash of the file as it is now: the cache is keyed by
//!   (size, mtime, device, inode), and a mismatch means re-hashing before answering.

// System calls go through `crate::sys`, the one place allowed `unsafe`.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::tree::Folder;
use crate::proto::valid_file_name;

/// Why a file cannot be offered (or served).
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("{0} is not a plain file name")]
    BadName(String),
    #[error("{0} is not a regular file in the shared folder")]
    NotAFile(String),
    #[error("{0} does not exist in the shared folder")]
    NotFound(String),
    #[error("no shared folder is set")]
    NoFolder,
    #[error("{0} kept changing while it was being hashed")]
    Unstable(String),
    #[error("cannot read {0}: {1}")]
    Io(String, io::Error),
    #[error(
        "{0}/ holds '{1}', a name not every receiver can hold (not UTF-8, or a '\\' or control character)"
    )]
    TreeName(String, String),
    #[error("{0}/ has more than {1} entries")]
    TooManyEntries(String, u64),
}

/// Identity and version of a file as seen by `fstat`. If any of these change, the cached
/// hash is no longer trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) size: u64,
    mtime: (i64, i64),
    dev: u64,
    ino: u64,
}

impl Stamp {
    pub(crate) fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// A cached hash and the stamp of the file it is the hash of.
pub(super) type Cached = (Stamp, [u8; 32]);

/// Size and hash of an offered file (as of its last hashing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    pub size: u64,
    pub hash: [u8; 32],
}

/// A file checked and hashed without holding the library lock; see
/// [`Library::prepare_offer`].
#[derive(Debug, Clone)]
pub struct PreparedOffer {
    name: String,
    stamp: Stamp,
    hash: [u8; 32],
}

impl PreparedOffer {
    pub fn info(&self) -> FileInfo {
        FileInfo {
            size: self.stamp.size,
            hash: self.hash,
        }
    }
}

/// The shared folder, the offered names, and their cached hashes.
#[derive(Debug, Default)]
pub struct Library {
    dir: Option<PathBuf>,
    offered: BTreeSet<String>,
    hashes: HashMap<String, Cached>,
    /// Offered folders by their name (with its trailing `/`).
    folders: HashMap<String, Arc<Folder>>,
}

pub type SharedLibrary = Arc<RwLock<Library>>;

impl Library {
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Sets the shared folder (canonicalized when possible). Offered names are kept and
    /// now refer to files in the new folder; cached hashes are dropped.
    pub fn set_dir(&mut self, dir: PathBuf) {
        self.dir = Some(std::fs::canonicalize(&dir).unwrap_or(dir));
        self.hashes.clear();
    }

    pub fn offered(&self) -> &BTreeSet<String> {
        &self.offered
    }

    /// Size and hash of an offered file as of its last hashing (`None` if not offered).
    /// The provider re-hashes before serving a file that changed, so this can lag behind
    /// the disk until then.
    pub fn file_info(&self, name: &str) -> Option<FileInfo> {
        if !self.offered.contains(name) {
            return None;
        }
        if let Some(f) = self.folders.get(name) {
            return Some(FileInfo {
                size: f.header.bytes,
                hash: f.hash,
            });
        }
        self.hashes.get(name).map(|(s, h)| FileInfo {
            size: s.size,
            hash: *h,
        })
    }

    /// Checks that `name` is a plain name of a regular file in the folder, hashes it
    /// (blocking; call from a blocking context) and adds it to the offered set.
    /// Holds `&mut self` while hashing; with a shared library prefer
    /// [`Library::prepare_offer`] + [`Library::add_offer`] so serving is not blocked.
    pub fn offer(&mut self, name: &str) -> Result<FileInfo, OfferError> {
        let dir = self.dir.clone().ok_or(OfferError::NoFolder)?;
        let prepared = Library::prepare_offer(&dir, name)?;
        let info = prepared.info();
        self.add_offer(prepared);
        Ok(info)
    }

    /// The checking and hashing half of [`Library::offer`], with no library borrowed.
    /// Blocking.
    pub fn prepare_offer(dir: &Path, name: &str) -> Result<PreparedOffer, OfferError> {
        let (file, path, _) = open_in_dir(dir, name)?;
        let (stamp, hash) = hash_open_file(&file, &path, name)?;
        Ok(PreparedOffer {
            name: name.to_string(),
            stamp,
            hash,
        })
    }

    /// Adds a file checked by [`Library::prepare_offer`].
    pub fn add_offer(&mut self, p: PreparedOffer) {
        self.offered.insert(p.name.clone());
        self.hashes.insert(p.name, (p.stamp, p.hash));
    }

    /// Adds a folder checked and hashed by
    /// [`crate::transfer::tree::offer::prepare_folder`], replacing an earlier version.
    pub fn add_folder(&mut self, f: Folder) -> Arc<Folder> {
        let f = Arc::new(f);
        self.offered.insert(f.name.clone());
        self.folders.insert(f.name.clone(), f.clone());
        f
    }

    /// The offered folder `name` (with its `/`).
    pub fn folder(&self, name: &str) -> Option<Arc<Folder>> {
        if !self.offered.contains(name) {
            return None;
        }
        self.folders.get(name).cloned()
    }

    /// Stops offering `name`. Returns whether it was offered.
    pub fn unoffer(&mut self, name: &str) -> bool {
        self.folders.remove(name);
        self.hashes.remove(name);
        self.offered.remove(name)
    }

    /// For serving `name`: the folder and its cached stamp and hash (if any), or `None`
    /// if it is not offered or no folder is set.
    pub(super) fn lookup(&self, name: &str) -> Option<(PathBuf, Option<Cached>)> {
        if !self.offered.contains(name) {
            return None;
        }
        let dir = self.dir.clone()?;
        Some((dir, self.hashes.get(name).copied()))
    }

    /// Caches a fresh hash of `name`, only if it is still offered: an unoffer that raced
    /// with the hashing must win.
    pub(super) fn store_hash(&mut self, name: &str, stamp: Stamp, hash: [u8; 32]) {
        if self.offered.contains(name) {
            self.hashes.insert(name.to_string(), (stamp, hash));
        }
    }
}

/// Opens `name` inside `dir` under the rules in the module comment. Returns the open file,
/// its canonical path and its stamp. Blocking.
pub(super) fn open_in_dir(dir: &Path, name: &str) -> Result<(File, PathBuf, Stamp), OfferError> {
    if !valid_file_name(name) {
        return Err(OfferError::BadName(name.to_string()));
    }
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => OfferError::NotFound(name.to_string()),
        _ => OfferError::Io(name.to_string(), e),
    };
    let dir =
        std::fs::canonicalize(dir).map_err(|e| OfferError::Io(dir.display().to_string(), e))?;
    // Opening must not hang on a FIFO someone dropped into the folder (see the flags).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(crate::sys::untrusted_open_flags())
        .open(dir.join(name))
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(OfferError::NotAFile(name.to_string()));
    }
    // Symlinks are allowed only if they resolve to a file directly inside the folder.
    let real = std::fs::canonicalize(dir.join(name)).map_err(io_err)?;
    if real.parent() != Some(dir.as_path()) {
        return Err(OfferError::NotAFile(name.to_string()));
    }
    // The inode we hold must be the one the checked path names; otherwise the entry was
    // swapped (e.g. for a symlink to elsewhere) between open and check.
    let real_meta = std::fs::metadata(&real).map_err(io_err)?;
    if (real_meta.dev(), real_meta.ino()) != (meta.dev(), meta.ino()) {
        return Err(OfferError::NotAFile(name.to_string()));
    }
    Ok((file, real, Stamp::of(&meta)))
}

/// Hashes an open file (through its checked path, on all cores), making sure the file
/// did not change while being hashed and is still the same inode. Retries a few times if
/// it is being written to. Blocking.
pub(super) fn hash_open_file(
    file: &File,
    path: &Path,
    name: &str,
) -> Result<(Stamp, [u8; 32]), OfferError> {
    let io_err = |e: io::Error| OfferError::Io(name.to_string(), e);
    for _ in 0..3 {
        let before = Stamp::of(&file.metadata().map_err(io_err)?);
        let hash = super::hash_file(path).map_err(io_err)?;
        let after = Stamp::of(&file.metadata().map_err(io_err)?);
        let path_meta = std::fs::metadata(path).map_err(io_err)?;
        let same_inode = (path_meta.dev(), path_meta.ino()) == (after.dev, after.ino);
        if before == after && same_inode {
            return Ok((after, hash));
        }
        if !same_inode {
            return Err(OfferError::NotAFile(name.to_string()));
        }
    }
    Err(OfferError::Unstable(name.to_string()))
}

#[cfg(test)]
mod tests;
