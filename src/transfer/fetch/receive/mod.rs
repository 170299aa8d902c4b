//! Receiving the data into the partial, hashing it on the way: picks the path for the
//! connection ([`splice`] for plaintext TCP on Linux, [`buffered`] for other plaintext
//! connections, [`tls`] for TLS), and holds what they share: where the bytes land, running a blocking
//! receiver with progress and cancel, and hashing the prefix already on disk.
//!
//! Every path leaves everything it received in the partial on failure or cancel, so a
//! later attempt can resume from it.

pub(crate) mod buffered;
#[cfg(target_os = "linux")]
mod splice;
mod tls;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::config::PROGRESS_INTERVAL;
use super::connect::PeerConn;
use super::{FetchError, FetchEvent, cancelled};
use crate::transfer::link::{Killer, Link};

/// Where received bytes land: the partial (holding `offset` bytes already), the size the
/// file must reach, and how long the sender may stall.
pub(crate) struct Landing {
    pub file: File,
    pub part: PathBuf,
    pub offset: u64,
    pub size: u64,
    pub stall: Duration,
}

impl Landing {
    /// A write or read-back error on the partial, as the fetch error it means.
    fn disk(&self) -> impl Fn(io::Error) -> FetchError + '_ {
        move |e| FetchError::Disk(self.part.clone(), e)
    }
}

/// Receives `size - offset` bytes (after `leftover`, the data read with the answer) into
/// the partial, returning the BLAKE3 hash of the whole file: ours, or with a `trailer`
/// (TLS only) the owner's hash that follows the data.
pub(super) async fn receive(
    conn: PeerConn,
    leftover: Vec<u8>,
    land: Landing,
    trailer: usize,
    on_event: &mut (impl FnMut(FetchEvent) + Send),
    cancel: &mut watch::Receiver<bool>,
) -> Result<[u8; 32], FetchError> {
    match conn {
        #[cfg(target_os = "linux")]
        PeerConn::Plain(Link::Tcp(stream)) => {
            splice::receive_splice(stream, leftover, land, on_event, cancel).await
        }
        PeerConn::Plain(stream) => {
            buffered::receive_buffered(stream, leftover, land, trailer, on_event, cancel).await
        }
        PeerConn::Tls(stream) => {
            tls::receive_tls(*stream, leftover, land, trailer, on_event, cancel).await
        }
    }
}

/// A hasher that has already taken the `offset` bytes of the partial at `part`. Only
/// call while the partial is exactly `offset` long (open_partial set it) and nothing is
/// appended yet.
fn hash_prefix(part: &Path, offset: u64) -> io::Result<blake3::Hasher> {
    let mut hasher = blake3::Hasher::new();
    if offset > 0 {
        hasher.update_mmap_rayon(part)?;
    }
    Ok(hasher)
}

/// The error when a receiver finished without the whole file on disk.
fn incomplete(done: u64, size: u64) -> FetchError {
    FetchError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("received {done} of {size} bytes"),
    ))
}

/// Runs the blocking receive `job` on `sock` (a blocking socket, every read bounded by
/// `stall`), reporting progress from the byte count it keeps; cancel sets its stop flag
/// and wakes it with `killer`.
async fn run_receiver<S, J>(
    (mut sock, killer): (S, Killer),
    land: Landing,
    on_event: &mut (impl FnMut(FetchEvent) + Send),
    cancel: &mut watch::Receiver<bool>,
    job: J,
) -> Result<[u8; 32], FetchError>
where
    S: Send + 'static,
    J: FnOnce(&mut S, &Landing, &AtomicU64, &AtomicBool) -> Result<[u8; 32], FetchError>
        + Send
        + 'static,
{
    let (offset, size) = (land.offset, land.size);
    let written = Arc::new(AtomicU64::new(offset));
    let stop = Arc::new(AtomicBool::new(false));
    let job = {
        let (written, stop) = (written.clone(), stop.clone());
        tokio::task::spawn_blocking(move || job(&mut sock, &land, &written, &stop))
    };
    tokio::pin!(job);
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = offset;
    let result = loop {
        tokio::select! {
            r = &mut job => break r.map_err(|e| FetchError::Io(io::Error::other(e)))?,
            _ = tick.tick() => {
                let done = written.load(Ordering::Relaxed);
                if done != reported {
                    on_event(FetchEvent::Progress { done });
                    reported = done;
                }
            }
            _ = cancelled(cancel) => {
                stop.store(true, Ordering::SeqCst);
                killer.kill();
                // Wait, so everything received is on disk before the caller may retry.
                let _ = (&mut job).await;
                return Err(FetchError::Cancelled);
            }
        }
    };
    let hash = result?;
    on_event(FetchEvent::Progress { done: size });
    Ok(hash)
}

/// Whether this build also hashes what came when the owner hashes (`OWNER_HASHES`):
/// debug and test builds do, so a bug in the receive path (data written other than
/// what was opened) can never publish a corrupt file as verified. Release builds rely
/// on the owner's hash, which is the point of asking for it.
pub(super) const CHECK_OWNER_HASH: bool = cfg!(any(debug_assertions, test));

/// The hash to check the file against: the owner's if it sent one (when
/// [`CHECK_OWNER_HASH`], only if it is also ours), else ours.
pub(super) fn settle_hash(
    owners: Option<[u8; 32]>,
    ours: impl FnOnce() -> [u8; 32],
) -> Result<[u8; 32], FetchError> {
    match owners {
        None => Ok(ours()),
        Some(owners) if CHECK_OWNER_HASH && owners != ours() => Err(FetchError::HashMismatch),
        Some(owners) => Ok(owners),
    }
}

/// A socket error of a blocking receive, as the fetch error it means.
fn socket_error(e: io::Error, stop: &AtomicBool) -> FetchError {
    if stop.load(Ordering::SeqCst) {
        return FetchError::Cancelled;
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            FetchError::Timeout("waiting for data from the owner")
        }
        _ => FetchError::Io(e),
    }
}
