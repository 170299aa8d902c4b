//! Provider side: the offered library (shared folder, offered names, hash cache) and the
//! `serve` accept loop.
//!
//! Safety rules, enforced at offer time *and again at every open*, because the folder can
//! change under us between the two:
//! - only names in the offered set are served, and only names that pass
//!   [`crate::proto::valid_file_name`] (no `/`, `\`, `.`, `..`, control characters);
//! - the opened file must be a regular file whose canonical path lies directly inside the
//!   canonical shared folder, and the file we hold open must be the very inode that
//!   canonical path names (so a symlink swapped in between the checks is caught);
//! - the hash sent is always the hash of the file as it is now: the cache is keyed by
//!   (size, mtime, device, inode), and a mismatch means re-hashing before answering.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout;

use super::header::{MAX_REQUEST_LEN, Request, Response, Status};
use super::secure::{MODE_BUSY, MODE_PLAIN, MODE_TLS, PeerAuth, Security, ed25519_key_of};
use super::tls::{self, TlsStream};
use super::{Notice, human_rate, printable, read_header};
use crate::identity::{PublicKey, fingerprint};
use crate::proto::valid_file_name;

/// Why a file cannot be offered (or served).
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("{0} is not a plain file name")]
    BadName(String),
    #[error("{0} is not a regular file in the shared folder")]
    NotAFile(String),
    #[error("{0} does not exist in the shared folder")]
    NotFound(String),
    #[error("no shared folder is set")]
    NoFolder,
    #[error("{0} kept changing while it was being hashed")]
    Unstable(String),
    #[error("cannot read {0}: {1}")]
    Io(String, io::Error),
}

/// Identity and version of a file as seen by `fstat`. If any of these change, the cached
/// hash is no longer trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    dev: u64,
    ino: u64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// How long a request from a name not (yet) in our table waits for the table update.
const UNKNOWN_PEER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Size and hash of an offered file (as of its last hashing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    pub size: u64,
    pub hash: [u8; 32],
}

/// A file checked and hashed without holding the library lock; see
/// [`Library::prepare_offer`].
#[derive(Debug, Clone)]
pub struct PreparedOffer {
    name: String,
    stamp: Stamp,
    hash: [u8; 32],
}

impl PreparedOffer {
    pub fn info(&self) -> FileInfo {
        FileInfo {
            size: self.stamp.size,
            hash: self.hash,
        }
    }
}

/// The shared folder, the offered names, and their cached hashes.
#[derive(Debug, Default)]
pub struct Library {
    dir: Option<PathBuf>,
    offered: BTreeSet<String>,
    hashes: HashMap<String, (Stamp, [u8; 32])>,
}

pub type SharedLibrary = Arc<RwLock<Library>>;

impl Library {
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Sets the shared folder (canonicalized when possible). Offered names are kept and
    /// now refer to files in the new folder; cached hashes are dropped.
    pub fn set_dir(&mut self, dir: PathBuf) {
        self.dir = Some(std::fs::canonicalize(&dir).unwrap_or(dir));
        self.hashes.clear();
    }

    pub fn offered(&self) -> &BTreeSet<String> {
        &self.offered
    }

    /// Size and hash of an offered file as of its last hashing (`None` if not offered).
    /// The provider re-hashes before serving a file that changed, so this can lag behind
    /// the disk until then.
    pub fn file_info(&self, name: &str) -> Option<FileInfo> {
        if !self.offered.contains(name) {
            return None;
        }
        self.hashes.get(name).map(|(s, h)| FileInfo {
            size: s.size,
            hash: *h,
        })
    }

    /// Checks that `name` is a plain name of a regular file in the folder, hashes it
    /// (blocking; call from a blocking context) and adds it to the offered set.
    /// Holds `&mut self` while hashing; with a shared library prefer
    /// [`Library::prepare_offer`] + [`Library::add_offer`] so serving is not blocked.
    pub fn offer(&mut self, name: &str) -> Result<FileInfo, OfferError> {
        let dir = self.dir.clone().ok_or(OfferError::NoFolder)?;
        let prepared = Library::prepare_offer(&dir, name)?;
        let info = prepared.info();
        self.add_offer(prepared);
        Ok(info)
    }

    /// The checking and hashing half of [`Library::offer`], with no library borrowed.
    /// Blocking.
    pub fn prepare_offer(dir: &Path, name: &str) -> Result<PreparedOffer, OfferError> {
        let (file, path, _) = open_in_dir(dir, name)?;
        let (stamp, hash) = hash_open_file(&file, &path, name)?;
        Ok(PreparedOffer {
            name: name.to_string(),
            stamp,
            hash,
        })
    }

    /// Adds a file checked by [`Library::prepare_offer`].
    pub fn add_offer(&mut self, p: PreparedOffer) {
        self.offered.insert(p.name.clone());
        self.hashes.insert(p.name, (p.stamp, p.hash));
    }

    /// Stops offering `name`. Returns whether it was offered.
    pub fn unoffer(&mut self, name: &str) -> bool {
        self.hashes.remove(name);
        self.offered.remove(name)
    }
}

/// Opens `name` inside `dir` under the rules in the module comment. Returns the open file,
/// its canonical path and its stamp. Blocking.
fn open_in_dir(dir: &Path, name: &str) -> Result<(File, PathBuf, Stamp), OfferError> {
    if !valid_file_name(name) {
        return Err(OfferError::BadName(name.to_string()));
    }
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => OfferError::NotFound(name.to_string()),
        _ => OfferError::Io(name.to_string(), e),
    };
    let dir =
        std::fs::canonicalize(dir).map_err(|e| OfferError::Io(dir.display().to_string(), e))?;
    // O_NONBLOCK: opening a FIFO someone dropped into the folder must not hang us; it has
    // no effect on regular files, which are all we go on to accept.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(dir.join(name))
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(OfferError::NotAFile(name.to_string()));
    }
    // Symlinks are allowed only if they resolve to a file directly inside the folder.
    let real = std::fs::canonicalize(dir.join(name)).map_err(io_err)?;
    if real.parent() != Some(dir.as_path()) {
        return Err(OfferError::NotAFile(name.to_string()));
    }
    // The inode we hold must be the one the checked path names; otherwise the entry was
    // swapped (e.g. for a symlink to elsewhere) between open and check.
    let real_meta = std::fs::metadata(&real).map_err(io_err)?;
    if (real_meta.dev(), real_meta.ino()) != (meta.dev(), meta.ino()) {
        return Err(OfferError::NotAFile(name.to_string()));
    }
    Ok((file, real, Stamp::of(&meta)))
}

/// Hashes an open file (through its checked path, on all cores), making sure the file did not change while being hashed and is still the same
/// inode. Retries a few times if it is being written to. Blocking.
fn hash_open_file(file: &File, path: &Path, name: &str) -> Result<(Stamp, [u8; 32]), OfferError> {
    let io_err = |e: io::Error| OfferError::Io(name.to_string(), e);
    for _ in 0..3 {
        let before = Stamp::of(&file.metadata().map_err(io_err)?);
        let hash = super::hash_file(path).map_err(io_err)?;
        let after = Stamp::of(&file.metadata().map_err(io_err)?);
        let path_meta = std::fs::metadata(path).map_err(io_err)?;
        let same_inode = (path_meta.dev(), path_meta.ino()) == (after.dev, after.ino);
        if before == after && same_inode {
            return Ok((after, hash));
        }
        if !same_inode {
            return Err(OfferError::NotAFile(name.to_string()));
        }
    }
    Err(OfferError::Unstable(name.to_string()))
}

/// Tunables of [`serve_with`]. `Default` suits production; tests shorten the timeouts.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How long a connection may take to deliver its request header.
    pub header_timeout: Duration,
    /// How long sending may make no progress before the transfer is abandoned.
    pub stall_timeout: Duration,
    /// Connections handled at once; more are answered `Busy`.
    pub max_connections: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
            max_connections: 64,
        }
    }
}

/// A byte stream to a requester. Plain TCP sends file data with zero-copy `sendfile`;
/// TLS seals the file in place on a blocking thread ([`TlsStream::send_file`]); any other stream
/// can use [`copy_file_buffered`]. The protocol logic is the same for all.
pub trait PeerStream: tokio::io::AsyncRead + AsyncWrite + Unpin + Send {
    /// Writes `len` bytes of `file` starting at `offset`, failing if no progress is made
    /// for `stall`. With `hash` (only on an [`PeerStream::authenticated`] stream) it
    /// returns the BLAKE3 hash of the bytes as they were read and sent.
    fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        stall: Duration,
        hash: bool,
    ) -> impl Future<Output = io::Result<Option<[u8; 32]>>> + Send;

    /// Whether every byte is authenticated on the way (TLS), so that the requester may
    /// rely on a hash the owner computed while sending ([`Request::owner_hashes`]).
    fn authenticated(&self) -> bool {
        false
    }
}

/// Plain streams cannot vouch for what they carry (checked before any byte is sent).
fn no_owner_hash(hash: bool) -> io::Result<()> {
    if hash {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "owner hashing needs an encrypted connection",
        ));
    }
    Ok(())
}

impl PeerStream for TcpStream {
    async fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        stall: Duration,
        hash: bool,
    ) -> io::Result<Option<[u8; 32]>> {
        no_owner_hash(hash)?;
        #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
        sendfile_all(self, file, offset, len, stall).await?;
        #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
        copy_file_buffered(self, file, offset, len, stall).await?;
        Ok(None)
    }
}

impl PeerStream for TlsStream {
    async fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        stall: Duration,
        hash: bool,
    ) -> io::Result<Option<[u8; 32]>> {
        TlsStream::send_file(self, file, offset, len, stall, hash).await
    }

    fn authenticated(&self) -> bool {
        true
    }
}

/// Zero-copy send on a non-blocking socket: `sendfile` moves as much as the socket buffer
/// takes, and tokio tells us when there is room again, so no thread is parked per
/// transfer. (A cold-cache disk read inside `sendfile` does block the worker briefly;
/// the same trade-off every sendfile server makes.)
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
async fn sendfile_all(
    sock: &TcpStream,
    file: &File,
    offset: u64,
    len: u64,
    stall: Duration,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;
    let (out_fd, in_fd) = (sock.as_raw_fd(), file.as_raw_fd());
    let end = offset
        .checked_add(len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range overflows"))?;
    let mut pos = offset;
    while pos < end {
        // Linux caps one call at 0x7fff_f000 bytes anyway.
        let chunk = (end - pos).min(1 << 30) as usize;
        let step = async {
            loop {
                sock.writable().await?;
                let r = sock.try_io(Interest::WRITABLE, || {
                    let mut off = pos as libc::off_t;
                    // SAFETY: both descriptors are open for the duration of the call and
                    // `off` is a valid, exclusively borrowed off_t.
                    let n = unsafe { libc::sendfile(out_fd, in_fd, &mut off, chunk) };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                });
                match r {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        let n = timeout(stall, step)
            .await
            .map_err(super::stopped_reading)??;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            ));
        }
        pos += n as u64;
    }
    Ok(())
}

/// Portable fallback: large-buffer copy through user space.
pub async fn copy_file_buffered<S: AsyncWrite + Unpin + Send>(
    sock: &mut S,
    file: &File,
    offset: u64,
    len: u64,
    stall: Duration,
) -> io::Result<()> {
    let mut f = tokio::fs::File::from_std(file.try_clone()?);
    f.seek(io::SeekFrom::Start(offset)).await?;
    let mut f = f.take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = timeout(stall, f.read(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "disk read stalled"))??;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            ));
        }
        timeout(stall, sock.write_all(&buf[..n]))
            .await
            .map_err(super::stopped_reading)??;
        left -= n as u64;
    }
    sock.flush().await
}

/// Serves requests on `listener` until `accepting` becomes false (or its sender is
/// dropped). Transfers already running are left to finish.
///
/// `auth` says whether connections are TLS (and how requesters' keys are checked) or
/// plaintext; a requester asking for the other mode is refused (see `docs/PROTOCOL.md §2`).
pub async fn serve(
    listener: TcpListener,
    lib: SharedLibrary,
    notices: mpsc::UnboundedSender<Notice>,
    accepting: watch::Receiver<bool>,
    auth: PeerAuth,
) {
    serve_with(
        listener,
        lib,
        notices,
        accepting,
        auth,
        ServeConfig::default(),
    )
    .await
}

/// [`serve`] with explicit tunables.
pub async fn serve_with(
    listener: TcpListener,
    lib: SharedLibrary,
    notices: mpsc::UnboundedSender<Notice>,
    mut accepting: watch::Receiver<bool>,
    auth: PeerAuth,
    cfg: ServeConfig,
) {
    let cfg = Arc::new(cfg);
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            _ = accepting.wait_for(|a| !*a) => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Typically EMFILE or a connection reset before accept; neither is a reason
                // to stop serving. Back off briefly so a full fd table cannot spin us.
                let _ = notices.send(format!("< Could not accept a connection: {e} >"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = notices.send(format!(
            "< Accepting connection request from {}. >",
            peer.ip()
        ));
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let (lib, notices, cfg) = (lib.clone(), notices.clone(), cfg.clone());
                let auth = auth.clone();
                tokio::spawn(async move {
                    let conn = Conn {
                        peer,
                        lib,
                        notices,
                        cfg,
                        auth,
                    };
                    conn.handle(stream).await;
                    drop(permit);
                });
            }
            Err(_) => {
                let _ = notices.send(format!(
                    "< Refused connection from {}: too many transfers in progress >",
                    peer.ip()
                ));
                tokio::spawn(async move {
                    // Before any handshake: being busy must stay cheap.
                    let mut stream = stream;
                    let _ = timeout(Duration::from_secs(2), stream.write_all(&[MODE_BUSY])).await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}

/// One accepted connection.
struct Conn {
    peer: SocketAddr,
    lib: SharedLibrary,
    notices: mpsc::UnboundedSender<Notice>,
    cfg: Arc<ServeConfig>,
    auth: PeerAuth,
}

/// What went wrong with a request, for the refusal sent and the notice shown.
struct Refusal {
    status: Status,
    /// Sent to the requester.
    message: String,
    /// Shown to our user after "Refused request for 'x' from C: ".
    reason: String,
}

impl Conn {
    fn notice(&self, s: String) {
        let _ = self.notices.send(s);
    }

    fn ip(&self) -> IpAddr {
        self.peer.ip()
    }

    /// The peer said nothing (mode byte or request) within the header timeout.
    fn notice_no_request(&self) {
        self.notice(format!(
            "< Connection from {} closed: no request within {} s >",
            self.ip(),
            self.cfg.header_timeout.as_secs_f64()
        ));
    }

    /// Mode exchange, then (TLS) the handshake, then the request.
    async fn handle(&self, mut tcp: TcpStream) {
        let mine = self.auth.security.mode_byte();
        // Ours goes first, unasked: a requester in the other mode learns why at once.
        let hello = timeout(self.cfg.header_timeout, async {
            tcp.write_all(&[mine]).await?;
            let mut b = [0u8; 1];
            tcp.read_exact(&mut b).await?;
            Ok::<u8, io::Error>(b[0])
        })
        .await;
        let theirs = match hello {
            Err(_) => {
                return self.notice_no_request();
            }
            Ok(Err(e)) => {
                self.notice(format!(
                    "< Connection from {} closed before a request: {} >",
                    self.ip(),
                    describe_io(&e)
                ));
                return;
            }
            Ok(Ok(b)) => b,
        };
        let refused = match (theirs, &self.auth.security) {
            (MODE_PLAIN, Security::Plaintext) => return self.handle_stream(tcp, None).await,
            (MODE_TLS, Security::Tls(id)) => {
                let tls = match timeout(
                    self.cfg.header_timeout,
                    tls::accept(tcp, id.server_config()),
                )
                .await
                {
                    Err(_) => {
                        self.notice(format!(
                            "< Encrypted connection from {} failed: TLS handshake timed out >",
                            self.ip()
                        ));
                        return;
                    }
                    Ok(Err(e)) => {
                        self.notice(format!(
                            "< Encrypted connection from {} failed: {} >",
                            self.ip(),
                            describe_tls(&e)
                        ));
                        return;
                    }
                    Ok(Ok(t)) => t,
                };
                let key = tls.peer_certificate().and_then(ed25519_key_of);
                match key {
                    Some(k) => return self.handle_stream(tls, Some(k)).await,
                    None => {
                        // The verifier already insisted on one; kept as a guard.
                        self.notice(format!(
                            "< Encrypted connection from {} failed: no Ed25519 certificate >",
                            self.ip()
                        ));
                        return;
                    }
                }
            }
            (MODE_PLAIN, Security::Tls(_)) => format!(
                "< Refused plaintext request from {}: this client only accepts encrypted transfers >",
                self.ip()
            ),
            (MODE_TLS, Security::Plaintext) => format!(
                "< Refused encrypted request from {}: this client runs in plaintext mode (--plaintext) >",
                self.ip()
            ),
            (b, _) => format!(
                "< Refused connection from {}: not a fileapp transfer request (first byte 0x{b:02x}) >",
                self.ip()
            ),
        };
        self.notice(refused);
        let _ = timeout(Duration::from_secs(2), tcp.shutdown()).await;
    }

    /// Reads the request and serves it. `presented` is the requester's certificate key
    /// on a TLS connection (checked against its claimed name before anything else).
    async fn handle_stream<S: PeerStream>(&self, mut stream: S, presented: Option<PublicKey>) {
        let read = timeout(
            self.cfg.header_timeout,
            read_header(&mut stream, MAX_REQUEST_LEN, Request::decode),
        )
        .await;
        let req = match read {
            Err(_) => {
                return self.notice_no_request();
            }
            Ok(Err(e)) => {
                self.notice(format!("< Bad request from {}: {e} >", self.ip()));
                if let super::ReadHeaderError::Header(e) = e {
                    self.send_refusal(&mut stream, Status::Error, &format!("bad request: {e}"))
                        .await;
                }
                return;
            }
            Ok(Ok((req, _))) => req,
        };
        let who = if req.requester.is_empty() {
            self.ip().to_string()
        } else {
            printable(&req.requester)
        };
        let checked = match presented {
            Some(k) => Some(self.check_key(&req.requester, k).await),
            None => None,
        };
        match checked {
            Some(Err(r)) => {
                self.notice(format!(
                    "< Refused request for '{}' from {who}: {} >",
                    printable(&req.file),
                    r.reason
                ));
                self.send_refusal(&mut stream, r.status, &r.message).await;
            }
            _ => self.serve_request(&mut stream, &req, &who).await,
        }
        let _ = stream.shutdown().await;
        self.notice(format!("< Connection with client {who} closed >"));
    }

    /// Is `presented` the key `name` is bound to in our table? A requester that has just
    /// registered may reach us before the table update that names it: wait for it a
    /// little before refusing.
    async fn check_key(&self, name: &str, presented: PublicKey) -> Result<(), Refusal> {
        let shown = printable(name);
        let deadline = tokio::time::Instant::now() + UNKNOWN_PEER_WAIT;
        let mut known = (self.auth.keys)(name);
        while known.is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            known = (self.auth.keys)(name);
        }
        match known {
            Some(k) if k == presented => Ok(()),
            Some(k) => Err(Refusal {
                status: Status::Error,
                message: format!(
                    "your key ({}) is not the key {shown} is registered with",
                    fingerprint(&presented)
                ),
                reason: format!(
                    "it presented key {}, but {shown} is registered with key {}",
                    fingerprint(&presented),
                    fingerprint(&k)
                ),
            }),
            None => Err(Refusal {
                status: Status::Error,
                message: format!(
                    "'{shown}' is not in the owner's table, so its key cannot be checked (try again shortly)"
                ),
                reason: format!(
                    "'{shown}' is not in this client's table, so its key {} cannot be checked",
                    fingerprint(&presented)
                ),
            }),
        }
    }

    async fn send_refusal<S: PeerStream>(&self, stream: &mut S, status: Status, message: &str) {
        if let Ok(bytes) = Response::refuse(status, message).encode() {
            let _ = timeout(self.cfg.stall_timeout, stream.write_all(&bytes)).await;
        }
    }

    async fn serve_request<S: PeerStream>(&self, stream: &mut S, req: &Request, who: &str) {
        let shown = printable(&req.file);
        if req.owner_hashes && !stream.authenticated() {
            let message = "owner hashing needs an encrypted connection";
            self.notice(format!(
                "< Refused request for '{shown}' from {who}: {message} >"
            ));
            self.send_refusal(stream, Status::Error, message).await;
            return;
        }
        let (file, stamp, hash) = match self.open_checked(&req.file).await {
            Ok(x) => x,
            Err(r) => {
                self.notice(format!(
                    "< Refused request for '{shown}' from {who}: {} >",
                    r.reason
                ));
                self.send_refusal(stream, r.status, &r.message).await;
                return;
            }
        };
        let size = stamp.size;
        let matches = req.expected_hash == Some(hash);
        if req.if_match && !matches {
            self.notice(format!(
                "< Request for '{shown}' from {who}: their copy differs, nothing sent >"
            ));
            let resp = Response {
                status: Status::Changed,
                message: "the file differs from the expected version".into(),
                size,
                hash,
                start: 0,
            };
            if let Ok(bytes) = resp.encode() {
                let _ = timeout(self.cfg.stall_timeout, stream.write_all(&bytes)).await;
            }
            return;
        }
        // Resume only from a prefix of *this* version of the file.
        let start = if matches && req.offset <= size {
            req.offset
        } else {
            0
        };
        let resp = Response {
            status: Status::Ok,
            message: String::new(),
            size,
            hash,
            start,
        };
        let Ok(head) = resp.encode() else { return };
        self.notice(format!("< Transferring {shown}... >"));
        let t0 = Instant::now();
        let result = async {
            timeout(self.cfg.stall_timeout, stream.write_all(&head))
                .await
                .map_err(super::stopped_reading)??;
            let sent = stream
                .send_file(
                    &file,
                    start,
                    size - start,
                    self.cfg.stall_timeout,
                    req.owner_hashes,
                )
                .await?;
            if let Some(sent) = sent {
                // The requester compares this with `hash`, as if it had hashed itself.
                timeout(self.cfg.stall_timeout, stream.write_all(&sent))
                    .await
                    .map_err(super::stopped_reading)??;
            }
            timeout(self.cfg.stall_timeout, stream.flush())
                .await
                .map_err(super::stopped_reading)??;
            match sent {
                Some(sent) if sent != hash => {
                    Err(io::Error::other("the file changed while it was being sent"))
                }
                _ => Ok(()),
            }
        }
        .await;
        match result {
            Ok(()) => {
                let elapsed = t0.elapsed();
                let sent = size - start;
                self.notice(format!("< {shown} transferred successfully! >"));
                let from = if start > 0 {
                    format!(", resumed at byte {start}")
                } else {
                    String::new()
                };
                self.notice(format!(
                    "< {shown}: {sent} bytes in {:.3} s ({}){from} >",
                    elapsed.as_secs_f64(),
                    human_rate(sent, elapsed)
                ));
            }
            Err(e) => {
                self.notice(format!(
                    "< Transfer of {shown} to {who} failed: {} >",
                    describe_io(&e)
                ));
            }
        }
    }

    /// Looks the name up, opens it safely and makes sure the hash is current.
    async fn open_checked(&self, name: &str) -> Result<(File, Stamp, [u8; 32]), Refusal> {
        let not_offered = || Refusal {
            status: Status::NotOffered,
            message: format!("'{}' is not offered", printable(name)),
            reason: "not offered".into(),
        };
        if !valid_file_name(name) {
            return Err(not_offered());
        }
        let (dir, cached) = {
            let lib = self.lib.read().unwrap_or_else(|p| p.into_inner());
            if !lib.offered.contains(name) {
                return Err(not_offered());
            }
            let Some(dir) = lib.dir.clone() else {
                return Err(not_offered());
            };
            (dir, lib.hashes.get(name).copied())
        };
        let owned = name.to_string();
        let job = tokio::task::spawn_blocking(move || {
            let (file, path, stamp) = open_in_dir(&dir, &owned)?;
            match cached {
                Some((s, h)) if s == stamp => Ok((file, stamp, h, false)),
                _ => {
                    let (stamp, hash) = hash_open_file(&file, &path, &owned)?;
                    Ok((file, stamp, hash, true))
                }
            }
        });
        let (file, stamp, hash, rehashed) = match job.await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(refusal_for(name, e)),
            Err(_) => {
                return Err(Refusal {
                    status: Status::Error,
                    message: "internal error".into(),
                    reason: "internal error while opening the file".into(),
                });
            }
        };
        if rehashed {
            let mut lib = self.lib.write().unwrap_or_else(|p| p.into_inner());
            // Only if still offered: an unoffer racing with us must win.
            if lib.offered.contains(name) {
                lib.hashes.insert(name.to_string(), (stamp, hash));
            }
            drop(lib);
            if cached.is_some() {
                self.notice(format!(
                    "< {} changed since it was offered; re-hashed >",
                    printable(name)
                ));
            }
        }
        Ok((file, stamp, hash))
    }
}

fn refusal_for(name: &str, e: OfferError) -> Refusal {
    let shown = printable(name);
    let (status, message, reason) = match e {
        OfferError::NotFound(_) => (
            Status::Error,
            format!("'{shown}' is no longer available"),
            "the file no longer exists".to_string(),
        ),
        OfferError::NotAFile(_) | OfferError::BadName(_) => (
            Status::NotOffered,
            format!("'{shown}' is not offered"),
            "not a regular file inside the shared folder".to_string(),
        ),
        OfferError::Unstable(_) => (
            Status::Busy,
            format!("'{shown}' is being modified, try later"),
            "the file keeps changing".to_string(),
        ),
        OfferError::NoFolder => (
            Status::NotOffered,
            format!("'{shown}' is not offered"),
            "no shared folder".to_string(),
        ),
        OfferError::Io(_, e) => (
            Status::Error,
            format!("'{shown}' cannot be read"),
            format!("cannot read it: {e}"),
        ),
    };
    Refusal {
        status,
        message,
        reason,
    }
}

/// A failed TLS handshake, for a notice: rustls' own error when there is one.
pub(crate) fn describe_tls(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(a)) => {
            format!("the requester rejected the TLS handshake ({a:?})")
        }
        Some(r) => format!("TLS handshake: {r}"),
        None => describe_io(e),
    }
}

/// Short human text for the common network failures.
pub(crate) fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::BrokenPipe => "connection closed by the requester".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        _ => e.to_string(),
    }
}
