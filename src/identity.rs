//! Where a client's identity lives on disk: one PKCS#8 key file per name, created on first
//! use (mode 0600) and locked while a process uses it. The key itself, signatures and
//! fingerprints are the core's ([`fileapp_core::identity`], re-exported here).

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

pub use fileapp_core::identity::*;

/// Why a key file could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or write {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0} does not hold an Ed25519 private key (PKCS#8)")]
    BadKey(PathBuf),
    #[error("no random numbers from the system")]
    Random,
}

impl From<IdentityError> for KeyFileError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Random => KeyFileError::Random,
        }
    }
}

/// The key file, held open with an exclusive lock: while it lives, no other process can
/// take the same identity with [`open_exclusive`].
#[derive(Debug)]
pub struct KeyLock {
    _file: File,
}

/// Loads the identity at `path`, creating it (mode 0600, folders included) if absent.
pub fn load_or_create(path: &Path) -> Result<Identity, KeyFileError> {
    match std::fs::read(path) {
        Ok(der) => Identity::from_pkcs8(&der).ok_or_else(|| KeyFileError::BadKey(path.into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Identity::generate()?;
            write_private(path, id.pkcs8()).map_err(|e| KeyFileError::Io(path.into(), e))?;
            Ok(id)
        }
        Err(e) => Err(KeyFileError::Io(path.into(), e)),
    }
}

/// Loads or creates the identity at `path` and locks it for this process. The lock is
/// `None` if another running process holds it: that process is this name on this
/// machine, so its session must not be evicted.
pub fn open_exclusive(path: &Path) -> Result<(Identity, Option<KeyLock>), KeyFileError> {
    let id = load_or_create(path)?;
    let file = File::open(path).map_err(|e| KeyFileError::Io(path.into(), e))?;
    match file.try_lock() {
        Ok(()) => Ok((id, Some(KeyLock { _file: file }))),
        Err(TryLockError::WouldBlock) => Ok((id, None)),
        // A file system that cannot lock (some network ones): the key is still ours to
        // use, only we cannot tell whether another process uses it, so act as if one
        // might (never evict a session of this name).
        Err(TryLockError::Error(e)) => {
            tracing::warn!(
                "cannot lock {}: {e}; not taking the name over",
                path.display()
            );
            Ok((id, None))
        }
    }
}

/// Where the identity of client `name` lives unless `--identity` says otherwise: one
/// key per name, in the user's config folder.
pub fn default_path(name: &str) -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "fileapp").map(|d| {
        d.config_dir()
            .join("identities")
            .join(format!("{name}.pk8"))
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_or_create_persists_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity.pk8");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join("junk"), b"junk").unwrap();
        assert!(matches!(
            load_or_create(&dir.path().join("junk")),
            Err(KeyFileError::BadKey(_))
        ));
    }

    #[test]
    fn only_one_process_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("B.pk8");
        let (a, lock_a) = open_exclusive(&path).unwrap();
        assert!(lock_a.is_some());
        // flock locks are per open file description: a second open in this process
        // conflicts just as another process would.
        let (b, lock_b) = open_exclusive(&path).unwrap();
        assert!(lock_b.is_none());
        assert_eq!(a.public_key(), b.public_key());
        drop(lock_a);
        let (c, lock_c) = open_exclusive(&path).unwrap();
        assert!(lock_c.is_some());
        assert_eq!(c.public_key(), load_or_create(&path).unwrap().public_key());
    }
}
