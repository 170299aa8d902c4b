//! The client's thin tokio driver: one task that owns the UDP socket, the provider's
//! listener, the console, the timers and the signals, feeds what they bring to the
//! [`Flow`] and carries out the [`Action`]s it returns, in order.
//!
//! Start-up (binding, identity, TLS) is done by the caller (`app.rs`), which hands the
//! ready pieces over in [`Bound`]. All decisions are in [`super::flow`]; all texts in
//! [`super::messages`].

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

use crate::channel::{MAX_DATAGRAM, ServerPin};
use crate::client::link::ClientLink;
use crate::console::{CompletionData, Console, ConsoleOptions, InputEvent, SharedCompletion};
use crate::identity::{Identity, KeyLock, fingerprint};
use crate::known::{KnownKeys, Pin};
use crate::reliable::RetryPolicy;
use crate::transfer::provider::{ServeConfig, SharedLibrary, serve_stream, serve_with};
use crate::transfer::secure::{KeyLookup, PeerAuth, Security};

use super::core::{self as core_sm, ClientCore};
use super::error::ClientError;
use super::flow::{self, Action, Flow, Restore};
use super::messages as msg;
use super::reach::{self, Ask, Hub, Reach};
use super::render;
use super::session::{Journal, Saved};
use super::work::{self, Fetcher, Report};

mod serving;

/// The client's settings, independent of how they were given.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    /// Requests to the server: how often and how many times they are sent again.
    pub retry: RetryPolicy,
    /// Heartbeat interval until the server announces its own.
    pub heartbeat: Duration,
    /// IP address peers should use to reach us (default: what the server sees).
    pub advertise_ip: Option<IpAddr>,
    /// Plain line-by-line console even on a terminal.
    pub plain: bool,
    /// Commands to run before reading input.
    pub exec: Vec<String>,
    /// Leave once `exec` is done.
    pub exit_when_done: bool,
    /// Where downloads are saved (an existing folder).
    pub download_dir: PathBuf,
    /// A download's limit for connecting, the owner's answer and any pause in the data
    /// (`None`: the fetcher's default).
    pub peer_timeout: Option<Duration>,
    /// See [`flow::READ_YOUR_WRITES_WAIT`].
    pub sync_wait: Duration,
    /// The server's address: what its key is pinned under.
    pub server: SocketAddr,
    /// Every server of the deployment, `server` first; more than one: the client moves
    /// to the next when its server stops answering (failover).
    pub servers: Vec<SocketAddr>,
    /// The server key the user named (`--server-key`), overriding any pin.
    pub server_pin: Option<ServerPin>,
}

/// What start-up prepared.
pub struct Bound {
    /// Connected to the server: only its datagrams reach us.
    pub sock: UdpSocket,
    /// Where peers download from.
    pub listener: TcpListener,
    pub identity: Arc<Identity>,
    /// No other process uses this identity (see `core::Config::evict`).
    pub exclusive: bool,
    /// Holds the key file locked for as long as the client runs, which is what tells a
    /// second program of this name that we are here.
    pub key_lock: Option<KeyLock>,
    /// TLS with our identity, or plaintext.
    pub security: Security,
    /// The server keys pinned so far (`known_servers`); `None` when the user has no
    /// config folder (every run is then a first contact, said each time).
    pub known_servers: Option<KnownKeys>,
    /// The peers' keys remembered so far (`known_peers`).
    pub known_peers: Option<KnownKeys>,
}

/// Runs a client until the user leaves (`Ok`) or it cannot go on.
pub async fn run(cfg: Config, bound: Bound) -> Result<(), ClientError> {
    let (driver, channels) = Driver::new(cfg, bound)?;
    driver.main_loop(channels).await
}

struct Driver {
    flow: Flow,
    sock: UdpSocket,
    console: Console,
    completion: SharedCompletion,
    lib: SharedLibrary,
    listener: Option<TcpListener>,
    /// The listener's address, to bind it again after `dereg`.
    tcp_addr: SocketAddr,
    accepting: Option<watch::Sender<bool>>,
    notices_tx: mpsc::UnboundedSender<String>,
    reports_tx: mpsc::UnboundedSender<Report>,
    cancel: watch::Sender<bool>,
    journal: Journal,
    name: String,
    download_dir: PathBuf,
    peer_timeout: Option<Duration>,
    security: Security,
    /// Each online owner's key, from the table; the provider checks requesters with it.
    peer_keys: Arc<RwLock<HashMap<String, [u8; 32]>>>,
    /// Our key file stays locked until the driver ends (see [`Bound::key_lock`]).
    _key_lock: Option<KeyLock>,
    /// The requests' retry policy: how long [`Driver::settle`] may wait.
    retry: RetryPolicy,
    known_servers: Option<KnownKeys>,
    /// Every peer's key as first seen (`known_peers`).
    known_peers: Option<KnownKeys>,
    /// The server we talk to now (the socket is connected to it).
    server: SocketAddr,
    /// Every server of the deployment (empty or one: no failover).
    servers: Vec<SocketAddr>,
    /// What downloads' dialers share, and the meetings they wait for.
    reach: Reach,
    hub: Hub,
    /// Connections out for requesters (reverse, relayed, punched) at once.
    dial_slots: Arc<tokio::sync::Semaphore>,
    /// Folder listings for completion, fetched in the background.
    listings: super::listing::Listings,
}

type Channels = (
    mpsc::UnboundedReceiver<InputEvent>,
    mpsc::UnboundedReceiver<Report>,
    mpsc::UnboundedReceiver<String>,
    mpsc::UnboundedReceiver<Ask>,
    Signals,
);

impl Driver {
    fn new(cfg: Config, b: Bound) -> Result<(Driver, Channels), ClientError> {
        let tcp_addr = b.listener.local_addr().map_err(ClientError::LocalAddr)?;
        let journal = Journal::for_name(&cfg.name);
        let restore = journal
            .load()
            .and_then(|Saved { dir, offers }| Some((dir?, offers)))
            .filter(|(_, offers)| !offers.is_empty())
            .map(|(dir, offers)| Restore { dir, offers });
        let mut core = ClientCore::new(
            core_sm::Config {
                name: cfg.name.clone(),
                tcp_port: tcp_addr.port(),
                retry: cfg.retry,
                heartbeat: cfg.heartbeat,
                advertise: cfg.advertise_ip,
                identity: Some(b.identity.clone()),
                evict: b.exclusive,
            },
            rand::random(),
        );
        // Our records are numbered from the wall clock, so a restarted client's are
        // newer than its last run's (peers keep the highest they saw).
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        core.set_record_seq(micros);
        if cfg.servers.len() > 1 {
            core.set_servers(cfg.servers.clone());
        }
        // The servers of a deployment share one key: a pin under any of their addresses
        // (the first server's first) is the deployment's.
        let pinned = std::iter::once(&cfg.server)
            .chain(&cfg.servers)
            .find_map(|s| b.known_servers.as_ref()?.get(&s.to_string()))
            .map(|k| ServerPin::Key(*k));
        let link = ClientLink::new(
            cfg.server_pin.or(pinned),
            rand::random(),
            cfg.retry.interval,
        );
        let flow = Flow::new(
            core,
            link,
            flow::Config {
                server: cfg.server.to_string(),
                server_pin_given: cfg.server_pin.is_some(),
                key: Some(b.identity.public_key()),
                fingerprint: fingerprint(&b.identity.public_key()),
                download_dir: cfg.download_dir.clone(),
                exec: cfg.exec,
                exit_when_done: cfg.exit_when_done,
                restore,
                sync_wait: cfg.sync_wait,
            },
        );
        let completion = Arc::new(RwLock::new(CompletionData {
            commands: render::command_names(),
            ..CompletionData::default()
        }));
        // The signal handlers go in before the console's first read: the line editor saves
        // the SIGINT handler it finds when it starts reading and puts it back when it
        // stops, so a handler installed in between would be undone, and Ctrl-C during a
        // download would then kill the client instead of cancelling the download.
        let signals = Signals::new();
        let (console, input) = Console::start(ConsoleOptions {
            prompt: msg::PROMPT.to_string(),
            plain: cfg.plain,
            history: None,
            completion: completion.clone(),
        });
        let (notices_tx, notices) = mpsc::unbounded_channel();
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (asks_tx, asks) = mpsc::unbounded_channel();
        let reach = Reach {
            asks: asks_tx,
            meetings: Default::default(),
            server: Arc::new(RwLock::new(cfg.server)),
            identity: b.identity.clone(),
        };
        let listings = super::listing::Listings::start(
            completion.clone(),
            b.security.clone(),
            cfg.name.clone(),
            cfg.peer_timeout,
            reach.clone(),
        );
        let driver = Driver {
            listings,
            reach,
            hub: Hub::default(),
            dial_slots: Arc::new(tokio::sync::Semaphore::new(reach::DIALS_AT_ONCE)),
            flow,
            sock: b.sock,
            console,
            completion,
            lib: SharedLibrary::default(),
            listener: Some(b.listener),
            tcp_addr,
            accepting: None,
            notices_tx,
            reports_tx,
            cancel: watch::channel(false).0,
            journal,
            name: cfg.name,
            download_dir: cfg.download_dir,
            peer_timeout: cfg.peer_timeout,
            security: b.security,
            peer_keys: Arc::default(),
            _key_lock: b.key_lock,
            retry: cfg.retry,
            known_servers: b.known_servers,
            known_peers: b.known_peers,
            server: cfg.server,
            servers: cfg.servers,
        };
        Ok((driver, (input, reports, notices, asks, signals)))
    }

    async fn main_loop(mut self, channels: Channels) -> Result<(), ClientError> {
        let (mut input, mut reports, mut notices, mut asks, mut signals) = channels;
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        self.flow.start(Instant::now());
        loop {
            if let Some(end) = self.perform().await {
                return end;
            }
            let deadline = self.flow.poll_timeout();
            let reading = self.flow.reading();
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.flow.handle_datagram_from(Instant::now(), from, &buf[..n]);
                    }
                }
                _ = sleep_until(deadline) => self.flow.handle_timeout(Instant::now()),
                ev = input.recv(), if reading => match ev {
                    Some(InputEvent::Line(line)) => self.flow.handle_line(Instant::now(), &line),
                    Some(InputEvent::Interrupt) | Some(InputEvent::Eof) | None => self.flow.quit(),
                },
                Some(r) = reports.recv() => self.on_report(r),
                Some(ask) = asks.recv() => {
                    let (id, reply) = (ask.id, ask.reply);
                    if let Some(tx) = ask.punch {
                        self.hub.wait_punch(id, tx);
                    }
                    if self.flow.connect(Instant::now(), &ask.owner, ask.via, id) {
                        self.hub.pending.insert(id, reply);
                    } else {
                        let _ = reply.send(Err(None));
                    }
                }
                Some(n) = notices.recv() => self.console.print(&n),
                sig = signals.next() => match sig {
                    Sig::Interrupt if self.flow.downloading() && self.console.is_terminal() => {
                        // Ctrl-C during a download cancels the download, not the client.
                        self.cancel.send_replace(true);
                    }
                    _ => self.flow.quit(),
                },
            }
        }
    }

    /// Carries out the flow's actions; `Some` when the client is done.
    async fn perform(&mut self) -> Option<Result<(), ClientError>> {
        while let Some(action) = self.flow.poll_action() {
            match action {
                // A lost datagram is covered by retries; an error here is the same.
                Action::Send(d) => drop(self.sock.send(&d).await),
                Action::UseServer(to) => self.use_server(to).await,
                Action::Say(line) => self.console.print(&line),
                Action::PinServer(key) => self.pin_server(key),
                Action::Prompt => self.console.ready(),
                Action::StartServing => self.start_serving(),
                Action::StopServing => self.stop_serving(),
                Action::TableChanged => {
                    self.update_completion();
                    self.check_peer_keys();
                }
                Action::TrustPeer { name, key } => {
                    if let Some(known) = &mut self.known_peers
                        && let Err(e) = known.pin(&name, key)
                    {
                        self.console.print(&msg::known_peers_failed(&e));
                    }
                }
                Action::CheckDir(dir) => {
                    let found = resolve_dir(Path::new(&dir));
                    self.flow.dir_checked(Instant::now(), &dir, found);
                }
                Action::CheckRestore(dir) => {
                    self.flow.restore_checked(Instant::now(), dir.is_dir());
                }
                Action::SetLibraryDir(dir) => self.set_library_dir(dir),
                Action::SaveJournal => self.save_journal(),
                Action::CheckOffer {
                    dir,
                    files,
                    restoring,
                } => work::check_offer(
                    self.lib.clone(),
                    self.console.clone(),
                    self.reports_tx.clone(),
                    dir,
                    files,
                    restoring,
                ),
                Action::Download(orders) => self.download(orders),
                Action::Leave { goodbye } => {
                    self.journal.remove();
                    self.cancel.send_replace(true);
                    if let Some(bytes) = goodbye {
                        let _ = self.sock.send(&bytes).await;
                    }
                    self.settle().await;
                    return Some(Ok(()));
                }
                Action::SendProbe(p) => {
                    let probe_port =
                        SocketAddr::new(self.server.ip(), self.server.port().wrapping_add(1));
                    let _ = self.sock.send_to(&p, probe_port).await;
                }
                Action::Met { id, result } => self.hub.met(id, result),
                Action::PunchPeer { id, peer } => self.hub.punch_peer(id, peer),
                Action::Dial { from, key, meeting } => self.dial_out(from, key, meeting),
                Action::Fail(e) => {
                    // What the core sent along with the failure still goes out.
                    while let Some(Action::Send(d)) = self.flow.poll_action() {
                        let _ = self.sock.send(&d).await;
                    }
                    return Some(Err(e));
                }
            }
        }
        None
    }

    /// Leaving while a registration was in flight: stay up to one retry budget, so that
    /// its late welcome is answered with a Dereg (and that Dereg retried) instead of
    /// leaving a session the server lists as online after we said goodbye.
    async fn settle(&mut self) {
        let until = Instant::now() + self.retry.budget();
        let mut buf = vec![0u8; 64 * 1024];
        while self.flow.core().settling() && Instant::now() < until {
            let wake = self.flow.poll_timeout().map_or(until, |t| t.min(until));
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.flow.handle_datagram_from(Instant::now(), from, &buf[..n]);
                    }
                }
                _ = sleep_until(Some(wake)) => self.flow.handle_timeout(Instant::now()),
            }
            // Only datagrams matter now; the user has been told goodbye.
            while let Some(action) = self.flow.poll_action() {
                if let Action::Send(d) = action {
                    let _ = self.sock.send(&d).await;
                }
            }
        }
    }

    fn on_report(&mut self, r: Report) {
        match r {
            Report::OfferChecked(c) => self.flow.offer_checked(Instant::now(), c),
            Report::DownloadDone(d) => {
                self.flow.download_done(Instant::now(), d);
                if !self.flow.downloading() {
                    self.cancel.send_replace(false);
                }
            }
        }
    }

    fn download(&mut self, orders: Vec<flow::Order>) {
        self.cancel.send_replace(false);
        for order in orders {
            let f = Fetcher {
                console: self.console.clone(),
                tx: self.reports_tx.clone(),
                cancel: self.cancel.subscribe(),
                security: self.security.clone(),
                requester: self.name.clone(),
                dest: self.download_dir.clone(),
                reach: self.reach.clone(),
                timeout: self.peer_timeout,
            };
            work::download(order, f);
        }
    }

    /// Records folder and offers, for a restart after a crash.
    fn save_journal(&self) {
        if let Ok(lib) = self.lib.read() {
            self.journal.save(&Saved {
                dir: lib.dir().map(Path::to_path_buf),
                offers: lib.offered().iter().cloned().collect(),
            });
        }
    }

    fn set_library_dir(&mut self, dir: PathBuf) {
        if let Ok(mut c) = self.completion.write() {
            c.dir = Some(dir.clone());
        }
        if let Ok(mut lib) = self.lib.write() {
            lib.set_dir(dir);
        }
    }
}

/// `setdir`'s folder, absolute, if it is one.
fn resolve_dir(path: &Path) -> Option<PathBuf> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
        }
        _ => None,
    }
}

fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

enum Sig {
    Interrupt,
    Terminate,
}

/// SIGINT, SIGTERM and SIGHUP as one stream.
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    async fn next(&mut self) -> Sig {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.int) => Sig::Interrupt,
            _ = recv(&mut self.term) => Sig::Terminate,
            _ = recv(&mut self.hup) => Sig::Terminate,
        }
    }
}
