//! Provider side (placeholder API; real implementation in the transfer work).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::Notice;

/// Why a file cannot be offered.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("{0} is not a plain file name")]
    BadName(String),
    #[error("{0} is not a regular file in the shared folder")]
    NotAFile(String),
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
}

/// The shared folder, the offered names, and their cached hashes.
#[derive(Debug, Default)]
pub struct Library {
    dir: Option<PathBuf>,
    offered: BTreeSet<String>,
}

pub type SharedLibrary = Arc<RwLock<Library>>;

impl Library {
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
    pub fn set_dir(&mut self, dir: PathBuf) {
        self.dir = Some(dir);
    }
    pub fn offered(&self) -> &BTreeSet<String> {
        &self.offered
    }
    /// Checks that `name` is a plain name of a regular file in the folder, hashes it
    /// (blocking; call from a blocking context) and adds it to the offered set.
    pub fn offer(&mut self, name: &str) -> Result<(), OfferError> {
        self.offered.insert(name.to_string());
        Ok(())
    }
}

/// Serves requests on `listener` until `accepting` becomes false.
pub async fn serve(
    _listener: TcpListener,
    _lib: SharedLibrary,
    _notices: mpsc::UnboundedSender<Notice>,
    _accepting: watch::Receiver<bool>,
) {
}
