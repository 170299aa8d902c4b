//! Serving: the accept loop ([`serve`], [`serve_with`]; [`serve_stream`] for one stream
//! from elsewhere) and, per accepted connection,
//! the mode exchange, the TLS handshake, the request header and the requester's key.
//! What a request gets in answer is in `request`; why one is refused in `refuse`;
//! how the file bytes go out in `send`.

// System calls go through `crate::sys`, the one place allowed `unsafe`.
#![forbid(unsafe_code)]

mod listing;
mod refuse;
mod request;
mod send;
mod tree;

use crate::client::messages as msg;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout;

pub(crate) use refuse::{describe_io, describe_tls};
pub use send::{PeerStream, copy_file_buffered};

use super::header::{MAX_REQUEST_LEN, Request};
use super::library::SharedLibrary;
use super::link::Link;
use super::secure::{
    MODE_BUSY, MODE_PLAIN, MODE_PROBE, MODE_QUIC, MODE_REVERSE, MODE_TLS, PeerAuth, Security,
    ed25519_key_of,
};
use super::tls;
use super::{Notice, ReadHeaderError, printable, read_header};
use crate::identity::PublicKey;

/// Tunables of [`serve_with`]. `Default` suits production; tests shorten the timeouts.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How long a connection may take to deliver its request header.
    pub header_timeout: Duration,
    /// How long sending may make no progress before the transfer is abandoned.
    pub stall_timeout: Duration,
    /// Connections handled at once; more are answered `Busy`.
    pub max_connections: usize,
    /// Connections handled at once from one source IP address; more from it are
    /// answered `Busy` (before any TLS), so one host cannot take every slot.
    pub max_per_ip: usize,
    /// Our downloads waiting for reverse connections: an opening of
    /// [`MODE_REVERSE`] is handed to them instead of served.
    pub meetings: Option<crate::reach::meet::Meetings>,
}

/// How long a new connection's first byte is awaited before we speak: a requester
/// sends its mode byte at once; an owner's reverse connection or the index server's
/// reachability test open with theirs.
const OPENING_WAIT: Duration = Duration::from_millis(300);

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
            max_connections: 64,
            max_per_ip: 8,
            meetings: None,
        }
    }
}

/// Connections in progress per source address, for [`ServeConfig::max_per_ip`].
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its address; uncounted when dropped.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A slot for `ip`, unless it already has `limit` connections in progress.
    fn take(table: &Arc<PerIp>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        // An IPv4 client reaching a dual-stack socket counts as its IPv4 address.
        let ip = ip.to_canonical();
        let mut t = table.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= limit.max(1) {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
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
    let per_ip = Arc::new(PerIp::default());
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
                let _ = notices.send(msg::accept_failed(e));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(ip_slot) = PerIp::take(&per_ip, peer.ip(), cfg.max_per_ip) else {
            let _ = notices.send(msg::too_many_from(peer.ip()));
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let conn = Conn {
                    peer,
                    lib: lib.clone(),
                    notices: notices.clone(),
                    cfg: cfg.clone(),
                    auth: auth.clone(),
                };
                tokio::spawn(async move {
                    conn.handle(stream).await;
                    drop(permit);
                    drop(ip_slot);
                });
            }
            Err(_) => {
                let _ = notices.send(msg::too_many_transfers(peer.ip()));
                tokio::spawn(refuse_busy(stream));
            }
        }
    }
}

/// Serves one connection that did not come through our listener: an owner's own
/// connection out to a requester (reverse), to a relay, or over a punched path. It is
/// served as an accepted one; `peer` names the requester's side in notices.
pub async fn serve_stream(
    stream: impl Into<Link>,
    peer: SocketAddr,
    lib: SharedLibrary,
    notices: mpsc::UnboundedSender<Notice>,
    auth: PeerAuth,
    cfg: ServeConfig,
) {
    let stream = stream.into();
    stream.set_nodelay();
    let conn = Conn {
        peer,
        lib,
        notices,
        cfg: Arc::new(cfg),
        auth,
    };
    conn.notice(msg::accepting(peer.ip()));
    conn.converse(stream).await
}

/// Answers `Busy` before any handshake: being busy must stay cheap.
async fn refuse_busy(mut stream: TcpStream) {
    let _ = timeout(Duration::from_secs(2), stream.write_all(&[MODE_BUSY])).await;
    let _ = stream.shutdown().await;
}

/// One accepted connection.
struct Conn {
    peer: SocketAddr,
    lib: SharedLibrary,
    notices: mpsc::UnboundedSender<Notice>,
    cfg: Arc<ServeConfig>,
    auth: PeerAuth,
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
        self.notice(msg::no_request_within(self.ip(), self.cfg.header_timeout));
    }

    /// The opening: the index server's reachability test is closed in silence, an
    /// owner's reverse connection goes to the download waiting for it; anything else
    /// is a requester.
    async fn handle(&self, tcp: TcpStream) {
        let mut first = [0u8; 1];
        if let Ok(Ok(1)) = timeout(OPENING_WAIT, tcp.peek(&mut first)).await {
            match first[0] {
                MODE_PROBE => return,
                MODE_REVERSE => {
                    if let Some(m) = &self.cfg.meetings {
                        crate::reach::meet::accept_reverse(tcp, m, self.cfg.header_timeout).await;
                    }
                    return;
                }
                _ => {}
            }
        }
        self.notice(msg::accepting(self.ip()));
        self.converse(tcp.into()).await
    }

    /// Mode exchange, then (TLS) the handshake, then the request. On a punched QUIC
    /// stream with TLS the mode is `MODE_QUIC`: QUIC's handshake authenticated the
    /// requester's key, which then must be the one its claimed name is bound to, as
    /// after our own TLS handshake.
    async fn converse(&self, mut tcp: Link) {
        let quic = tcp.quic_peer_key();
        let Some(theirs) = self.exchange_modes(&mut tcp, quic.is_some()).await else {
            return;
        };
        let refused = match (theirs, &self.auth.security, quic) {
            (MODE_PLAIN, Security::Plaintext, _) => return self.handle_stream(tcp, None).await,
            (MODE_TLS, Security::Tls(_), None) => return self.handle_tls(tcp).await,
            (MODE_QUIC, Security::Tls(_), Some(k)) => {
                return self.handle_stream(tcp, Some(k)).await;
            }
            // `MODE_QUIC` on TCP would be plaintext: refused like plaintext.
            (MODE_PLAIN, Security::Tls(_), _) | (MODE_QUIC, Security::Tls(_), None) => {
                msg::refused_plaintext(self.ip())
            }
            (MODE_TLS, Security::Tls(_), Some(_)) => {
                msg::wrong_mode_on_punched_path(self.ip(), theirs)
            }
            (MODE_TLS | MODE_QUIC, Security::Plaintext, _) => msg::refused_encrypted(self.ip()),
            (b, _, _) => msg::not_a_transfer(self.ip(), b),
        };
        self.notice(refused);
        let _ = timeout(Duration::from_secs(2), tcp.shutdown()).await;
    }

    /// Sends our mode byte and reads theirs. `None` (with the notice given) if the peer
    /// said nothing in time or closed.
    async fn exchange_modes(&self, tcp: &mut Link, on_quic: bool) -> Option<u8> {
        let mine = match (&self.auth.security, on_quic) {
            (Security::Tls(_), true) => MODE_QUIC,
            (s, _) => s.mode_byte(),
        };
        // Ours goes first, unasked: a requester in the other mode learns why at once.
        let hello = timeout(self.cfg.header_timeout, async {
            tcp.write_all(&[mine]).await?;
            let mut b = [0u8; 1];
            tcp.read_exact(&mut b).await?;
            Ok::<u8, io::Error>(b[0])
        })
        .await;
        match hello {
            Err(_) => {
                self.notice_no_request();
                None
            }
            Ok(Err(e)) => {
                self.notice(msg::closed_before_request(self.ip(), describe_io(&e)));
                None
            }
            Ok(Ok(b)) => Some(b),
        }
    }

    /// The TLS handshake (bounded by the header timeout), then the request. The
    /// handshake itself refuses a key the table does not list.
    async fn handle_tls(&self, tcp: Link) {
        let failed = |why: String| self.notice(msg::encrypted_failed(self.ip(), why));
        // `PeerAuth::tls` always has one.
        let Some(config) = self.auth.server_config() else {
            return failed("no TLS configuration".into());
        };
        let accepted = timeout(self.cfg.header_timeout, tls::accept(tcp, config)).await;
        let tls = match accepted {
            Err(_) => return failed("TLS handshake timed out".into()),
            Ok(Err(e)) => return failed(describe_tls(&e)),
            Ok(Ok(t)) => t,
        };
        match tls.peer_certificate().and_then(ed25519_key_of) {
            Some(k) => self.handle_stream(tls, Some(k)).await,
            // The verifier already insisted on one; kept as a guard.
            None => failed("no Ed25519 certificate".into()),
        }
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
                self.notice(msg::bad_request(self.ip(), &e));
                if let ReadHeaderError::Header(e) = e {
                    let message = format!("bad request: {e}");
                    self.send_refusal(&mut stream, super::header::Status::Error, &message)
                        .await;
                }
                return;
            }
            Ok(Ok(x)) => x,
        };
        let (req, rest) = req;
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
                self.refuse(&mut stream, &printable(&req.file), &who, r)
                    .await
            }
            _ => {
                if !self.serve_tree_request(&mut stream, &req, rest, &who).await {
                    self.serve_request(&mut stream, &req, &who).await
                }
            }
        }
        let _ = stream.shutdown().await;
        self.notice(msg::connection_closed(&who));
    }
}
