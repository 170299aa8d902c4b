//! The bytes of an unfinished download on disk: where the partial and its `.meta`
//! sidecar live, what the sidecar records, the plan an attempt starts from (fresh,
//! resume, or compare an existing file), what the owner's answer means for that plan,
//! and opening and locking the partial.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use super::space::check_space;
use super::{FetchError, FetchSpec, ProtocolError, Refusal, RefusalKind};
use crate::transfer::header::{Request, Response, Status};
use crate::transfer::printable;

/// NAME_MAX: the longest file name, in bytes, on every common file system.
const NAME_MAX: usize = 255;

/// Where the partial data and its sidecar live for `file` in `dest_dir`.
pub fn partial_paths(dest_dir: &Path, file: &str) -> (PathBuf, PathBuf) {
    let plain = format!(".{file}.fileapp-partial");
    let base = if plain.len() + ".meta".len() <= NAME_MAX {
        plain
    } else {
        let h = blake3::hash(file.as_bytes());
        format!(".fileapp-{}.partial", hex::encode(&h.as_bytes()[..16]))
    };
    let meta = format!("{base}.meta");
    (dest_dir.join(base), dest_dir.join(meta))
}

/// What the sidecar records: the provider's file the partial is a prefix of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Target {
    pub size: u64,
    pub hash: [u8; 32],
}

/// The sidecar's target, or `None` if it is missing or not one we wrote.
pub(super) fn read_meta(path: &Path) -> Option<Target> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "fileapp-partial 1" {
        return None;
    }
    let size = lines.next()?.strip_prefix("size ")?.parse().ok()?;
    let hex_hash = lines.next()?.strip_prefix("hash ")?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut hash).ok()?;
    Some(Target { size, hash })
}

pub(super) fn write_meta(path: &Path, t: Target) -> io::Result<()> {
    let text = format!(
        "fileapp-partial 1\nsize {}\nhash {}\n",
        t.size,
        hex::encode(t.hash)
    );
    std::fs::write(path, text)
}

/// How this attempt starts, decided from what is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// Nothing usable on disk.
    Fresh,
    /// A partial of `offset` bytes of `target` exists.
    Resume { offset: u64, target: Target },
    /// The destination exists (and `force` is off): ask whether it is identical.
    Probe { local: Target },
}

/// Inspects the destination and the partial. Blocking.
pub(super) fn make_plan(
    spec: &FetchSpec,
    final_path: &Path,
    part: &Path,
    meta: &Path,
) -> Result<Plan, FetchError> {
    match std::fs::symlink_metadata(final_path) {
        Ok(m) if !spec.force => {
            if !m.is_file() {
                return Err(FetchError::Exists(final_path.to_path_buf()));
            }
            let hash = crate::transfer::hash_file(final_path)
                .map_err(|e| FetchError::Disk(final_path.to_path_buf(), e))?;
            return Ok(Plan::Probe {
                local: Target {
                    size: m.len(),
                    hash,
                },
            });
        }
        _ => {}
    }
    if let (Some(target), Ok(m)) = (read_meta(meta), std::fs::symlink_metadata(part))
        && m.is_file()
        && m.len() <= target.size
    {
        return Ok(Plan::Resume {
            offset: m.len(),
            target,
        });
    }
    Ok(Plan::Fresh)
}

/// Where the data starts, once the owner answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// The destination already is the owner's file: nothing to transfer.
    AlreadyPresent(Target),
    /// Receive `target` from `offset` on (0: from scratch).
    At { offset: u64, target: Target },
}

impl Plan {
    /// The request that carries out this plan. `owner_hashes` asks the owner to hash
    /// what it sends (only a fresh, whole-file request may).
    pub(super) fn request(&self, spec: &FetchSpec, owner_hashes: bool) -> Request {
        let (offset, expected_hash, if_match) = match *self {
            Plan::Fresh => (0, None, false),
            Plan::Resume { offset, target } => (offset, Some(target.hash), false),
            Plan::Probe { local } => (local.size, Some(local.hash), true),
        };
        Request {
            file: spec.file.clone(),
            requester: spec.requester.clone(),
            offset,
            expected_hash,
            if_match,
            owner_hashes: owner_hashes && matches!(self, Plan::Fresh),
        }
    }

    /// What the owner's answer means for the bytes on disk: a refusal, a verdict on an
    /// existing file, or where the data starts. `owner` is for messages.
    pub(super) fn settle(
        &self,
        resp: &Response,
        owner: &str,
        final_path: &Path,
    ) -> Result<Start, FetchError> {
        match resp.status {
            Status::Ok => {}
            Status::Changed if matches!(self, Plan::Probe { .. }) => {
                return Err(FetchError::Exists(final_path.to_path_buf()));
            }
            Status::Changed => return Err(ProtocolError::UnaskedChanged.into()),
            Status::NotOffered | Status::Busy | Status::Error => {
                return Err(FetchError::Refused(refusal(resp, owner)));
            }
        }
        let target = Target {
            size: resp.size,
            hash: resp.hash,
        };
        match *self {
            Plan::Probe { local } if target == local && resp.start == local.size => {
                Ok(Start::AlreadyPresent(local))
            }
            Plan::Probe { .. } => Err(ProtocolError::BadComparison.into()),
            Plan::Resume {
                offset,
                target: old,
            } if resp.start == offset && target == old => Ok(Start::At { offset, target }),
            _ if resp.start == 0 => Ok(Start::At { offset: 0, target }),
            _ => Err(ProtocolError::UnaskedStart(resp.start).into()),
        }
    }
}

/// A refusing answer as the error the user sees: the owner's words, or the status name
/// when it sent none.
pub(super) fn refusal(resp: &Response, owner: &str) -> Refusal {
    let detail = if resp.message.is_empty() {
        format!("{:?}", resp.status)
    } else {
        printable(&resp.message)
    };
    let kind = match resp.status {
        Status::NotOffered => RefusalKind::NotOffered,
        Status::Busy => RefusalKind::Busy,
        _ => RefusalKind::Error,
    };
    Refusal {
        owner: printable(owner),
        kind,
        detail,
    }
}

/// Opens (creating or truncating as needed) the partial for appending at `offset`, after
/// recording `target` in the sidecar, and locks it against a concurrent download. The
/// lock lasts as long as the returned file is open.
pub(super) fn open_partial(
    part: &Path,
    meta: &Path,
    target: Target,
    offset: u64,
) -> Result<File, FetchError> {
    let disk = |p: &Path| {
        let p = p.to_path_buf();
        move |e| FetchError::Disk(p, e)
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .map_err(disk(part))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(FetchError::Locked(part.to_path_buf())),
        Err(TryLockError::Error(e)) => return Err(disk(part)(e)),
    }
    if offset == 0 {
        // Record the target before any data, so a crash leaves a consistent pair.
        file.set_len(0).map_err(disk(part))?;
        write_meta(meta, target).map_err(disk(meta))?;
    } else {
        file.set_len(offset).map_err(disk(part))?;
    }
    check_space(&file, offset, target.size).map_err(disk(part))?;
    Ok(file)
}
