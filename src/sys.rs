//! The platform seam: the few system calls that std does not offer (vectored positional
//! reads, `sendfile`, open flags, an exit hook, a read-only file mapping), each as one
//! safe function or type.
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
/// False if the C library had no room left for it.
pub fn at_exit(f: extern "C" fn()) -> bool {
    // SAFETY: atexit only stores the function pointer; `f` is a plain `extern "C" fn`
    // with no arguments, which is exactly what it expects.
    unsafe { libc::atexit(f) == 0 }
}

/// A read-only, shared mapping of `len` bytes of a file from `base` on (Linux): lets a
/// hasher read back what was just written, straight from the page cache, without a copy.
#[cfg(target_os = "linux")]
pub(crate) struct FileWindow<'f> {
    file: &'f std::fs::File,
    base: u64,
    len: usize,
    ptr: *mut std::ffi::c_void,
}

#[cfg(target_os = "linux")]
impl<'f> FileWindow<'f> {
    /// Maps `len` bytes of `file` from `base` (a multiple of the page size) on. The
    /// window may extend past the end of the file; only [`FileWindow::bytes`] below the
    /// end are ever read.
    ///
    /// # Safety
    /// While the window lives, no one may truncate `file` or write the bytes that
    /// [`FileWindow::bytes`] hands out: the slices it returns would change under the
    /// borrow, and a read past a truncated end faults (SIGBUS). The caller states why
    /// that holds (for a download: the partial is ours and locked).
    pub(crate) unsafe fn map(
        file: &'f std::fs::File,
        base: u64,
        len: usize,
    ) -> std::io::Result<Self> {
        use rustix::mm::{MapFlags, ProtFlags, mmap};
        // SAFETY: a new read-only mapping chosen by the kernel (null hint), so it aliases
        // no memory of ours; `file` is open for reading, and the mapping stays valid
        // even after the descriptor is closed. It is unmapped only in `drop`.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                file,
                base,
            )
        }?;
        Ok(FileWindow {
            file,
            base,
            len,
            ptr,
        })
    }

    /// Where the window starts in the file.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The file's bytes `from..to` (absolute offsets, inside the window). Fails if the
    /// file is shorter than `to`: touching a mapped page past its end would raise
    /// SIGBUS.
    pub(crate) fn bytes(&self, from: u64, to: u64) -> std::io::Result<&[u8]> {
        let end = self.base.saturating_add(self.len as u64);
        if from < self.base || from > to || to > end {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{from}..{to} is outside the mapped {}..{end}", self.base),
            ));
        }
        let file_len = self.file.metadata()?.len();
        if to > file_len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{from}..{to} is past the end of the file ({file_len} bytes)"),
            ));
        }
        // SAFETY: `from..to` lies inside the mapping (checked above) and below the end
        // of the file, so every page is backed by the file and readable. The slice
        // borrows `self`, so it cannot outlive the mapping. That its contents do not
        // change while borrowed is the contract `map`'s caller took on.
        Ok(unsafe {
            std::slice::from_raw_parts(
                (self.ptr as *const u8).add((from - self.base) as usize),
                (to - from) as usize,
            )
        })
    }
}

#[cfg(target_os = "linux")]
impl Drop for FileWindow<'_> {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly what mmap returned and was given, this is
        // the only unmap, and no slice from `bytes` outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::FileWindow;
    use std::io::Write;

    #[test]
    fn a_window_reads_what_is_written_and_nothing_past_the_end() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        // SAFETY: a temporary file only this test uses; it only grows while mapped.
        let w = unsafe { FileWindow::map(&f, 0, 1 << 20) }.unwrap();
        assert_eq!(w.bytes(0, 10_000).unwrap(), &data[..]);
        assert_eq!(w.bytes(4096, 4100).unwrap(), &data[4096..4100]);
        assert!(w.bytes(0, 10_001).is_err(), "past the end of the file");
        assert!(w.bytes(5, 4).is_err(), "backwards");
        assert!(w.bytes(0, (1 << 20) + 1).is_err(), "past the window");
        // The file grows: the same window sees the new bytes.
        (&f).write_all(&[42; 100]).unwrap();
        assert_eq!(w.bytes(10_000, 10_100).unwrap(), &[42; 100][..]);
        // A window further on starts at its base.
        // SAFETY: as above.
        let w2 = unsafe { FileWindow::map(&f, 4096, 8192) }.unwrap();
        assert!(w2.bytes(0, 10).is_err(), "before the window");
        assert_eq!(w2.bytes(4096, 5000).unwrap(), &data[4096..5000]);
    }
}
