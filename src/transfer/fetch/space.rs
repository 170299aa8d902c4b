//! Disk space for a download: fail at once when the file system clearly lacks room,
//! reserve space a step ahead of the writer ([`Reserve`]), and never reserve on tmpfs.

use std::fs::File;
use std::io;

use super::config::RESERVE_STEP;

/// Fails at once if the file system clearly lacks room for `offset..size`, rather than
/// near the end of a long download. A file system that cannot tell is not checked.
pub(super) fn check_space(file: &File, offset: u64, size: u64) -> io::Result<()> {
    #[cfg(unix)]
    if let Ok(st) = rustix::fs::fstatvfs(file) {
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let need = size.saturating_sub(offset);
        // No blocks at all: a pseudo file system that reports nothing useful.
        if st.f_blocks > 0 && free < need {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("not enough free space: {need} bytes needed, {free} available"),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (file, offset, size);
    Ok(())
}

/// Reserves disk space a step ahead of the writer (`fallocate`, keeping the file's
/// length): the file system allocates in large runs instead of page by page, and the
/// file is laid out in one piece. File systems that cannot do it are written as usual,
/// and so is tmpfs: there `fallocate` allocates the memory pages themselves, in bursts
/// that stall the writer (downloads measured about 5% slower), and memory does not
/// fragment.
pub(super) struct Reserve {
    /// Space is reserved up to this offset.
    pub(super) reserved: u64,
    size: u64,
    /// Off on tmpfs, off Linux, and once the file system said it cannot.
    pub(super) enabled: bool,
}

impl Reserve {
    /// How far ahead of the write position space is kept reserved (bytes).
    pub(super) const STEP: u64 = RESERVE_STEP;

    /// For a file holding `offset` bytes that will grow to `size`.
    pub(super) fn new(file: &File, offset: u64, size: u64) -> Reserve {
        Reserve {
            reserved: offset,
            size,
            enabled: cfg!(target_os = "linux") && !in_memory(file),
        }
    }

    /// Called before writing at `pos`.
    pub(super) fn ahead(&mut self, file: &File, pos: u64) -> io::Result<()> {
        if !self.enabled || self.reserved >= self.size || pos + Self::STEP <= self.reserved {
            return Ok(());
        }
        let end = self.size.min(pos + 2 * Self::STEP);
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{FallocateFlags, fallocate};
            match fallocate(
                file,
                FallocateFlags::KEEP_SIZE,
                self.reserved,
                end - self.reserved,
            ) {
                Ok(()) => {}
                Err(rustix::io::Errno::NOSPC) => {
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        "the disk is full",
                    ));
                }
                // Not supported here: write without reserving.
                Err(_) => self.enabled = false,
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        self.reserved = end;
        Ok(())
    }
}

/// `f_type` of tmpfs in `statfs` (linux/magic.h); rustix does not name it.
#[cfg(target_os = "linux")]
const TMPFS_MAGIC: rustix::fs::FsWord = 0x0102_1994;

/// Whether `file` lives on tmpfs (its pages are memory, not disk blocks).
pub(super) fn in_memory(file: &File) -> bool {
    #[cfg(target_os = "linux")]
    if let Ok(st) = rustix::fs::fstatfs(file) {
        return st.f_type == TMPFS_MAGIC;
    }
    let _ = file;
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A test that could not check what it is about: an error on CI (`CI=true`), where
    /// the environment is meant to allow the check, else a note on stderr.
    fn checked_nothing(what: &str) {
        let msg = format!("{what}: nothing was checked");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg} (CI=true requires this check to run)");
        }
        eprintln!("note: {msg}");
    }

    /// File systems this test may write to, per the mount table; see [`on_disk`].
    #[cfg(target_os = "linux")]
    fn candidate_dirs() -> Vec<std::path::PathBuf> {
        let mut dirs = vec![
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::env::temp_dir(),
            "/var/tmp".into(),
        ];
        if let Some(t) = option_env!("CARGO_TARGET_TMPDIR") {
            dirs.insert(1, t.into());
        }
        dirs
    }

    /// A temporary file on a file system that can reserve space (not tmpfs, and
    /// `fallocate` works), or `None` if there is none here.
    #[cfg(target_os = "linux")]
    fn on_disk() -> Option<File> {
        candidate_dirs().into_iter().find_map(|d| {
            let f = tempfile::tempfile_in(&d).ok()?;
            let free = !in_memory(&f)
                && rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::KEEP_SIZE, 0, 4096)
                    .is_ok();
            // A new file: the test measures from nothing reserved.
            free.then(|| tempfile::tempfile_in(&d).ok()).flatten()
        })
    }

    #[test]
    fn a_download_larger_than_the_free_space_fails_at_once() {
        let f = tempfile::tempfile().unwrap();
        let e = check_space(&f, 0, u64::MAX / 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("not enough free space"), "{e}");
        check_space(&f, 0, 4096).unwrap();
        // Only what is still missing counts.
        check_space(&f, u64::MAX / 2 - 10, u64::MAX / 2).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn space_is_reserved_ahead_of_the_writer_without_changing_the_length() {
        use std::os::unix::fs::MetadataExt;
        // Not simply the temp folder: that is often tmpfs, where nothing is reserved.
        let Some(f) = on_disk() else {
            checked_nothing("no file system here can reserve space");
            return;
        };
        let size = 3 * Reserve::STEP;
        let mut r = Reserve::new(&f, 0, size);
        assert!(r.enabled, "reservation off on a file system that can do it");
        r.ahead(&f, 0).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!(m.len(), 0, "the length must stay what was written");
        assert!(r.enabled, "fallocate failed where it worked before");
        assert!(
            m.blocks() * 512 >= 2 * Reserve::STEP,
            "{} blocks",
            m.blocks()
        );
        assert_eq!(r.reserved, 2 * Reserve::STEP);
        r.ahead(&f, Reserve::STEP / 2).unwrap(); // still a step ahead: nothing to do
        assert_eq!(r.reserved, 2 * Reserve::STEP);
        r.ahead(&f, 2 * Reserve::STEP).unwrap();
        assert_eq!(r.reserved, size, "never beyond the file's size");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn nothing_is_reserved_on_tmpfs() {
        let shm = Path::new("/dev/shm");
        let Ok(f) = tempfile::tempfile_in(shm) else {
            checked_nothing("no /dev/shm here; the tmpfs case");
            return;
        };
        // Ask the mount table, not the call under test, what /dev/shm is.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let tmpfs = mounts.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"/dev/shm") && f.get(2) == Some(&"tmpfs")
        });
        assert_eq!(in_memory(&f), tmpfs);
        if !tmpfs {
            checked_nothing("/dev/shm is not tmpfs here; the tmpfs case");
            return;
        }
        let mut r = Reserve::new(&f, 0, 3 * Reserve::STEP);
        assert!(!r.enabled);
        r.ahead(&f, 0).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            f.metadata().unwrap().blocks(),
            0,
            "space was reserved on tmpfs"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_disk_file_is_not_taken_for_tmpfs() {
        // The mount table says which candidate folders are on a disk.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut checked = false;
        for d in candidate_dirs() {
            let Ok(d) = d.canonicalize() else { continue };
            // The longest mount point that contains the folder is the one it is on.
            let on = mounts
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() > 2 && d.starts_with(f[1])).then(|| (f[1].len(), f[2] == "tmpfs"))
                })
                .max();
            let (Some((_, false)), Ok(f)) = (on, tempfile::tempfile_in(&d)) else {
                continue;
            };
            assert!(!in_memory(&f), "{} taken for tmpfs", d.display());
            checked = true;
        }
        if !checked {
            checked_nothing("no candidate folder is on a disk");
        }
    }
}
