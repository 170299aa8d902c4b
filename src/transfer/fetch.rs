//! Requester side (placeholder API; real implementation in the transfer work).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What to download and where.
#[derive(Debug, Clone)]
pub struct FetchSpec {
    /// The owner's TCP address.
    pub peer: SocketAddr,
    /// The owner's client name (for messages).
    pub owner: String,
    /// The offered file name.
    pub file: String,
    /// Our own client name, sent to the provider for its messages.
    pub requester: String,
    /// Folder the file is saved in.
    pub dest_dir: PathBuf,
}

/// Progress reported while fetching; the driver turns these into `< ... >` lines or a bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// TCP connection established.
    Connected,
    /// The provider accepted; `size` bytes in all, starting at `offset` (resume if > 0).
    Started { size: u64, offset: u64 },
    /// `done` bytes of `size` are on disk.
    Progress { done: u64 },
}

/// A completed, verified download.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub path: PathBuf,
    pub size: u64,
    pub hash: [u8; 32],
    pub resumed_from: u64,
    pub elapsed: Duration,
}

/// Why a download failed. The message is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0}")]
    Refused(String),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("hash mismatch: the received data does not match the owner's file")]
    HashMismatch,
    #[error("cancelled")]
    Cancelled,
}

/// Downloads `spec.file`, verifying its BLAKE3 hash, into `spec.dest_dir`.
pub async fn fetch(
    _spec: FetchSpec,
    _on_event: impl FnMut(FetchEvent) + Send + 'static,
    _cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<FetchReport, FetchError> {
    Err(FetchError::Cancelled)
}
