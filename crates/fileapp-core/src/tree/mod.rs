//! Shared folders ("trees"): the manifest that describes one, and the stream that
//! carries one over a transfer connection. Sans-io: bytes in, entries and events out.
//!
//! A folder is offered as one entry whose name ends in `/` (see
//! [`valid_folder_offer`]); its size is the total of its files and its hash is the
//! BLAKE3 hash of its **manifest** ([`manifest`]): a header, then every folder and file
//! below the offered folder, sorted by relative path, each with its mode (and, for
//! files, size, mtime and BLAKE3 hash). The tree stream ([`stream`], `docs/PROTOCOL.md`
//! §3) is that manifest with each file's bytes right after its entry, so a requester
//! reads, checks and writes one entry at a time and never holds the manifest.

pub mod manifest;
pub mod stream;
#[cfg(test)]
mod tests;

use crate::proto::valid_file_name;

pub use manifest::{Entry, Header, Kind, ManifestHasher};
pub use stream::{Event, TreeError, TreeReader, TreeStart};

/// Longest relative path inside a tree, in bytes (Linux `PATH_MAX` is 4096 with the NUL).
pub const MAX_PATH_LEN: usize = 4000;
/// Most entries (files and folders) one tree may have.
pub const MAX_ENTRIES: u64 = 16_000_000;
/// Permission bits kept in a manifest (`rwx` for user, group, other, plus setgid/sticky
/// are dropped: only `0o777`).
pub const MODE_MASK: u32 = 0o777;

/// Is `path` a relative path every receiver can hold inside a tree? Components
/// separated by single `/`, each a plain file name ([`valid_file_name`]: 1..=255 bytes,
/// no `\`, not `.` or `..`, no control characters), at most [`MAX_PATH_LEN`] bytes.
pub fn valid_tree_path(path: &str) -> bool {
    !path.is_empty() && path.len() <= MAX_PATH_LEN && path.split('/').all(valid_file_name)
}

/// Is `name` an offered folder's name: a plain file name followed by one `/`?
pub fn valid_folder_offer(name: &str) -> bool {
    name.len() <= crate::proto::MAX_FILE_NAME_LEN
        && name.strip_suffix('/').is_some_and(valid_file_name)
}

/// Is `name` acceptable as an offered entry: a plain file name, or a folder's name with
/// its trailing `/`?
pub fn valid_offer_name(name: &str) -> bool {
    valid_file_name(name) || valid_folder_offer(name)
}

/// Splits a requested name into the offered folder and the path inside it:
/// `photos/` → (`photos/`, None), `photos/2024/a.jpg` → (`photos/`, Some(`2024/a.jpg`)).
/// `None` for a plain file name or a malformed path.
pub fn split_request(name: &str) -> Option<(&str, Option<&str>)> {
    let slash = name.find('/')?;
    let (folder, rest) = name.split_at(slash + 1);
    if !valid_folder_offer(folder) {
        return None;
    }
    if rest.is_empty() {
        return Some((folder, None));
    }
    valid_tree_path(rest).then_some((folder, Some(rest)))
}
