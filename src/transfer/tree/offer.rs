//! Offering a folder: walk it, leave out what is not a file or a folder, hash every file
//! on all cores, and build the manifest. Blocking: the client runs it on a blocking
//! thread, with progress, so the console stays responsive.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use fileapp_core::tree::manifest::summarize;
use fileapp_core::tree::{Entry, MAX_ENTRIES, valid_tree_path};

use super::{Folder, open_beneath, open_root};
use crate::transfer::library::{OfferError, Stamp};

/// How far hashing got: files and bytes done, of `files` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashProgress {
    pub files_done: u64,
    pub files: u64,
    pub bytes_done: u64,
}

/// How often progress is reported while hashing.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Files a hashing thread takes at once (fewer atomic operations on small files).
const CLAIM: usize = 32;
/// Read buffer per hashing thread.
const READ_BUF: usize = 1 << 20;

/// Walks and hashes the folder `name` (without its `/`) inside the shared folder `dir`.
pub fn prepare_folder(
    dir: &Path,
    name: &str,
    progress: &(dyn Fn(HashProgress) + Sync),
) -> Result<Folder, OfferError> {
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => OfferError::NotFound(name.to_string()),
        _ if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) => {
            OfferError::NotAFile(name.to_string())
        }
        _ => OfferError::Io(name.to_string(), e),
    };
    let root = open_root(dir, name).map_err(io_err)?;
    let canonical = std::fs::canonicalize(dir.join(name)).map_err(io_err)?;
    let (mut entries, skipped) = walk(&canonical, name)?;
    entries.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let stamps = hash_all(&root, name, &mut entries, progress)?;
    let (header, hash) = summarize(&entries);
    Ok(Folder {
        name: format!("{name}/"),
        root: canonical,
        header,
        hash,
        entries,
        stamps,
        skipped,
    })
}

/// Every folder and regular file below `root`, unsorted, and how many other things
/// (symlinks, devices, sockets, FIFOs) were left out.
fn walk(root: &Path, name: &str) -> Result<(Vec<Entry>, u64), OfferError> {
    let err = |e: io::Error| OfferError::Io(name.to_string(), e);
    let mut entries = Vec::new();
    let mut skipped = 0u64;
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let abs = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        for de in std::fs::read_dir(&abs).map_err(err)? {
            let de = de.map_err(err)?;
            let os = de.file_name();
            let Some(part) = os.to_str() else {
                let shown = format!("{rel}/{}", os.to_string_lossy());
                return Err(OfferError::TreeName(name.to_string(), shown));
            };
            let path = if rel.is_empty() {
                part.to_string()
            } else {
                format!("{rel}/{part}")
            };
            if !valid_tree_path(&path) {
                return Err(OfferError::TreeName(
                    name.to_string(),
                    crate::transfer::printable(&path),
                ));
            }
            // `file_type` does not follow symlinks: a symlink is left out, whatever it
            // points to.
            let ft = de.file_type().map_err(err)?;
            if ft.is_dir() {
                let mode = de.metadata().map_err(err)?.permissions().mode();
                entries.push(Entry::dir(path.clone(), mode));
                stack.push(path);
            } else if ft.is_file() {
                entries.push(Entry::file(path, 0, 0, (0, 0), [0; 32]));
            } else {
                skipped += 1;
            }
            if entries.len() as u64 > MAX_ENTRIES {
                return Err(OfferError::TooManyEntries(name.to_string(), MAX_ENTRIES));
            }
        }
    }
    Ok((entries, skipped))
}

/// Hashes every file entry in place on all cores; returns each entry's stamp.
fn hash_all(
    root: &File,
    name: &str,
    entries: &mut [Entry],
    progress: &(dyn Fn(HashProgress) + Sync),
) -> Result<Vec<Option<Stamp>>, OfferError> {
    let files: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].is_file())
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicUsize::new(0);
    let (files_done, bytes_done) = (AtomicU64::new(0), AtomicU64::new(0));
    let working = AtomicUsize::new(threads);
    let failed: Mutex<Option<OfferError>> = Mutex::new(None);
    let view: &[Entry] = entries;
    let results: Vec<Vec<(usize, Entry, Stamp)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    let mut buf = vec![0u8; READ_BUF];
                    loop {
                        let from = next.fetch_add(CLAIM, Ordering::Relaxed);
                        if from >= files.len() || failed.lock().map(|f| f.is_some()).unwrap_or(true)
                        {
                            break;
                        }
                        for &i in &files[from..(from + CLAIM).min(files.len())] {
                            let path = &view[i].path;
                            match hash_one(root, path, &mut buf) {
                                Ok((e, st)) => {
                                    bytes_done.fetch_add(e.size, Ordering::Relaxed);
                                    out.push((i, e, st));
                                }
                                Err(e) => {
                                    let shown =
                                        format!("{name}/{}", crate::transfer::printable(path));
                                    let e = match e {
                                        HashError::Changed => OfferError::Unstable(shown),
                                        HashError::NotAFile => OfferError::NotAFile(shown),
                                        HashError::Io(e) => OfferError::Io(shown, e),
                                    };
                                    if let Ok(mut f) = failed.lock() {
                                        f.get_or_insert(e);
                                    }
                                    break;
                                }
                            }
                            files_done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    working.fetch_sub(1, Ordering::Release);
                    out
                })
            })
            .collect();
        let report = || HashProgress {
            files_done: files_done.load(Ordering::Relaxed),
            files: files.len() as u64,
            bytes_done: bytes_done.load(Ordering::Relaxed),
        };
        while working.load(Ordering::Acquire) > 0 {
            std::thread::park_timeout(PROGRESS_EVERY);
            progress(report());
        }
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut stamps = vec![None; entries.len()];
    for (i, e, st) in results.into_iter().flatten() {
        entries[i] = e;
        stamps[i] = Some(st);
    }
    Ok(stamps)
}

enum HashError {
    Changed,
    NotAFile,
    Io(io::Error),
}

/// Hashes one file below `root`; it must not change while it is read.
fn hash_one(root: &File, path: &str, buf: &mut [u8]) -> Result<(Entry, Stamp), HashError> {
    for _ in 0..3 {
        let mut f = open_beneath(root, path, false).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::EXDEV) => HashError::NotAFile,
            _ => HashError::Io(e),
        })?;
        let meta = f.metadata().map_err(HashError::Io)?;
        if !meta.is_file() {
            return Err(HashError::NotAFile);
        }
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        loop {
            match f.read(buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(HashError::Io(e)),
            }
        }
        let after = f.metadata().map_err(HashError::Io)?;
        let stamp = Stamp::of(&after);
        if Stamp::of(&meta) != stamp || total != after.len() {
            continue;
        }
        let e = Entry::file(
            path,
            after.mode(),
            total,
            (after.mtime(), after.mtime_nsec() as u32),
            *hasher.finalize().as_bytes(),
        );
        return Ok((e, stamp));
    }
    Err(HashError::Changed)
}
