//! The last step: check the received file's hash against the owner's, then move the
//! (already fsynced) partial to its final name and make the rename durable. A file that
//! fails the check is deleted, so it is never visible under the final name.

use std::fs::File;
use std::io;
use std::path::Path;

use super::FetchError;

/// Fails with [`FetchError::HashMismatch`], deleting the partial and its sidecar, if
/// `hash` (of what was received) is not `expected` (the owner's).
pub(super) fn verify(
    hash: &[u8; 32],
    expected: &[u8; 32],
    part: &Path,
    meta: &Path,
) -> Result<(), FetchError> {
    if hash == expected {
        return Ok(());
    }
    discard(part, meta);
    Err(FetchError::HashMismatch)
}

/// Deletes a partial that failed its check, and its sidecar: the prefix or the data is
/// corrupt, so a retry must start from scratch.
pub(super) fn discard(part: &Path, meta: &Path) {
    let _ = std::fs::remove_file(part);
    let _ = std::fs::remove_file(meta);
}

/// Moves the verified partial to its final name. Without `force`, never replaces a file
/// that appeared meanwhile (a hard link fails if the name exists). Blocking.
pub(super) fn publish(
    part: &Path,
    meta: &Path,
    final_path: &Path,
    force: bool,
) -> Result<(), FetchError> {
    let disk = |e| FetchError::Disk(final_path.to_path_buf(), e);
    if force {
        std::fs::rename(part, final_path).map_err(disk)?;
    } else {
        match std::fs::hard_link(part, final_path) {
            Ok(()) => {
                let _ = std::fs::remove_file(part);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(FetchError::Exists(final_path.to_path_buf()));
            }
            // File systems without hard links: check, then rename.
            Err(_) => {
                if std::fs::symlink_metadata(final_path).is_ok() {
                    return Err(FetchError::Exists(final_path.to_path_buf()));
                }
                std::fs::rename(part, final_path).map_err(disk)?;
            }
        }
    }
    let _ = std::fs::remove_file(meta);
    if let Some(dir) = final_path.parent()
        && let Ok(d) = File::open(dir)
    {
        // Make the rename itself durable.
        let _ = d.sync_all();
    }
    Ok(())
}
