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

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use super::header::{MAX_RESPONSE_LEN, OWNER_HASH_LEN, Request, Response, Status};
use super::secure::{MODE_BUSY, MODE_PLAIN, MODE_TLS, Presented, Security, server_name};
use super::tls::{self, ReceiveError, TlsStream};
use super::{ReadHeaderError, read_header};
use crate::identity::fingerprint;
use crate::proto::valid_file_name;

/// Size of one receive buffer. Large enough to amortize per-buffer overhead, small
/// enough that a buffer is still in the last-level cache when the writer hashes it.
pub const BUFFER_SIZE: usize = 1 << 20;
/// Buffers in flight between the socket reader and the hash+write thread.
pub const BUFFERS: usize = 8;
/// Progress is reported at most this often...
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// ...or after this many bytes, whichever comes first.
#[cfg_attr(target_os = "linux", allow(dead_code))]
const PROGRESS_BYTES: u64 = 64 << 20;

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
            timeout: Duration::from_secs(30),
            peer_key: None,
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

/// Why a download failed. The message is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, io::Error),
    #[error("{0}")]
    Refused(String),
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    #[error("hash mismatch: the received data does not match the owner's file")]
    HashMismatch,
    #[error("cancelled")]
    Cancelled,
    #[error("{} already exists and differs from the owner's copy (use force to replace it)", .0.display())]
    Exists(PathBuf),
    #[error("'{0}' is not a valid file name")]
    BadName(String),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("cannot write {}: {}", .0.display(), .1)]
    Disk(PathBuf, io::Error),
    #[error("another download of {} is in progress", .0.display())]
    Locked(PathBuf),
    #[error(
        "{0} has no key in the table, so it cannot be authenticated; refusing an unencrypted, unauthenticated transfer"
    )]
    NoPeerKey(String),
    #[error(
        "{owner} presented key {presented}, not the key {owner} is registered with ({expected}); refusing the connection (possible man-in-the-middle)"
    )]
    WrongKey {
        owner: String,
        expected: String,
        presented: String,
    },
    #[error("{0}")]
    ModeMismatch(String),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, String),
}

/// Where the partial data and its sidecar live for `file` in `dest_dir`.
pub fn partial_paths(dest_dir: &Path, file: &str) -> (PathBuf, PathBuf) {
    let plain = format!(".{file}.fileapp-partial");
    // NAME_MAX is 255 bytes on every common file system.
    let base = if plain.len() + ".meta".len() <= 255 {
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
struct Target {
    size: u64,
    hash: [u8; 32],
}

fn read_meta(path: &Path) -> Option<Target> {
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

fn write_meta(path: &Path, t: Target) -> io::Result<()> {
    let text = format!(
        "fileapp-partial 1\nsize {}\nhash {}\n",
        t.size,
        hex::encode(t.hash)
    );
    std::fs::write(path, text)
}

/// How this attempt starts, decided from what is on disk.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Nothing usable on disk.
    Fresh,
    /// A partial of `offset` bytes of `target` exists.
    Resume { offset: u64, target: Target },
    /// The destination exists (and `force` is off): ask whether it is identical.
    Probe { local: Target },
}

/// Inspects the destination and the partial. Blocking.
fn make_plan(
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
            let hash = super::hash_file(final_path)
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

/// Resolves when `cancel` is (or becomes) true; never, if its sender is gone.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The connection once the modes agreed (and, for TLS, the owner's key was checked).
enum PeerConn {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// Sends the request and reads the answer on an established stream.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    limit: Duration,
) -> Result<(Response, Vec<u8>), FetchError> {
    timeout(limit, async {
        stream.write_all(request).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| FetchError::Timeout("sending the request"))??;
    let answer = timeout(
        limit,
        read_header(stream, MAX_RESPONSE_LEN, Response::decode),
    )
    .await
    .map_err(|_| FetchError::Timeout("waiting for the owner's answer"))?;
    match answer {
        Ok(x) => Ok(x),
        Err(ReadHeaderError::Io(e)) => Err(FetchError::Io(e)),
        Err(ReadHeaderError::Closed) => Err(FetchError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the owner closed the connection without answering",
        ))),
        Err(ReadHeaderError::Header(e)) => Err(FetchError::Protocol(e.to_string())),
    }
}

/// Downloads `spec.file`, verifying its BLAKE3 hash, into `spec.dest_dir`.
///
/// With [`Security::Tls`] the connection is TLS 1.3 and the owner must present
/// `spec.peer_key` (required); with [`Security::Plaintext`] it is plain TCP. The owner
/// must run in the same mode, or the fetch fails before any request is sent.
pub async fn fetch(
    spec: FetchSpec,
    security: Security,
    mut on_event: impl FnMut(FetchEvent) + Send + 'static,
    mut cancel: watch::Receiver<bool>,
) -> Result<FetchReport, FetchError> {
    let t0 = Instant::now();
    if !valid_file_name(&spec.file) {
        return Err(FetchError::BadName(super::printable(&spec.file)));
    }
    if *cancel.borrow() {
        return Err(FetchError::Cancelled);
    }
    let tls = match &security {
        Security::Tls(id) => {
            let Some(key) = spec.peer_key else {
                return Err(FetchError::NoPeerKey(super::printable(&spec.owner)));
            };
            let (cfg, seen) = id
                .client_config(key)
                .map_err(|e| FetchError::Tls(super::printable(&spec.owner), e.to_string()))?;
            Some((cfg, seen, key))
        }
        Security::Plaintext => None,
    };
    let final_path = spec.dest_dir.join(&spec.file);
    let (part, meta) = partial_paths(&spec.dest_dir, &spec.file);
    let plan = {
        let (spec, f, p, m) = (spec.clone(), final_path.clone(), part.clone(), meta.clone());
        tokio::task::spawn_blocking(move || make_plan(&spec, &f, &p, &m))
            .await
            .map_err(|e| FetchError::Io(io::Error::other(e)))??
    };

    // Over TLS the owner hashes a whole file as it sends it (the records' AEAD proves we
    // got exactly those bytes), which takes that work off this side.
    let owner_hashes = tls.is_some() && matches!(plan, Plan::Fresh);
    // Connect, ask, and read the answer; cancellable throughout.
    let request = match plan {
        Plan::Fresh => Request {
            file: spec.file.clone(),
            requester: spec.requester.clone(),
            offset: 0,
            expected_hash: None,
            if_match: false,
            owner_hashes,
        },
        Plan::Resume { offset, target } => Request {
            file: spec.file.clone(),
            requester: spec.requester.clone(),
            offset,
            expected_hash: Some(target.hash),
            if_match: false,
            owner_hashes: false,
        },
        Plan::Probe { local } => Request {
            file: spec.file.clone(),
            requester: spec.requester.clone(),
            offset: local.size,
            expected_hash: Some(local.hash),
            if_match: true,
            owner_hashes: false,
        },
    };
    let request = request
        .encode()
        .map_err(|e| FetchError::Protocol(e.to_string()))?;
    let handshake = async {
        let mut stream = match timeout(spec.timeout, TcpStream::connect(spec.peer)).await {
            Err(_) => {
                return Err(FetchError::Connect(
                    spec.peer.to_string(),
                    io::Error::new(io::ErrorKind::TimedOut, "timed out"),
                ));
            }
            Ok(Err(e)) => return Err(FetchError::Connect(spec.peer.to_string(), e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        on_event(FetchEvent::Connected);
        let owner = super::printable(&spec.owner);
        // Modes first: ours out, theirs in (the provider sends its own unasked).
        let mine = security.mode_byte();
        let mut theirs = [0u8; 1];
        timeout(spec.timeout, async {
            stream.write_all(&[mine]).await?;
            stream.read_exact(&mut theirs).await
        })
        .await
        .map_err(|_| FetchError::Timeout("waiting for the owner's answer"))?
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => FetchError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the owner closed the connection without answering",
            )),
            _ => FetchError::Io(e),
        })?;
        match (theirs[0], &tls) {
            (MODE_PLAIN, None) => {
                let (resp, leftover) = exchange(&mut stream, &request, spec.timeout).await?;
                Ok((PeerConn::Plain(stream), resp, leftover))
            }
            (MODE_TLS, Some((cfg, seen, expected))) => {
                let mut tls = match timeout(
                    spec.timeout,
                    tls::connect(stream, cfg.clone(), server_name()),
                )
                .await
                {
                    Err(_) => return Err(FetchError::Timeout("in the TLS handshake")),
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        let seen = seen.lock().ok().and_then(|s| *s);
                        return Err(match seen {
                            Some(Presented::Key(k)) => FetchError::WrongKey {
                                owner,
                                expected: fingerprint(expected),
                                presented: fingerprint(&k),
                            },
                            Some(Presented::NotEd25519) => FetchError::WrongKey {
                                owner,
                                expected: fingerprint(expected),
                                presented: "(not an Ed25519 key)".into(),
                            },
                            None => FetchError::Tls(owner, tls_error_text(&e)),
                        });
                    }
                };
                let (resp, leftover) = exchange(&mut tls, &request, spec.timeout).await?;
                Ok((PeerConn::Tls(Box::new(tls)), resp, leftover))
            }
            (MODE_BUSY, _) => Err(FetchError::Refused(format!(
                "{owner} refused the request: too many transfers in progress, try later"
            ))),
            (MODE_TLS, None) => Err(FetchError::ModeMismatch(format!(
                "{owner} requires encryption; this client runs with --plaintext (both sides must use the same mode)"
            ))),
            (MODE_PLAIN, Some(_)) => Err(FetchError::ModeMismatch(format!(
                "{owner} accepts only plaintext transfers (it runs with --plaintext); this client requires encryption"
            ))),
            (b, _) => Err(FetchError::Protocol(format!(
                "unexpected first byte 0x{b:02x} from {owner} (not a fileapp peer of this version?)"
            ))),
        }
    };
    let (stream, resp, mut leftover) = tokio::select! {
        r = handshake => r?,
        _ = cancelled(&mut cancel) => return Err(FetchError::Cancelled),
    };

    match resp.status {
        Status::Ok => {}
        Status::Changed if matches!(plan, Plan::Probe { .. }) => {
            return Err(FetchError::Exists(final_path));
        }
        Status::Changed => {
            return Err(FetchError::Protocol("unexpected 'changed' answer".into()));
        }
        Status::NotOffered | Status::Busy | Status::Error => {
            let msg = if resp.message.is_empty() {
                format!("{:?}", resp.status)
            } else {
                super::printable(&resp.message)
            };
            return Err(FetchError::Refused(format!(
                "{} refused the request: {msg}",
                super::printable(&spec.owner)
            )));
        }
    }
    let target = Target {
        size: resp.size,
        hash: resp.hash,
    };

    // Decide what the answer means for the bytes on disk.
    let offset = match plan {
        Plan::Probe { local } => {
            if target == local && resp.start == local.size {
                on_event(FetchEvent::Started {
                    size: local.size,
                    offset: local.size,
                });
                return Ok(FetchReport {
                    path: final_path,
                    size: local.size,
                    hash: local.hash,
                    resumed_from: 0,
                    elapsed: t0.elapsed(),
                    already_present: true,
                });
            }
            return Err(FetchError::Protocol(
                "the owner agreed to a comparison it should have refused".into(),
            ));
        }
        Plan::Resume {
            offset,
            target: old,
        } if resp.start == offset && target == old => offset,
        _ if resp.start == 0 => 0,
        _ => {
            return Err(FetchError::Protocol(format!(
                "the owner wants to start at byte {} which we did not ask for",
                resp.start
            )));
        }
    };

    let file = {
        let (p, m) = (part.clone(), meta.clone());
        tokio::task::spawn_blocking(move || open_partial(&p, &m, target, offset))
            .await
            .map_err(|e| FetchError::Io(io::Error::other(e)))??
    };
    on_event(FetchEvent::Started {
        size: target.size,
        offset,
    });
    // Anything beyond the announced size (and the owner's hash, if it sends one) is the
    // provider's bug; never write it.
    let trailer = if owner_hashes { OWNER_HASH_LEN } else { 0 };
    leftover.truncate((target.size - offset + trailer as u64).min(leftover.len() as u64) as usize);

    let land = Landing {
        file,
        part: part.clone(),
        offset,
        size: target.size,
        stall: spec.timeout,
    };
    let received = match stream {
        #[cfg(target_os = "linux")]
        PeerConn::Plain(stream) => {
            receive_splice(stream, leftover, land, &mut on_event, &mut cancel).await
        }
        #[cfg(not(target_os = "linux"))]
        PeerConn::Plain(stream) => {
            receive_buffered(stream, leftover, land, &mut on_event, &mut cancel).await
        }
        PeerConn::Tls(stream) => {
            receive_tls(*stream, leftover, land, trailer, &mut on_event, &mut cancel).await
        }
    };
    let hash = match received {
        Ok(hash) => hash,
        Err(e) => return Err(e),
    };
    if hash != target.hash {
        // The prefix or the data is corrupt; a retry must start from scratch.
        let _ = std::fs::remove_file(&part);
        let _ = std::fs::remove_file(&meta);
        return Err(FetchError::HashMismatch);
    }

    let (p, m, f, force) = (part.clone(), meta.clone(), final_path.clone(), spec.force);
    tokio::task::spawn_blocking(move || publish(&p, &m, &f, force))
        .await
        .map_err(|e| FetchError::Io(io::Error::other(e)))??;
    Ok(FetchReport {
        path: final_path,
        size: target.size,
        hash,
        resumed_from: offset,
        elapsed: t0.elapsed(),
        already_present: false,
    })
}

/// A failed TLS handshake as one line: rustls' error when there is one.
fn tls_error_text(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(a)) => {
            format!("the owner rejected the handshake ({a:?}; does it know our key?)")
        }
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

/// Opens (creating or truncating as needed) the partial for appending at `offset`, after
/// recording `target` in the sidecar, and locks it against a concurrent download.
fn open_partial(part: &Path, meta: &Path, target: Target, offset: u64) -> Result<File, FetchError> {
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
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        return Err(FetchError::Locked(part.to_path_buf()));
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

/// Fails at once if the file system clearly lacks room for `offset..size`, rather than
/// near the end of a long download.
fn check_space(file: &File, offset: u64, size: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall on a descriptor we own, into a zeroed struct.
        if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) } == 0 {
            let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
            let need = size.saturating_sub(offset);
            if st.f_blocks > 0 && free < need {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("not enough free space: {need} bytes needed, {free} available"),
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (file, offset, size);
    Ok(())
}

/// Reserves disk space a step ahead of the writer (`fallocate`, keeping the file's
/// length): the file system allocates in large runs instead of page by page, and the
/// file is laid out in one piece. File systems that cannot do it are written as usual,
/// and so is tmpfs: there `fallocate` allocates the memory pages themselves, in bursts
/// that stall the writer (downloads measured about 5% slower), and memory does not
/// fragment.
struct Reserve {
    reserved: u64,
    size: u64,
    enabled: bool,
}

impl Reserve {
    /// How far ahead of the write position space is kept reserved.
    const STEP: u64 = 32 << 20;

    fn new(file: &File, offset: u64, size: u64) -> Reserve {
        Reserve {
            reserved: offset,
            size,
            enabled: cfg!(target_os = "linux") && !in_memory(file),
        }
    }

    /// Called before writing at `pos`.
    fn ahead(&mut self, file: &File, pos: u64) -> io::Result<()> {
        if !self.enabled || self.reserved >= self.size || pos + Self::STEP <= self.reserved {
            return Ok(());
        }
        let end = self.size.min(pos + 2 * Self::STEP);
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: plain syscall on a descriptor we own.
            let r = unsafe {
                libc::fallocate(
                    file.as_raw_fd(),
                    libc::FALLOC_FL_KEEP_SIZE,
                    self.reserved as libc::off_t,
                    (end - self.reserved) as libc::off_t,
                )
            };
            if r != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        "the disk is full",
                    ));
                }
                // Not supported here: write without reserving.
                self.enabled = false;
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        self.reserved = end;
        Ok(())
    }
}

/// Whether `file` lives on tmpfs (its pages are memory, not disk blocks).
fn in_memory(file: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall on a descriptor we own, into a struct we own.
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } == 0 {
            return st.f_type == libc::TMPFS_MAGIC;
        }
    }
    let _ = file;
    false
}

/// Moves the verified partial to its final name. Without `force`, never replaces a file
/// that appeared meanwhile (a hard link fails if the name exists). Blocking.
fn publish(part: &Path, meta: &Path, final_path: &Path, force: bool) -> Result<(), FetchError> {
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

/// Receives `size - offset` bytes into `file` (which holds `offset` verified-by-hash-later
/// bytes), returning the BLAKE3 hash of the whole file. On failure or cancel, everything
/// received so far is on disk in the partial.
/// Portable path for any byte stream (used where `splice` is unavailable): this task
/// reads into a pool of buffers, a blocking thread hashes and writes them.
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(crate) async fn receive_buffered<R: AsyncRead + Unpin>(
    mut stream: R,
    leftover: Vec<u8>,
    land: Landing,
    on_event: &mut (impl FnMut(FetchEvent) + Send),
    cancel: &mut watch::Receiver<bool>,
) -> Result<[u8; 32], FetchError> {
    let Landing {
        file,
        part,
        offset,
        size,
        stall,
    } = land;
    let (full_tx, full_rx) = mpsc::channel::<(Vec<u8>, usize)>(BUFFERS);
    let (empty_tx, mut empty_rx) = mpsc::channel::<Vec<u8>>(BUFFERS);
    let written = Arc::new(AtomicU64::new(offset));
    let writer = {
        let written = written.clone();
        let part = part.clone();
        tokio::task::spawn_blocking(move || {
            write_loop(file, &part, offset, full_rx, empty_tx, &written)
        })
    };

    let mut remaining = size - offset;
    let mut allocated = 0;
    let mut pending = leftover;
    pending.truncate(remaining.min(pending.len() as u64) as usize);
    let mut last_report = (Instant::now(), offset);
    let mut outcome: Result<(), FetchError> = Ok(());

    'outer: while remaining > 0 {
        let mut buf = if allocated < BUFFERS {
            allocated += 1;
            vec![0u8; BUFFER_SIZE]
        } else {
            match empty_rx.recv().await {
                Some(b) => b,
                None => break, // writer failed; its error is collected below
            }
        };
        let want = (remaining.min(BUFFER_SIZE as u64)) as usize;
        let mut filled = 0;
        if !pending.is_empty() {
            let n = pending.len().min(want);
            buf[..n].copy_from_slice(&pending[..n]);
            pending.drain(..n);
            filled = n;
        }
        while filled < want {
            let r = tokio::select! {
                r = timeout(stall, stream.read(&mut buf[filled..want])) => r,
                _ = cancelled(cancel) => {
                    outcome = Err(FetchError::Cancelled);
                    let _ = full_tx.send((buf, filled)).await;
                    break 'outer;
                }
            };
            match r {
                Err(_) => {
                    outcome = Err(FetchError::Timeout("waiting for data from the owner"));
                }
                Ok(Err(e)) => outcome = Err(FetchError::Io(e)),
                Ok(Ok(0)) => {
                    outcome = Err(FetchError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the owner closed the connection after {} of {size} bytes",
                            size - remaining + filled as u64
                        ),
                    )))
                }
                Ok(Ok(n)) => {
                    filled += n;
                    continue;
                }
            }
            // Keep what did arrive: it is a valid prefix for a later resume.
            let _ = full_tx.send((buf, filled)).await;
            break 'outer;
        }
        remaining -= filled as u64;
        if full_tx.send((buf, filled)).await.is_err() {
            break;
        }
        let done = written.load(Ordering::Relaxed);
        if last_report.0.elapsed() >= PROGRESS_INTERVAL || done - last_report.1 >= PROGRESS_BYTES {
            on_event(FetchEvent::Progress { done });
            last_report = (Instant::now(), done);
        }
    }
    drop(full_tx);
    drop(stream);
    let hashed = writer
        .await
        .map_err(|e| FetchError::Io(io::Error::other(e)))?;
    outcome?;
    let hash = hashed?;
    let done = written.load(Ordering::Relaxed);
    if done != size {
        return Err(FetchError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("received {done} of {size} bytes"),
        )));
    }
    on_event(FetchEvent::Progress { done });
    Ok(hash)
}

/// The hash+write stage: hashes the existing prefix, then every buffer as it is written.
/// Fsyncs at the end so a published file is durable. Blocking.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn write_loop(
    mut file: File,
    part: &Path,
    offset: u64,
    mut full_rx: mpsc::Receiver<(Vec<u8>, usize)>,
    empty_tx: mpsc::Sender<Vec<u8>>,
    written: &AtomicU64,
) -> Result<[u8; 32], FetchError> {
    let disk = |e| FetchError::Disk(part.to_path_buf(), e);
    let mut hasher = blake3::Hasher::new();
    if offset > 0 {
        // The partial is exactly `offset` long here (open_partial set it), and nothing
        // is appended until this returns.
        hasher.update_mmap_rayon(part).map_err(disk)?;
    }
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(offset)).map_err(disk)?;
    while let Some((buf, n)) = full_rx.blocking_recv() {
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(disk)?;
        written.fetch_add(n as u64, Ordering::Relaxed);
        let _ = empty_tx.try_send(buf);
    }
    file.sync_all().map_err(disk)?;
    Ok(*hasher.finalize().as_bytes())
}

/// Where received bytes land: the partial (holding `offset` bytes already), the size the
/// file must reach, and how long the sender may stall.
pub(crate) struct Landing {
    pub file: File,
    pub part: PathBuf,
    pub offset: u64,
    pub size: u64,
    pub stall: Duration,
}

/// Linux fast path: see the module comment.
#[cfg(target_os = "linux")]
async fn receive_splice(
    stream: TcpStream,
    leftover: Vec<u8>,
    land: Landing,
    on_event: &mut (impl FnMut(FetchEvent) + Send),
    cancel: &mut watch::Receiver<bool>,
) -> Result<[u8; 32], FetchError> {
    run_receiver(
        stream,
        land,
        on_event,
        cancel,
        move |sock, land, written, stop| splice_and_hash(sock, &leftover, land, written, stop),
    )
    .await
}

/// TLS: the stream's socket is read on a blocking thread that opens the records in
/// place (and hashes their plaintext unless the owner does: `trailer` is then the
/// length of its hash after the data); a second thread writes it (see
/// [`tls::Receiver`]).
async fn receive_tls(
    stream: TlsStream,
    leftover: Vec<u8>,
    land: Landing,
    trailer: usize,
    on_event: &mut (impl FnMut(FetchEvent) + Send),
    cancel: &mut watch::Receiver<bool>,
) -> Result<[u8; 32], FetchError> {
    let (sock, mut rx) = stream.into_receiver();
    // What `read_header` read past the answer comes before what the stream still holds.
    let mut plain = leftover;
    plain.extend_from_slice(&rx.plain);
    rx.plain = plain;
    run_receiver(
        sock,
        land,
        on_event,
        cancel,
        move |sock, land, written, stop| open_and_hash(rx, sock, land, trailer, written, stop),
    )
    .await
}

/// Runs the blocking receive `job` on the socket (switched to blocking mode, every read
/// bounded by `stall`), reporting progress from the byte count it keeps; cancel sets its
/// stop flag and shuts the socket down to wake it.
async fn run_receiver<J>(
    stream: TcpStream,
    land: Landing,
    on_event: &mut (impl FnMut(FetchEvent) + Send),
    cancel: &mut watch::Receiver<bool>,
    job: J,
) -> Result<[u8; 32], FetchError>
where
    J: FnOnce(
            &mut std::net::TcpStream,
            &Landing,
            &AtomicU64,
            &AtomicBool,
        ) -> Result<[u8; 32], FetchError>
        + Send
        + 'static,
{
    let (offset, size) = (land.offset, land.size);
    let mut sock = stream.into_std()?;
    sock.set_nonblocking(false)?;
    // Bounds every blocking read; an expired wait surfaces as EAGAIN.
    sock.set_read_timeout(Some(land.stall))?;
    let killer = sock.try_clone()?;
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
                let _ = killer.shutdown(std::net::Shutdown::Both);
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

/// Buffers of opened records between the TLS reader and the writer thread.
const TLS_BUFFERS: usize = 6;

/// Blocking body of [`receive_tls`]: this thread reads and opens records and, without a
/// `trailer`, hashes them (while still in cache, after the existing prefix); a second
/// thread writes them at `offset..size`. Returns our hash, or the owner's trailer.
fn open_and_hash(
    rx: tls::Receiver,
    sock: &mut std::net::TcpStream,
    land: &Landing,
    trailer: usize,
    written: &AtomicU64,
    stop: &AtomicBool,
) -> Result<[u8; 32], FetchError> {
    use std::os::unix::fs::FileExt;
    let (file, part, offset, size) = (&land.file, land.part.as_path(), land.offset, land.size);
    let disk = |e| FetchError::Disk(part.to_path_buf(), e);
    let mut hasher = blake3::Hasher::new();
    if offset > 0 {
        // The partial is exactly `offset` long (open_partial set it).
        hasher.update_mmap_rayon(part).map_err(disk)?;
    }
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<tls::Plaintext>(TLS_BUFFERS);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(TLS_BUFFERS);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<(), FetchError> {
            let mut pos = offset;
            let mut reserve = Reserve::new(file, offset, size);
            while let Ok(opened) = full_rx.recv() {
                reserve.ahead(file, pos).map_err(disk)?;
                file.write_all_at(&opened.buf[..opened.len], pos)
                    .map_err(disk)?;
                pos += opened.len as u64;
                written.store(pos, Ordering::Relaxed);
                let _ = empty_tx.try_send(opened.buf);
            }
            file.sync_all().map_err(disk)
        });
        let mut allocated = 0;
        let fresh = || {
            if allocated < TLS_BUFFERS {
                allocated += 1;
                Some(vec![0u8; tls::RECEIVE_BUFFER])
            } else {
                empty_rx.recv().ok()
            }
        };
        // When the owner hashes (`trailer` is its hash), there is nothing to do here.
        let hash = |piece: &[u8]| {
            if trailer == 0 {
                hasher.update(piece);
            }
        };
        let deliver = |o: tls::Plaintext| full_tx.send(o).is_ok();
        let received = rx.run(sock, size - offset, trailer, fresh, hash, deliver);
        drop(full_tx);
        let wrote = writer
            .join()
            .map_err(|_| FetchError::Io(io::Error::other("writer thread panicked")))?;
        let owners = match received {
            Ok(tail) => <[u8; 32]>::try_from(tail.as_slice()).ok(),
            // The writer stopped: its error says why.
            Err(ReceiveError::Stopped) => {
                wrote?;
                return Err(FetchError::Io(io::Error::other("the writer stopped")));
            }
            Err(ReceiveError::Io(e)) => return Err(socket_error(e, stop)),
            Err(_) if stop.load(Ordering::SeqCst) => return Err(FetchError::Cancelled),
            Err(ReceiveError::Closed(n)) => {
                return Err(FetchError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the owner closed the connection after {} of {size} bytes",
                        offset + n
                    ),
                )));
            }
            Err(ReceiveError::TooMuch) => {
                return Err(FetchError::Protocol(
                    "the owner sent more data than it announced".into(),
                ));
            }
            Err(ReceiveError::Record(e)) => return Err(FetchError::Io(e.into())),
        };
        wrote?;
        if written.load(Ordering::Relaxed) != size {
            return Err(FetchError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "received {} of {size} bytes",
                    written.load(Ordering::Relaxed)
                ),
            )));
        }
        // The owner's hash of what it sent, or ours of what came.
        Ok(owners.unwrap_or_else(|| *hasher.finalize().as_bytes()))
    })
}

/// Blocking body of [`receive_splice`]: splices into the file at `offset..size` and hashes
/// the whole file (prefix included) on a second thread, returning the hash.
#[cfg(target_os = "linux")]
fn splice_and_hash(
    sock: &mut std::net::TcpStream,
    leftover: &[u8],
    land: &Landing,
    written: &AtomicU64,
    stop: &AtomicBool,
) -> Result<[u8; 32], FetchError> {
    let (file, part, offset, size) = (&land.file, land.part.as_path(), land.offset, land.size);
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::FileExt;
    let disk = |e| FetchError::Disk(part.to_path_buf(), e);
    // How far the hasher may lag behind, in `HASH_STEP`s: small enough that what it
    // reads back is still in cache.
    const HASH_STEP: u64 = 1 << 20;
    let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(8);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || -> io::Result<([u8; 32], u64)> {
            // Hash straight from the page cache through a sliding read-only mapping:
            // no copy, and the pages were just written so they are still cached. Only
            // bytes below `upto` (already written) are touched, so the mapping never
            // faults beyond the end of the file; the partial is flock'ed, so no other
            // fileapp truncates it under us.
            const WINDOW: u64 = 16 << 20;
            let mut h = blake3::Hasher::new();
            let mut hashed = 0u64;
            let mut map: Option<(u64, *mut libc::c_void)> = None;
            let unmap = |m: &mut Option<(u64, *mut libc::c_void)>| {
                if let Some((_, ptr)) = m.take() {
                    // SAFETY: `ptr` came from mmap with length WINDOW.
                    unsafe { libc::munmap(ptr, WINDOW as usize) };
                }
            };
            let mut result = Ok(());
            'recv: while let Ok(upto) = rx.recv() {
                while hashed < upto {
                    let base = hashed - hashed % WINDOW;
                    if map.map(|(b, _)| b) != Some(base) {
                        unmap(&mut map);
                        // SAFETY: read-only shared mapping of a file we hold open.
                        let ptr = unsafe {
                            libc::mmap(
                                std::ptr::null_mut(),
                                WINDOW as usize,
                                libc::PROT_READ,
                                libc::MAP_SHARED,
                                file.as_raw_fd(),
                                base as libc::off_t,
                            )
                        };
                        if ptr == libc::MAP_FAILED {
                            result = Err(io::Error::last_os_error());
                            break 'recv;
                        }
                        map = Some((base, ptr));
                    }
                    let end = upto.min(base + WINDOW);
                    let ptr = map.map(|(_, p)| p).unwrap_or(std::ptr::null_mut());
                    // SAFETY: [hashed, end) lies inside the window and below the bytes
                    // already written to the file, so every page is backed.
                    let bytes = unsafe {
                        std::slice::from_raw_parts(
                            (ptr as *const u8).add((hashed - base) as usize),
                            (end - hashed) as usize,
                        )
                    };
                    h.update(bytes);
                    hashed = end;
                }
            }
            unmap(&mut map);
            result.map(|()| (*h.finalize().as_bytes(), hashed))
        });
        let copied = (|| -> Result<(), FetchError> {
            let mut pos = offset;
            let _ = tx.send(pos); // the existing prefix
            if !leftover.is_empty() {
                file.write_all_at(leftover, pos).map_err(disk)?;
                pos += leftover.len() as u64;
                written.store(pos, Ordering::Relaxed);
            }
            let mut fds = [0; 2];
            // SAFETY: `fds` is a valid array of two ints.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(FetchError::Io(io::Error::last_os_error()));
            }
            // SAFETY: pipe2 just returned these two descriptors; we own them.
            let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // A 1 MiB pipe halves the syscalls; the default 64 KiB still works if refused.
            // SAFETY: plain fcntl on a descriptor we own.
            let pipe_cap = match unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) }
            {
                n if n > 0 => n as usize,
                _ => 64 * 1024,
            };
            let mut sent = pos;
            let mut reserve = Reserve::new(file, pos, size);
            while pos < size {
                reserve.ahead(file, pos).map_err(disk)?;
                let want = (size - pos).min(pipe_cap as u64) as usize;
                // SAFETY: valid descriptors, null offsets (sockets and pipes have none).
                let n = unsafe {
                    libc::splice(
                        sock.as_raw_fd(),
                        std::ptr::null_mut(),
                        wr.as_raw_fd(),
                        std::ptr::null_mut(),
                        want,
                        libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
                    )
                };
                if n == 0 {
                    if stop.load(Ordering::SeqCst) {
                        return Err(FetchError::Cancelled);
                    }
                    return Err(FetchError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the owner closed the connection after {pos} of {size} bytes"),
                    )));
                }
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if stop.load(Ordering::SeqCst) {
                        return Err(FetchError::Cancelled);
                    }
                    return Err(match e.kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                            FetchError::Timeout("waiting for data from the owner")
                        }
                        _ => FetchError::Io(e),
                    });
                }
                let mut left = n as usize;
                while left > 0 {
                    let mut off = pos as libc::loff_t;
                    // SAFETY: valid descriptors; `off` is ours, the kernel advances it.
                    let m = unsafe {
                        libc::splice(
                            rd.as_raw_fd(),
                            std::ptr::null_mut(),
                            file.as_raw_fd(),
                            &mut off,
                            left,
                            libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
                        )
                    };
                    if m <= 0 {
                        let e = io::Error::last_os_error();
                        if m < 0 && e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        let e = if m == 0 {
                            io::Error::from(io::ErrorKind::WriteZero)
                        } else {
                            e
                        };
                        return Err(disk(e));
                    }
                    left -= m as usize;
                    pos += m as u64;
                }
                written.store(pos, Ordering::Relaxed);
                if pos - sent >= HASH_STEP || pos == size {
                    let _ = tx.send(pos);
                    sent = pos;
                }
            }
            let _ = tx.send(pos);
            Ok(())
        })();
        drop(tx);
        let hashed = hasher
            .join()
            .map_err(|_| FetchError::Io(io::Error::other("hash thread panicked")))?;
        copied?;
        let (hash, n) = hashed.map_err(disk)?;
        if n != size {
            return Err(FetchError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("received {n} of {size} bytes"),
            )));
        }
        file.sync_all().map_err(disk)?;
        Ok(hash)
    })
}

#[cfg(test)]
mod space_tests {
    use super::*;

    #[test]
    fn a_download_larger_than_the_free_space_fails_at_once() {
        let f = tempfile::tempfile().unwrap();
        let e = check_space(&f, 0, u64::MAX / 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("not enough free space"), "{e}");
        check_space(&f, 0, 4096).unwrap();
        // Only what is still missing counts.
        check_space(&f, u64::MAX / 2 - 10, u64::MAX / 2).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn space_is_reserved_ahead_of_the_writer_without_changing_the_length() {
        use std::os::unix::fs::MetadataExt;
        // The project folder, not the temp folder: that is often tmpfs, where nothing is
        // reserved.
        let f = tempfile::tempfile_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let size = 3 * Reserve::STEP;
        let mut r = Reserve::new(&f, 0, size);
        r.ahead(&f, 0).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!(m.len(), 0, "the length must stay what was written");
        if !r.enabled {
            eprintln!("note: this file system cannot reserve space; reservation not checked");
        }
        if r.enabled {
            assert!(
                m.blocks() * 512 >= 2 * Reserve::STEP,
                "{} blocks",
                m.blocks()
            );
            assert_eq!(r.reserved, 2 * Reserve::STEP);
            r.ahead(&f, Reserve::STEP / 2).unwrap(); // still a step ahead: nothing to do
            assert_eq!(r.reserved, 2 * Reserve::STEP);
            r.ahead(&f, 2 * Reserve::STEP).unwrap();
            assert_eq!(r.reserved, size, "never beyond the file's size");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn nothing_is_reserved_on_tmpfs() {
        let shm = Path::new("/dev/shm");
        let Ok(f) = tempfile::tempfile_in(shm) else {
            eprintln!("note: no /dev/shm here; tmpfs case not run");
            return;
        };
        // Ask the mount table, not the call under test, what /dev/shm is.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let tmpfs = mounts.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"/dev/shm") && f.get(2) == Some(&"tmpfs")
        });
        assert_eq!(in_memory(&f), tmpfs);
        if in_memory(&f) {
            let mut r = Reserve::new(&f, 0, 3 * Reserve::STEP);
            assert!(!r.enabled);
            r.ahead(&f, 0).unwrap();
            assert_eq!(f.metadata().unwrap().len(), 0);
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                f.metadata().unwrap().blocks(),
                0,
                "space was reserved on tmpfs"
            );
        }
    }
}
