//! Requester side: download one file, verify it, resume after interruptions.
//!
//! On disk, while downloading `<file>` into `<dest>`:
//! - `<dest>/.<file>.fileapp-partial` holds the bytes received so far (a prefix of the
//!   provider's file);
//! - `<dest>/.<file>.fileapp-partial.meta` records what that prefix belongs to
//!   (`fileapp-partial 1` / `size <n>` / `hash <64 hex digits>`, one per line).
//!
//! (If the name is too long for those suffixes, both are named after a hash of the
//! file name instead: `.fileapp-<32 hex>.partial[.meta]`.)
//!
//! Only after the whole file is received, its size and BLAKE3 hash match the provider's
//! header, and the data is fsynced, is the partial renamed to `<dest>/<file>`. So a
//! cut-off or corrupt download is never visible under the final name. The hash compared
//! is ours of what we received, or, for a whole file over TLS, the owner's of what it
//! sent (`OWNER_HASHES`: the records' AEAD proves we got exactly those bytes).
//!
//! Receiving is pipelined so hashing overlaps with the network. On Linux one thread
//! `splice`s socket -> pipe -> partial file (no copy through user space) while a second
//! thread reads back what was just written (still in cache) and hashes it; elsewhere (and
//! for non-TCP streams) a task reads into a small pool of large buffers and a blocking
//! thread hashes and writes them. Peak memory is a few MiB either way.
//!
//! The parts, one job each: `connect` reaches the owner (TCP, mode byte, TLS, request
//! and answer); `partial` keeps the partial and its sidecar and decides whether to
//! resume; `space` checks and reserves disk space; `receive` gets the data onto disk and
//! hashes it; `publish` verifies and renames. `config` holds the sizes and intervals,
//! `error` the typed [`FetchError`].

mod config;
mod connect;
mod error;
mod partial;
mod publish;
mod receive;
mod space;
#[cfg(test)]
mod tests;
pub mod tree;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::header::OWNER_HASH_LEN;
use super::secure::Security;
use crate::proto::valid_file_name;
pub use crate::transfer::link::Link;
use config::DEFAULT_TIMEOUT;
use connect::{Answered, TlsSetup, connect};
use partial::{Plan, Start, make_plan, open_partial};
use receive::receive;

pub use config::{BUFFER_SIZE, BUFFERS};
pub use connect::direct;
pub use error::{Closed, FetchError, Mode, ProtocolError, Refusal, RefusalKind};
pub use partial::partial_paths;
pub(crate) use receive::Landing;
#[cfg(test)]
pub(crate) use receive::buffered::receive_buffered;

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
    /// Replace an existing, different `dest_dir/file`. Without it such a file is left
    /// alone and the fetch fails with [`FetchError::Exists`].
    pub force: bool,
    /// Limit for connecting, for the provider's answer, and for any pause in the data.
    pub timeout: Duration,
    /// The key the owner's name is bound to (from the index table). Over TLS the owner
    /// must present exactly this key; without one, an encrypted fetch is refused.
    pub peer_key: Option<[u8; 32]>,
    /// How the connection to the owner is made (`None`: TCP to `peer`). The client's
    /// dialer tries the paths through NAT (`crate::client::reach`).
    pub dial: Option<Dialer>,
}

/// Makes the connection to the owner, whatever path it takes; the connection is then
/// used as a direct one would be.
pub trait Dial: Send + Sync {
    fn dial(
        &self,
        direct: SocketAddr,
        limit: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Link, FetchError>> + Send + '_>>;
}

/// A shared [`Dial`].
#[derive(Clone)]
pub struct Dialer(pub std::sync::Arc<dyn Dial>);

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialer")
    }
}

impl FetchSpec {
    /// A spec with `force = false` and a 30 s timeout.
    pub fn new(
        peer: SocketAddr,
        owner: impl Into<String>,
        file: impl Into<String>,
        requester: impl Into<String>,
        dest_dir: impl Into<PathBuf>,
    ) -> FetchSpec {
        FetchSpec {
            peer,
            owner: owner.into(),
            file: file.into(),
            requester: requester.into(),
            dest_dir: dest_dir.into(),
            force: false,
            timeout: DEFAULT_TIMEOUT,
            peer_key: None,
            dial: None,
        }
    }
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
    /// Bytes already on disk from an earlier, interrupted attempt (0 = full download).
    pub resumed_from: u64,
    pub elapsed: Duration,
    /// The destination already held an identical file; nothing was transferred.
    pub already_present: bool,
}

impl FetchReport {
    /// The report for a destination that already is the owner's file.
    fn already_present(path: PathBuf, local: partial::Target, t0: Instant) -> FetchReport {
        FetchReport {
            path,
            size: local.size,
            hash: local.hash,
            resumed_from: 0,
            elapsed: t0.elapsed(),
            already_present: true,
        }
    }
}

/// Resolves when `cancel` is (or becomes) true; never, if its sender is gone.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FetchError> + Send + 'static,
) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| FetchError::Io(io::Error::other(e)))?
}

/// Downloads `spec.file`, verifying its BLAKE3 hash, into `spec.dest_dir`.
///
/// With [`Security::Tls`] the connection is TLS 1.3 and the owner must present
/// `spec.peer_key` (required); with [`Security::Plaintext`] it is plain TCP. The owner
/// must run in the same mode, or the fetch fails before any request is sent.
pub async fn fetch(
    spec: FetchSpec,
    security: Security,
    on_event: impl FnMut(FetchEvent) + Send + 'static,
    cancel: watch::Receiver<bool>,
) -> Result<FetchReport, FetchError> {
    fetch_on(None, spec, security, on_event, cancel).await
}

/// [`fetch`] on `stream`, already connected to the owner another way (a reverse or
/// relayed TCP connection, or the punched QUIC path's stream, `crate::reach::quic`)
/// instead of a connection to `spec.peer`.
pub async fn fetch_stream(
    stream: impl Into<Link>,
    spec: FetchSpec,
    security: Security,
    on_event: impl FnMut(FetchEvent) + Send + 'static,
    cancel: watch::Receiver<bool>,
) -> Result<FetchReport, FetchError> {
    fetch_on(Some(stream.into()), spec, security, on_event, cancel).await
}

async fn fetch_on(
    given: Option<Link>,
    spec: FetchSpec,
    security: Security,
    mut on_event: impl FnMut(FetchEvent) + Send + 'static,
    mut cancel: watch::Receiver<bool>,
) -> Result<FetchReport, FetchError> {
    let t0 = Instant::now();
    // A plain name, or one file of an offered folder (`photos/a/b.jpg`), saved under its
    // own name (`b.jpg`).
    let local = match fileapp_core::tree::split_request(&spec.file) {
        Some((_, Some(path))) => path.rsplit('/').next().unwrap_or(path).to_string(),
        _ if valid_file_name(&spec.file) => spec.file.clone(),
        _ => return Err(FetchError::BadName(super::printable(&spec.file))),
    };
    if *cancel.borrow() {
        return Err(FetchError::Cancelled);
    }
    let tls = TlsSetup::new(&security, &spec)?;
    let final_path = spec.dest_dir.join(&local);
    let (part, meta) = partial_paths(&spec.dest_dir, &local);
    let plan = {
        let (spec, f, p, m) = (spec.clone(), final_path.clone(), part.clone(), meta.clone());
        blocking(move || make_plan(&spec, &f, &p, &m)).await?
    };

    // Over TLS, or QUIC, the owner hashes a whole file as it sends it (the AEAD proves
    // we got exactly those bytes), which takes that work off this side.
    let mut owner_hashes = false;
    let request = |authenticated: bool| {
        owner_hashes = authenticated && matches!(plan, Plan::Fresh);
        plan.request(&spec, owner_hashes)
            .encode()
            .map_err(|e| ProtocolError::Request(e).into())
    };
    // Connect, ask, and read the answer; cancellable throughout.
    let Answered {
        conn,
        resp,
        mut leftover,
    } = tokio::select! {
        r = connect(&spec, given, tls.as_ref(), request, &mut on_event) => r?,
        _ = cancelled(&mut cancel) => return Err(FetchError::Cancelled),
    };

    // Decide what the answer means for the bytes on disk.
    let (offset, target) = match plan.settle(&resp, &spec.owner, &final_path)? {
        Start::AlreadyPresent(local) => {
            on_event(FetchEvent::Started {
                size: local.size,
                offset: local.size,
            });
            return Ok(FetchReport::already_present(final_path, local, t0));
        }
        Start::At { offset, target } => (offset, target),
    };
    let file = {
        let (p, m) = (part.clone(), meta.clone());
        blocking(move || open_partial(&p, &m, target, offset)).await?
    };
    // The receiver consumes `file`; this second descriptor of the same open file keeps
    // the partial locked through the hash check and the rename, so a concurrent download
    // of the same name cannot truncate or remove it in between.
    let _lock = file
        .try_clone()
        .map_err(|e| FetchError::Disk(part.clone(), e))?;
    on_event(FetchEvent::Started {
        size: target.size,
        offset,
    });
    // Anything beyond the announced size (and the owner's hash, if it sends one) is the
    // provider's bug; never write it.
    let trailer = if owner_hashes { OWNER_HASH_LEN } else { 0 };
    leftover.truncate(
        (target.size - offset)
            .saturating_add(trailer as u64)
            .min(leftover.len() as u64) as usize,
    );
    let land = Landing {
        file,
        part: part.clone(),
        offset,
        size: target.size,
        stall: spec.timeout,
    };
    let hash = match receive(conn, leftover, land, trailer, &mut on_event, &mut cancel).await {
        // Our hash and the owner's differ (debug builds): nothing of it is kept.
        Err(FetchError::HashMismatch) => {
            publish::discard(&part, &meta);
            return Err(FetchError::HashMismatch);
        }
        r => r?,
    };
    publish::verify(&hash, &target.hash, &part, &meta)?;
    let (p, m, f, force) = (part, meta, final_path.clone(), spec.force);
    blocking(move || publish::publish(&p, &m, &f, force)).await?;
    Ok(FetchReport {
        path: final_path,
        size: target.size,
        hash,
        resumed_from: offset,
        elapsed: t0.elapsed(),
        already_present: false,
    })
}
