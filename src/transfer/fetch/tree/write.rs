//! The folder writer, on a blocking thread: reads the tree stream through the core's
//! [`TreeReader`], creates folders and files in the staging folder, hashes every file
//! and checks it against its entry, sets modes and mtimes, and fsyncs in batches (the
//! batch's files, then their folders, then the sidecar checkpoint), never once per file.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use fileapp_core::tree::{Entry, Event, TreeReader, TreeStart};

use super::super::{FetchError, ProtocolError};
use super::stage::Stage;

/// Files fsynced together.
const BATCH_FILES: usize = 512;
/// Bytes after which a batch is fsynced anyway.
const BATCH_BYTES: u64 = 64 << 20;
/// A file this large gets a checkpoint when it starts, so a resume continues it at the
/// byte it reached.
const CHECKPOINT_FILE: u64 = 1 << 20;
/// Longest path this side writes (Linux `PATH_MAX` without the NUL).
const PATH_MAX: usize = 4095;

/// Progress the connection side reads.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub total_files: AtomicU64,
    /// File bytes that came over the network (not from an earlier attempt).
    pub net: AtomicU64,
}

/// The file being received.
struct Current {
    file: File,
    entry: Entry,
    hasher: blake3::Hasher,
}

pub(super) struct Writer {
    stage: Stage,
    reader: TreeReader,
    /// The folder hash the owner announced (what the manifest must hash to).
    hash: [u8; 32],
    owner: String,
    cur: Option<Current>,
    batch: Vec<File>,
    batch_bytes: u64,
    dirs: BTreeSet<String>,
    /// Folders whose mode lacks the owner's `rwx`: set at the end.
    late_modes: Vec<(String, u32)>,
    pub counters: Arc<Counters>,
    /// The end was read and the manifest hash matched.
    pub ended: bool,
}

fn proto(e: fileapp_core::tree::TreeError) -> FetchError {
    ProtocolError::Tree(e).into()
}

impl Writer {
    pub fn new(stage: Stage, resume: Option<TreeStart>, hash: [u8; 32], owner: String) -> Writer {
        Writer {
            stage,
            reader: TreeReader::new(resume),
            hash,
            owner,
            cur: None,
            batch: Vec::new(),
            batch_bytes: 0,
            dirs: BTreeSet::new(),
            late_modes: Vec::new(),
            counters: Arc::default(),
            ended: false,
        }
    }

    pub fn into_stage(self) -> Stage {
        self.stage
    }

    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// Takes one received piece of the stream.
    pub fn feed(&mut self, mut buf: &[u8]) -> Result<(), FetchError> {
        loop {
            let (n, ev) = self.reader.step(buf).map_err(proto)?;
            buf = &buf[n..];
            match ev {
                None if n == 0 => return Ok(()),
                None => {}
                Some(ev) => self.event(ev)?,
            }
        }
    }

    fn event(&mut self, ev: Event<'_>) -> Result<(), FetchError> {
        match ev {
            Event::Header(h) => {
                self.counters.total_files.store(h.files, Ordering::Relaxed);
            }
            Event::Entry {
                index,
                entry,
                start,
            } => self.entry(index, entry, start)?,
            Event::Data(d) => {
                let Some(c) = &mut self.cur else {
                    return Ok(());
                };
                c.hasher.update(d);
                let path = &c.entry.path;
                c.file
                    .write_all(d)
                    .map_err(|e| FetchError::Disk(self.stage.dir.join(path), e))?;
                self.counters
                    .bytes
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
                self.counters
                    .net
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            Event::FileEnd => self.file_end()?,
            Event::Abort(why) => {
                return Err(FetchError::OwnerAborted {
                    owner: self.owner.clone(),
                    why: crate::transfer::printable(&why),
                });
            }
            Event::End { hash } => {
                if hash != self.hash {
                    return Err(FetchError::HashMismatch);
                }
                self.flush(None, None)?;
                for (path, mode) in self.late_modes.iter().rev() {
                    let p = self.stage.dir.join(path);
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
                        .map_err(|e| FetchError::Disk(p, e))?;
                }
                self.ended = true;
            }
        }
        Ok(())
    }

    fn target(&self, path: &str) -> Result<PathBuf, FetchError> {
        let p = self.stage.dir.join(path);
        if p.as_os_str().len() > PATH_MAX {
            return Err(FetchError::CannotHold(
                crate::transfer::printable(path),
                "the path is too long for this system".into(),
            ));
        }
        Ok(p)
    }

    fn cannot_hold(path: &str, e: io::Error, p: PathBuf) -> FetchError {
        match e.raw_os_error() {
            Some(libc::ENAMETOOLONG) | Some(libc::EILSEQ) | Some(libc::EINVAL) => {
                FetchError::CannotHold(crate::transfer::printable(path), e.to_string())
            }
            _ => FetchError::Disk(p, e),
        }
    }

    fn entry(&mut self, index: u64, e: Entry, start: u64) -> Result<(), FetchError> {
        let p = self.target(&e.path)?;
        if !e.is_file() {
            match std::fs::create_dir(&p) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
                Err(err) => return Err(Self::cannot_hold(&e.path, err, p)),
            }
            let usable = e.mode | 0o700;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(usable))
                .map_err(|err| FetchError::Disk(p.clone(), err))?;
            if usable != e.mode {
                self.late_modes.push((e.path, e.mode));
            }
            return Ok(());
        }
        if start == e.size && e.size > 0 {
            // Received in an earlier attempt (before the checkpoint): it must be there.
            let ok = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file() && m.len() == e.size);
            if !ok {
                return Err(FetchError::Disk(
                    p,
                    io::Error::other(
                        "a file of the interrupted download is missing; request again",
                    ),
                ));
            }
            self.counters.files.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes.fetch_add(e.size, Ordering::Relaxed);
            return Ok(());
        }
        if e.size >= CHECKPOINT_FILE {
            self.flush(Some(index), Some(&e.path))?;
        }
        let mut hasher = blake3::Hasher::new();
        let file = if start > 0 {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)
                .map_err(|err| FetchError::Disk(p.clone(), err))?;
            f.set_len(start)
                .map_err(|err| FetchError::Disk(p.clone(), err))?;
            // The prefix on disk is hashed first, so the check covers the whole file.
            let mut prefix = (&f).take(start);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = prefix
                    .read(&mut buf)
                    .map_err(|err| FetchError::Disk(p.clone(), err))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            use std::io::Seek;
            f.seek(io::SeekFrom::Start(start))
                .map_err(|err| FetchError::Disk(p.clone(), err))?;
            f
        } else {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)
                .map_err(|err| Self::cannot_hold(&e.path, err, p.clone()))?
        };
        self.counters.bytes.fetch_add(start, Ordering::Relaxed);
        self.cur = Some(Current {
            file,
            entry: e,
            hasher,
        });
        Ok(())
    }

    fn file_end(&mut self) -> Result<(), FetchError> {
        let Some(c) = self.cur.take() else {
            // A file received in an earlier attempt.
            return Ok(());
        };
        let p = self.stage.dir.join(&c.entry.path);
        if *c.hasher.finalize().as_bytes() != c.entry.hash {
            let _ = std::fs::remove_file(&p);
            return Err(FetchError::TreeFileMismatch(crate::transfer::printable(
                &c.entry.path,
            )));
        }
        let disk = |err| FetchError::Disk(p.clone(), err);
        c.file
            .set_permissions(std::fs::Permissions::from_mode(c.entry.mode))
            .map_err(disk)?;
        let (secs, nanos) = c.entry.mtime;
        let mtime = if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                + Duration::from_nanos(nanos as u64)
        };
        c.file.set_modified(mtime).map_err(disk)?;
        self.counters.files.fetch_add(1, Ordering::Relaxed);
        self.batch_bytes += c.entry.size;
        // The folder the file is in (the staging folder itself for "").
        let parent = c.entry.path.rsplit_once('/').map_or("", |(p, _)| p);
        if !self.dirs.contains(parent) {
            self.dirs.insert(parent.to_string());
        }
        self.batch.push(c.file);
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.flush(None, None)?;
        }
        Ok(())
    }

    /// The stream stopped early (cut off, cancelled): makes what arrived durable and
    /// records where a later attempt continues (the file being received, at its byte).
    pub fn suspend(&mut self) -> Result<(), FetchError> {
        match self.cur.take() {
            Some(c) => {
                let index = self.reader.position().saturating_sub(1);
                self.batch.push(c.file);
                self.flush(Some(index), Some(&c.entry.path))
            }
            None => self.flush(None, None),
        }
    }

    /// Makes the batch durable (files, then their folders), then records the checkpoint:
    /// every entry before `next` (default: the reader's position) is on disk; `path`
    /// names a large file about to be received.
    fn flush(&mut self, next: Option<u64>, path: Option<&str>) -> Result<(), FetchError> {
        for f in self.batch.drain(..) {
            f.sync_all()
                .map_err(|e| FetchError::Disk(self.stage.dir.clone(), e))?;
        }
        for d in std::mem::take(&mut self.dirs) {
            let p = self.stage.dir.join(&d);
            if let Ok(f) = File::open(&p) {
                let _ = f.sync_all();
            }
        }
        self.batch_bytes = 0;
        let next = next.unwrap_or_else(|| self.reader.position());
        self.stage
            .checkpoint(&self.hash, next, path)
            .map_err(|e| FetchError::Disk(self.stage.meta_path.clone(), e))
    }
}
