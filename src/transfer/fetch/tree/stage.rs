//! Where a folder download lives until it is complete: the staging folder
//! `<dest>/.<name>.fileapp-partial/` and its sidecar `<dest>/.<name>.fileapp-partial.meta`
//! (the same names a file's partial gets), the resume point the sidecar records, and
//! the final move.
//!
//! Sidecar, text, rewritten at every checkpoint (after a batch of files and their
//! folders were fsynced):
//!
//! ```text
//! fileapp-tree-partial 1
//! hash <64 hex digits: the folder's hash>
//! next <index of the first entry not yet durable>
//! path <that entry's path, when it is a large file being received>
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use fileapp_core::tree::TreeStart;

use super::super::{FetchError, FetchSpec, partial_paths};
use crate::transfer::tree::offer::prepare_folder;

const MAGIC: &str = "fileapp-tree-partial 1";

/// The staging folder, its sidecar (open and locked), and the final path.
#[derive(Debug)]
pub(super) struct Stage {
    pub dir: PathBuf,
    pub meta_path: PathBuf,
    pub meta: File,
    pub final_path: PathBuf,
    /// The folder hash the staging folder holds (part of), if any.
    pub held: Option<[u8; 32]>,
}

/// What to do before connecting.
pub(super) enum Plan {
    /// The destination already is this folder (same manifest hash).
    AlreadyPresent(PathBuf),
    Fetch {
        stage: Stage,
        resume: Option<TreeStart>,
    },
}

/// Looks at the destination and the staging folder. Blocking.
pub(super) fn plan(
    spec: &FetchSpec,
    name: &str,
    listed: Option<[u8; 32]>,
) -> Result<Plan, FetchError> {
    let dest = &spec.dest_dir;
    let final_path = dest.join(name);
    if let Ok(m) = std::fs::symlink_metadata(&final_path) {
        let same = m.is_dir()
            && listed.is_some()
            && prepare_folder(dest, name, &|_| {}).is_ok_and(|f| Some(f.hash) == listed);
        if same {
            return Ok(Plan::AlreadyPresent(final_path));
        }
        if !spec.force {
            return Err(FetchError::Exists(final_path));
        }
    }
    let (dir, meta_path) = partial_paths(dest, name);
    let disk = |p: &Path| {
        let p = p.to_path_buf();
        move |e| FetchError::Disk(p, e)
    };
    let meta = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&meta_path)
        .map_err(disk(&meta_path))?;
    match meta.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(FetchError::Locked(final_path)),
        Err(std::fs::TryLockError::Error(e)) => return Err(FetchError::Disk(meta_path, e)),
    }
    let mut text = String::new();
    let _ = (&meta).read_to_string(&mut text);
    let recorded = parse(&text);
    let mut stage = Stage {
        dir,
        meta_path,
        meta,
        final_path,
        held: None,
    };
    if let Some((hash, index, path)) = recorded
        && stage.dir.is_dir()
    {
        let offset = path
            .and_then(|p| std::fs::symlink_metadata(stage.dir.join(p)).ok())
            .map_or(0, |m| m.len());
        stage.held = Some(hash);
        return Ok(Plan::Fetch {
            stage,
            resume: Some(TreeStart { index, offset }),
        });
    }
    stage.reset().map_err(disk(&stage.dir))?;
    Ok(Plan::Fetch {
        stage,
        resume: None,
    })
}

pub(super) fn parse(text: &str) -> Option<([u8; 32], u64, Option<String>)> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let hash = lines.next()?.strip_prefix("hash ")?;
    let mut h = [0u8; 32];
    hex::decode_to_slice(hash, &mut h).ok()?;
    let next = lines.next()?.strip_prefix("next ")?.parse().ok()?;
    let path = lines
        .next()
        .and_then(|l| l.strip_prefix("path "))
        .map(str::to_string);
    Some((h, next, path))
}

impl Stage {
    /// Empties the staging folder (a fresh start).
    pub fn reset(&mut self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir(&self.dir)?;
        self.meta.set_len(0)?;
        self.held = None;
        Ok(())
    }

    /// Records that entries before `next` are durable (and, for a large file being
    /// received, its path: a resume continues it at the byte it reached).
    pub fn checkpoint(&self, hash: &[u8; 32], next: u64, path: Option<&str>) -> io::Result<()> {
        let mut text = format!("{MAGIC}\nhash {}\nnext {next}\n", hex::encode(hash));
        if let Some(p) = path {
            text.push_str(&format!("path {p}\n"));
        }
        self.meta.set_len(0)?;
        self.meta.write_all_at(text.as_bytes(), 0)?;
        self.meta.sync_data()
    }

    /// Deletes the staging folder and sidecar (a verification failed: start over).
    pub fn discard(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.meta_path);
    }

    /// Moves the verified staging folder to its final name. Without `force`, never
    /// replaces anything that appeared meanwhile. Blocking.
    pub fn publish(self, force: bool) -> Result<(), FetchError> {
        let disk = |e: io::Error| FetchError::Disk(self.final_path.clone(), e);
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(disk)?;
        let exists = std::fs::symlink_metadata(&self.final_path).is_ok();
        if force && exists {
            let old = self.dir.with_extension("old");
            std::fs::rename(&self.final_path, &old).map_err(disk)?;
            std::fs::rename(&self.dir, &self.final_path).map_err(disk)?;
            let _ = std::fs::remove_dir_all(&old).or_else(|_| std::fs::remove_file(&old));
        } else {
            use rustix::fs::{CWD, RenameFlags, renameat_with};
            match renameat_with(
                CWD,
                &self.dir,
                CWD,
                &self.final_path,
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::EXIST => {
                    return Err(FetchError::Exists(self.final_path.clone()));
                }
                Err(e) => return Err(disk(e.into())),
            }
        }
        let _ = std::fs::remove_file(&self.meta_path);
        if let Some(parent) = self.final_path.parent()
            && let Ok(d) = File::open(parent)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}
