//! Shared folders, the driver half: offering one ([`offer`]: walk, hash on every core),
//! serving one ([`serve`]: the tree stream over one connection) and downloading one
//! (`transfer::fetch::tree`: staged, verified, resumable). The formats are the core's
//! ([`fileapp_core::tree`]); `docs/PROTOCOL.md` §3 describes them.
//!
//! Only the tree is ever served: every file is opened below the folder's own descriptor
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so no symlink, `..` or swapped
//! folder leads out of it, and the inode opened must be the one that was hashed.

// System calls go through `crate::sys`, the one place allowed `unsafe`.
#![forbid(unsafe_code)]

pub mod offer;
pub mod serve;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io;
use std::path::PathBuf;

use fileapp_core::tree::{Entry, Header};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::library::Stamp;

/// An offered folder: what was hashed at offer time, entry by entry.
#[derive(Debug)]
pub struct Folder {
    /// The offered name, with its trailing `/`.
    pub name: String,
    /// The folder's canonical path when it was offered.
    pub root: PathBuf,
    pub header: Header,
    /// The manifest's hash: what the index lists.
    pub hash: [u8; 32],
    /// Sorted by path, as in the manifest.
    pub entries: Vec<Entry>,
    /// Per entry, the stamp of the file that was hashed (`None` for folders).
    pub(crate) stamps: Vec<Option<Stamp>>,
    /// Symlinks, devices, sockets and FIFOs that were left out.
    pub skipped: u64,
}

impl Folder {
    /// The entry at `path`, with its index.
    pub fn find(&self, path: &str) -> Option<(usize, &Entry)> {
        let i = (self.entries)
            .binary_search_by(|e| e.path.as_bytes().cmp(path.as_bytes()))
            .ok()?;
        Some((i, &self.entries[i]))
    }
}

fn flags(dir: bool) -> OFlags {
    let base = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY;
    if dir {
        base | OFlags::DIRECTORY
    } else {
        // Never hang on a FIFO dropped into the tree.
        base | OFlags::NONBLOCK
    }
}

/// Opens `path` (relative, `/`-separated, already checked by `valid_tree_path`) below
/// `root`, following no symlink on the way and never leaving `root`.
pub(crate) fn open_beneath(root: &File, path: &str, dir: bool) -> io::Result<File> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(root, path, flags(dir), Mode::empty(), resolve) {
        Ok(fd) => Ok(File::from(fd)),
        // Kernels before 5.6 (or sandboxes without openat2): one component at a time,
        // each opened with O_NOFOLLOW relative to the one before.
        Err(e) if e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM => {
            open_by_components(root, path, dir)
        }
        Err(e) => Err(e.into()),
    }
}

fn open_by_components(root: &File, path: &str, dir: bool) -> io::Result<File> {
    let parts: Vec<&str> = path.split('/').collect();
    let mut cur = root.try_clone()?;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() || *part == "." || *part == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a tree path",
            ));
        }
        let last = i + 1 == parts.len();
        let fd = rustix::fs::openat(&cur, *part, flags(!last || dir), Mode::empty())?;
        cur = File::from(fd);
    }
    Ok(cur)
}

/// Opens the folder `name` (no `/`) directly inside the shared folder `dir`; it must be
/// a folder itself, not a symlink to one.
pub(crate) fn open_root(dir: &std::path::Path, name: &str) -> io::Result<File> {
    let shared = File::open(dir)?;
    open_beneath(&shared, name, true)
}
