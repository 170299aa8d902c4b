//! The platform seam: the few system calls that std does not offer (vectored positional
//! reads, `sendfile`, open flags, an exit hook), each as one safe function.
//!
//! This is the one module where `unsafe` may go, and only where a call has no safe
//! wrapper in std or `rustix`: each block carries a `// SAFETY:` comment (the workspace
//! denies `clippy::undocumented_unsafe_blocks`), and the modules that call in here forbid
//! `unsafe` themselves. Errors come back as `std::io::Error`, so callers match on
//! `ErrorKind` as they would for std calls.

use std::fs::File;
use std::io::{self, IoSliceMut};

/// `preadv`: fills `bufs` in order from `file` at byte `offset`, in one system call.
/// Returns the bytes read (short at the end of the file; 0 there).
pub fn pread_vectored(file: &File, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize> {
    Ok(rustix::io::preadv(file, bufs, offset)?)
}

/// `sendfile`: copies up to `count` bytes of `file` from `*offset` to the socket `out` in
/// the kernel, advancing `*offset` by what it sent. A full non-blocking socket gives
/// `ErrorKind::WouldBlock`.
#[cfg(target_os = "linux")]
pub fn sendfile(
    out: &impl std::os::fd::AsFd,
    file: &File,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    Ok(rustix::fs::sendfile(out, file, Some(offset), count)?)
}

/// Open flags for a file offered from a folder others can write to: `O_NONBLOCK`, so
/// opening a FIFO dropped there cannot hang us (no effect on regular files), and
/// `O_NOCTTY`, so opening a terminal device cannot make it ours. For
/// `OpenOptionsExt::custom_flags`.
pub fn untrusted_open_flags() -> i32 {
    use rustix::fs::OFlags;
    // The flags are small positive constants; the cast keeps their bits.
    (OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32
}

/// Registers `f` to run when the process exits (`exit`, or a return from `main`).
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: atexit only stores the function pointer; `f` is a plain `extern "C" fn`
    // with no arguments, which is exactly what it expects.
    unsafe {
        libc::atexit(f);
    }
}
