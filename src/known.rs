//! Keys this user has seen before, as SSH's `known_hosts`: the key of each index server
//! (by the address the user gave) and the key of each peer name. A key is pinned on
//! first contact and every later contact must present the same one; changing a pin is
//! the user's explicit act, never the program's.
//!
//! One file per kind in the user's config folder (`known_servers`, `known_peers`), one
//! entry a line: `<what> <64 hex digits>`, where `<what>` is a server address as typed
//! (`host:port`) or a client name. Lines that do not parse are kept as they are and
//! ignored, so a hand edit never loses the rest. Writes go to a temporary file that is
//! renamed over the old one, so a crash never leaves half a file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::identity::PublicKey;

/// Why a pin file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot read or write {}: {}", .0.display(), .1)]
pub struct KnownError(PathBuf, std::io::Error);

/// The pins of one file.
#[derive(Debug, Clone)]
pub struct KnownKeys {
    path: PathBuf,
    keys: BTreeMap<String, PublicKey>,
    /// Lines that are not entries (comments, damage), written back unchanged.
    other: Vec<String>,
}

/// What a presented key means against the pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Never seen: pin it (and say so once).
    New,
    /// The pinned key.
    Same,
    /// Another key than the pinned one: refuse until the user accepts it.
    Changed { pinned: PublicKey },
}

impl KnownKeys {
    /// Loads `path` (an absent file is an empty one).
    pub fn load(path: &Path) -> Result<KnownKeys, KnownError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(KnownError(path.into(), e)),
        };
        let mut keys = BTreeMap::new();
        let mut other = Vec::new();
        for line in text.lines() {
            match parse_line(line) {
                Some((what, key)) => {
                    keys.insert(what, key);
                }
                None if !line.trim().is_empty() => other.push(line.to_string()),
                None => {}
            }
        }
        Ok(KnownKeys {
            path: path.into(),
            keys,
            other,
        })
    }

    /// The default file `name` in the user's config folder.
    pub fn default_path(name: &str) -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "fileapp").map(|d| d.config_dir().join(name))
    }

    pub fn get(&self, what: &str) -> Option<&PublicKey> {
        self.keys.get(what)
    }

    /// What `key` means for `what`.
    pub fn check(&self, what: &str, key: &PublicKey) -> Pin {
        match self.keys.get(what) {
            None => Pin::New,
            Some(k) if k == key => Pin::Same,
            Some(k) => Pin::Changed { pinned: *k },
        }
    }

    /// Pins `key` for `what` (replacing any earlier pin) and saves the file. The file
    /// is read again first, so pins another process made meanwhile are kept.
    pub fn pin(&mut self, what: &str, key: PublicKey) -> Result<(), KnownError> {
        if let Ok(now) = KnownKeys::load(&self.path) {
            self.keys = now.keys;
            self.other = now.other;
        }
        self.keys.insert(what.to_string(), key);
        self.save()
    }

    /// Pins several keys with one write (see [`KnownKeys::pin`]).
    pub fn pin_all(&mut self, pins: Vec<(String, PublicKey)>) -> Result<(), KnownError> {
        if let Ok(now) = KnownKeys::load(&self.path) {
            self.keys = now.keys;
            self.other = now.other;
        }
        for (what, key) in pins {
            self.keys.insert(what, key);
        }
        self.save()
    }

    fn save(&self) -> Result<(), KnownError> {
        let err = |e| KnownError(self.path.clone(), e);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut text = String::new();
        for line in &self.other {
            text.push_str(line);
            text.push('\n');
        }
        for (what, key) in &self.keys {
            text.push_str(&format!("{what} {}\n", hex::encode(key)));
        }
        // A temporary name of this process's own: several clients may pin at once.
        let tmp = self.path.with_extension(format!(
            "tmp.{}.{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })
    }
}

fn parse_line(line: &str) -> Option<(String, PublicKey)> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let (what, key) = line.rsplit_once(char::is_whitespace)?;
    let what = what.trim();
    let bytes = hex::decode(key).ok()?;
    let key: PublicKey = bytes.try_into().ok()?;
    (!what.is_empty()).then(|| (what.to_string(), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_survive_a_reload_and_a_changed_key_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/known_servers");
        let mut k = KnownKeys::load(&path).unwrap();
        assert_eq!(k.check("index.example:12000", &[1; 32]), Pin::New);
        k.pin("index.example:12000", [1; 32]).unwrap();
        let k = KnownKeys::load(&path).unwrap();
        assert_eq!(k.check("index.example:12000", &[1; 32]), Pin::Same);
        assert_eq!(
            k.check("index.example:12000", &[2; 32]),
            Pin::Changed { pinned: [1; 32] }
        );
        assert_eq!(k.check("other:1", &[1; 32]), Pin::New);
    }

    #[test]
    fn lines_it_does_not_understand_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_peers");
        std::fs::write(&path, "# my notes\nbroken line\nalice 0102\n").unwrap();
        let mut k = KnownKeys::load(&path).unwrap();
        k.pin("bob", [3; 32]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# my notes\n")
                && text.contains("broken line\n")
                && text.contains("alice 0102\n")
        );
        assert!(text.contains(&format!("bob {}\n", hex::encode([3u8; 32]))));
        assert_eq!(KnownKeys::load(&path).unwrap().get("bob"), Some(&[3; 32]));
    }
}
