//! The platform seam of the transfer paths: the few system calls that std does not offer
//! (vectored positional reads), through `rustix`'s safe wrappers.
//!
//! This is the one place where `unsafe` would go if a call had no safe wrapper; today none
//! is needed, so the module forbids it. Errors come back as `std::io::Error`, so callers
//! match on `ErrorKind` as they would for std calls.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, IoSliceMut};

/// `preadv`: fills `bufs` in order from `file` at byte `offset`, in one system call.
/// Returns the bytes read (short at the end of the file; 0 there).
pub fn pread_vectored(file: &File, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize> {
    Ok(rustix::io::preadv(file, bufs, offset)?)
}
