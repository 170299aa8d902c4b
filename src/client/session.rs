//! The client's crash journal: the shared folder and offered names of the running
//! session, kept in the user's data folder while the client runs and removed when it
//! leaves cleanly. A client restarted after a crash finds it and offers the same files
//! again, so its name comes back with its offers.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a restarted client needs to offer the same files again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub dir: Option<PathBuf>,
    pub offers: Vec<String>,
}

/// The journal file of one client name.
#[derive(Debug, Clone)]
pub struct Journal {
    path: Option<PathBuf>,
}

impl Journal {
    /// The journal of `name` in the user's data folder (none if there is no such folder).
    pub fn for_name(name: &str) -> Journal {
        let path = directories::ProjectDirs::from("", "", "fileapp")
            .map(|d| d.data_dir().join("sessions").join(format!("{name}.json")));
        Journal { path }
    }

    pub fn at(path: &Path) -> Journal {
        Journal {
            path: Some(path.to_path_buf()),
        }
    }

    /// What a previous run left behind, if it did not leave cleanly.
    pub fn load(&self) -> Option<Saved> {
        let text = std::fs::read_to_string(self.path.as_ref()?).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Records the session (best effort: a failure only loses crash recovery).
    pub fn save(&self, saved: &Saved) {
        let Some(path) = &self.path else { return };
        let Ok(text) = serde_json::to_string(saved) else {
            return;
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Write-then-rename: a crash mid-write leaves the old journal, never half of one.
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    /// The session ended cleanly: nothing to recover.
    pub fn remove(&self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::at(&dir.path().join("s/B.json"));
        assert_eq!(j.load(), None);
        let saved = Saved {
            dir: Some("/tmp/x y".into()),
            offers: vec!["a b".into(), "c\"d".into()],
        };
        j.save(&saved);
        assert_eq!(j.load(), Some(saved));
        j.remove();
        assert_eq!(j.load(), None);
        std::fs::write(dir.path().join("s/B.json"), b"{garbage").unwrap();
        assert_eq!(j.load(), None, "a damaged journal is ignored");
    }
}
