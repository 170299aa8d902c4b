//! The client's tokio driver: one task that owns the [`ClientCore`], the UDP socket, the
//! provider's listener and the console, and runs one user command at a time.
//!
//! Data flow: console lines -> [`command::parse`] -> core / library / fetch tasks;
//! UDP datagrams and timers -> core -> events -> console lines; provider notices and
//! download results arrive on channels and become console lines.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

use crate::cli::{ClientConfig, exit};
use crate::console::{Console, ConsoleOptions, InputEvent, SharedCompletion};
use crate::identity::{self, Identity, KeyLock, fingerprint};
use crate::proto::{self, FileEntry, MAX_DATAGRAM, Reject};
use crate::reliable::RetryPolicy;
use crate::transfer::fetch::{FetchEvent, FetchReport, FetchSpec, fetch};
use crate::transfer::human_rate;
use crate::transfer::provider::{Library, SharedLibrary, serve};
use crate::transfer::secure::{KeyLookup, PeerAuth, Security, TlsIdentity};

use super::command::{self, COMMANDS, Command, glob_match, help_for};
use super::core::{self as core_sm, ClientCore, Event, OfferFailure, OpId, State};
use super::session::{Journal, Saved};
use super::table::Row;

/// Messages the driver sends itself from helper tasks.
enum Internal {
    /// Local checks and hashing of an `offer` finished.
    /// `send` is false when names were given but none could be offered.
    /// `restoring` marks the silent re-offer of a crashed run's files.
    OfferChecked {
        ok: Vec<FileEntry>,
        send: bool,
        restoring: bool,
    },
    /// One download ended.
    DownloadDone {
        file: String,
        owner: String,
        connected: bool,
        result: Result<FetchReport, crate::transfer::fetch::FetchError>,
    },
}

/// The command in progress; input is not read while one runs.
#[derive(Debug, PartialEq, Eq)]
enum Busy {
    /// Initial registration (`initial`) or `reg`.
    Register {
        initial: bool,
    },
    Hashing,
    Offer(OpId),
    Dereg,
    Downloads {
        left: usize,
    },
    /// The server applied our change; wait (briefly) until our table shows it, so the
    /// next command reads our own writes.
    Sync {
        until: Instant,
    },
}

/// Longest wait for our own change to appear in our table before moving on anyway.
const SYNC_WAIT: Duration = Duration::from_secs(2);

struct Driver {
    cfg: ClientConfig,
    core: ClientCore,
    sock: UdpSocket,
    console: Console,
    completion: SharedCompletion,
    lib: SharedLibrary,
    listener: Option<TcpListener>,
    tcp_port: u16,
    tcp_bind: IpAddr,
    accepting: Option<watch::Sender<bool>>,
    notices_tx: mpsc::UnboundedSender<String>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    cancel: watch::Sender<bool>,
    busy: Option<Busy>,
    prompt_due: bool,
    /// Commands from `--exec`, run before reading input.
    exec: VecDeque<String>,
    journal: Journal,
    /// Offers of a previous run that crashed, restored after registration.
    restore: Option<Saved>,
    /// The offer operation restoring them.
    restore_op: Option<OpId>,
    exit_code: Option<i32>,
    download_dir: PathBuf,
    identity: Arc<Identity>,
    /// Holds our key file locked while we run, so a second program of this name knows.
    _key_lock: Option<KeyLock>,
    /// TLS with our identity, or `--plaintext`.
    security: Security,
    /// Each online owner's key, from the table; the provider checks requesters with it.
    peer_keys: Arc<RwLock<HashMap<String, [u8; 32]>>>,
}

/// Runs a client until the user leaves; returns the exit code.
pub async fn run(cfg: ClientConfig) -> i32 {
    match Driver::start(cfg).await {
        Ok((driver, input, internal, notices)) => driver.main_loop(input, internal, notices).await,
        Err(msg) => {
            println!("{msg}");
            exit::FAILURE
        }
    }
}

/// The key this client's name is bound to. An explicit `--identity` must work; the
/// default one falls back to a key for this run only when the user has no writable
/// config folder (the name then cannot be taken back after a crash, nothing worse).
/// The lock is `None` when another process holds the key (or there is no key file).
fn load_identity(cfg: &ClientConfig) -> Result<(Identity, bool, Option<KeyLock>), String> {
    let exclusive = |(id, lock): (Identity, Option<KeyLock>)| (id, lock.is_some(), lock);
    if let Some(path) = &cfg.opts.identity {
        return identity::open_exclusive(path)
            .map(exclusive)
            .map_err(|e| format!("[Identity: {e}]"));
    }
    let found = identity::default_path(&cfg.name).map(|p| identity::open_exclusive(&p));
    match found {
        Some(Ok(pair)) => Ok(exclusive(pair)),
        other => {
            tracing::warn!(
                ?other,
                "no usable identity file; using a key for this run only"
            );
            let id = Identity::generate().map_err(|e| format!("[Identity: {e}]"))?;
            Ok((id, true, None))
        }
    }
}

fn bind_error(what: &str, port: u16, e: io::Error) -> String {
    if e.kind() == io::ErrorKind::AddrInUse {
        format!("[Cannot use {what} port {port}: it is already in use]")
    } else {
        format!("[Cannot use {what} port {port}: {e}]")
    }
}

type Started = (
    Driver,
    mpsc::UnboundedReceiver<InputEvent>,
    mpsc::UnboundedReceiver<Internal>,
    mpsc::UnboundedReceiver<String>,
);

impl Driver {
    async fn start(cfg: ClientConfig) -> Result<Started, String> {
        let any: IpAddr = if cfg.server.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let sock = UdpSocket::bind(SocketAddr::new(any, cfg.udp_port))
            .await
            .map_err(|e| bind_error("UDP", cfg.udp_port, e))?;
        // Only the server's datagrams reach us: others are filtered by the kernel.
        sock.connect(cfg.server)
            .await
            .map_err(|e| format!("[Cannot reach server {}: {e}]", cfg.server))?;
        let listener = TcpListener::bind(SocketAddr::new(any, cfg.tcp_port))
            .await
            .map_err(|e| bind_error("TCP", cfg.tcp_port, e))?;
        let tcp_port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let download_dir = match &cfg.opts.download_dir {
            Some(d) => d.clone(),
            None => {
                std::env::current_dir().map_err(|e| format!("[Cannot read current folder: {e}]"))?
            }
        };
        if !download_dir.is_dir() {
            return Err(format!(
                "[Download folder {} does not exist]",
                download_dir.display()
            ));
        }

        let (identity, exclusive, key_lock) = load_identity(&cfg)?;
        let identity = Arc::new(identity);
        let security = if cfg.opts.plaintext {
            Security::Plaintext
        } else {
            let tls =
                TlsIdentity::new(&identity).map_err(|e| format!("[TLS setup failed: {e}]"))?;
            Security::Tls(Arc::new(tls))
        };
        let completion = SharedCompletion::default();
        let (console, input) = Console::start(ConsoleOptions {
            plain: cfg.opts.plain,
            history: None,
            completion: completion.clone(),
        });
        let (notices_tx, notices) = mpsc::unbounded_channel();
        let (internal_tx, internal) = mpsc::unbounded_channel();
        let seed: u64 = rand::random();
        let core = ClientCore::new(
            core_sm::Config {
                name: cfg.name.clone(),
                tcp_port,
                retry: RetryPolicy {
                    interval: cfg.retry_interval(),
                    retries: 3,
                },
                heartbeat: Duration::from_secs(10),
                advertise: cfg.opts.advertise_ip,
                identity: Some(identity.clone()),
                evict: exclusive,
            },
            seed,
        );
        let exec = cfg
            .opts
            .exec
            .as_deref()
            .map(|s| {
                s.split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let journal = Journal::for_name(&cfg.name);
        let restore = journal
            .load()
            .filter(|s| s.dir.is_some() && !s.offers.is_empty());
        let (cancel, _) = watch::channel(false);
        let driver = Driver {
            core,
            sock,
            console,
            completion,
            lib: SharedLibrary::default(),
            listener: Some(listener),
            tcp_port,
            tcp_bind: any,
            accepting: None,
            notices_tx,
            internal_tx,
            cancel,
            busy: None,
            prompt_due: false,
            exec,
            journal,
            restore,
            restore_op: None,
            exit_code: None,
            download_dir,
            identity,
            _key_lock: key_lock,
            security,
            peer_keys: Arc::default(),
            cfg,
        };
        Ok((driver, input, internal, notices))
    }

    fn say(&self, line: impl AsRef<str>) {
        self.console.print(line.as_ref());
    }

    fn finish_command(&mut self) {
        self.busy = None;
        self.prompt_due = true;
    }

    async fn main_loop(
        mut self,
        mut input: mpsc::UnboundedReceiver<InputEvent>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
        mut notices: mpsc::UnboundedReceiver<String>,
    ) -> i32 {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut signals = Signals::new();
        if self.restore.is_some() {
            self.core.register_resuming(Instant::now());
        } else {
            self.core.register(Instant::now());
        }
        self.busy = Some(Busy::Register { initial: true });
        loop {
            self.flush().await;
            self.drain_events();
            self.flush().await;
            if let Some(code) = self.exit_code {
                return code;
            }
            if let Some(Busy::Sync { until }) = self.busy
                && (!self.core.behind_own_writes() || Instant::now() >= until)
            {
                self.finish_command();
            }
            if self.busy.is_none() {
                if let Some(line) = self.exec.pop_front() {
                    self.say(format!(">>> {line}"));
                    self.handle_line(&line).await;
                    continue;
                }
                if self.cfg.opts.exit && self.cfg.opts.exec.is_some() {
                    return self.leave().await;
                }
                if self.prompt_due {
                    self.prompt_due = false;
                    self.console.ready();
                }
            }
            let sync = match self.busy {
                Some(Busy::Sync { until }) => Some(until),
                _ => None,
            };
            let deadline = [self.core.poll_timeout(), sync].into_iter().flatten().min();
            let reading = self.busy.is_none();
            tokio::select! {
                r = self.sock.recv(&mut buf) => {
                    if let Ok(n) = r {
                        self.core.handle_datagram(Instant::now(), &buf[..n]);
                    }
                }
                _ = sleep_until(deadline) => self.core.handle_timeout(Instant::now()),
                ev = input.recv(), if reading => match ev {
                    Some(InputEvent::Line(line)) => self.handle_line(&line).await,
                    Some(InputEvent::Interrupt) | Some(InputEvent::Eof) | None => {
                        return self.leave().await;
                    }
                },
                Some(msg) = internal.recv() => self.on_internal(msg),
                Some(n) = notices.recv() => self.say(n),
                sig = signals.next() => match sig {
                    Sig::Interrupt if matches!(self.busy, Some(Busy::Downloads { .. })) && self.console.is_terminal() => {
                        // Ctrl-C during a download cancels the download, not the client.
                        let _ = self.cancel.send(true);
                    }
                    _ => return self.leave().await,
                },
            }
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

    /// Leaves cleanly: a best-effort goodbye to the server, exit code 0.
    async fn leave(&mut self) -> i32 {
        self.journal.remove();
        let _ = self.cancel.send(true);
        if let Some(bytes) = self.core.goodbye() {
            let _ = self.sock.send(&bytes).await;
        }
        exit::OK
    }

    async fn flush(&mut self) {
        while let Some(d) = self.core.poll_transmit() {
            // A lost datagram is covered by retries; an error here is the same.
            let _ = self.sock.send(&d).await;
        }
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.core.poll_event() {
            self.on_event(ev);
        }
    }

    fn on_event(&mut self, ev: Event) {
        tracing::info!(?ev, "control event");
        match ev {
            Event::Registered => {
                self.say(">>> [Welcome, You are registered.]");
                self.start_serving();
                let restoring = match self.restore.take() {
                    Some(Saved {
                        dir: Some(dir),
                        offers,
                    }) if dir.is_dir() => {
                        // The previous run of this name crashed: offer its files again,
                        // quietly, before the first command.
                        self.set_library_dir(dir.clone());
                        self.start_offer(dir, offers, true);
                        true
                    }
                    _ => false,
                };
                if !restoring && matches!(self.busy, Some(Busy::Register { .. })) {
                    self.busy = Some(Busy::Sync {
                        until: Instant::now() + SYNC_WAIT,
                    });
                }
            }
            Event::RegisterRejected(reason) => {
                let initial = self.busy == Some(Busy::Register { initial: true });
                self.say(match reason {
                    Reject::NameInUse => {
                        ">>> [Registration rejected: Client username already in use.]".to_string()
                    }
                    other => format!(">>> [Registration rejected: {}]", reject_text(other)),
                });
                if initial {
                    self.exit_code = Some(exit::FAILURE);
                } else {
                    self.finish_command();
                }
            }
            Event::RegisterTimedOut => {
                self.say(">>> [Server not responding]");
                if self.busy == Some(Busy::Register { initial: true }) {
                    self.exit_code = Some(exit::FAILURE);
                } else {
                    self.finish_command();
                }
            }
            Event::OfferDone(op) if self.restore_op == Some(op) => {
                self.restore_op = None;
                let lib = self.lib.read().ok();
                let (n, dir) = lib.as_ref().map_or((0, String::new()), |l| {
                    let dir = l.dir().map(|d| d.display().to_string()).unwrap_or_default();
                    (l.offered().len(), dir)
                });
                drop(lib);
                self.say(format!(
                    ">>> [Restored {n} offer(s) of your previous session from {dir}.]"
                ));
                self.busy = Some(Busy::Sync {
                    until: Instant::now() + SYNC_WAIT,
                });
            }
            Event::OfferDone(op) => {
                self.say(">>> [Offer Message Received By Server]");
                if self.busy == Some(Busy::Offer(op)) {
                    self.busy = Some(Busy::Sync {
                        until: Instant::now() + SYNC_WAIT,
                    });
                }
            }
            Event::OfferFailed(op, _) if self.restore_op == Some(op) => {
                self.restore_op = None;
                self.say(
                    ">>> [Could not restore your previous session's offers; offer them again.]",
                );
                self.finish_command();
            }
            Event::OfferFailed(op, why) => {
                self.say(match why {
                    OfferFailure::NoAck => {
                        ">>> [No ACK from Server, please try again later.]".to_string()
                    }
                    OfferFailure::Rejected(r) => {
                        format!(">>> [Offer rejected by server: {}]", reject_text(r))
                    }
                });
                if self.busy == Some(Busy::Offer(op)) {
                    self.finish_command();
                }
            }
            Event::Deregistered => {
                self.say(">>> [You are Offline. Bye.]");
                self.update_completion();
                if self.busy == Some(Busy::Dereg) {
                    self.finish_command();
                }
            }
            Event::DeregTimedOut => {
                self.say(">>> [Server not responding]");
                self.say(">>> [Exiting]");
                self.exit_code = Some(exit::FAILURE);
            }
            Event::TableUpdated => {
                self.say(">>> [Client table updated.]");
                self.update_completion();
            }
            Event::ServerLost => {
                self.say(">>> [Server not responding; reconnecting automatically.]");
            }
            Event::ServerBack => {
                self.say(">>> [Connection to server restored.]");
                self.start_serving();
            }
        }
    }

    /// Called on every table change: refreshes completion and the requesters' keys.
    fn update_completion(&self) {
        let keys: HashMap<String, [u8; 32]> = self
            .core
            .table()
            .owners()
            .filter_map(|(name, o)| o.key.map(|k| (name.to_string(), k)))
            .collect();
        *self.peer_keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        let mut table = std::collections::BTreeMap::<String, Vec<String>>::new();
        for r in self.core.table().rows() {
            table.entry(r.file).or_default().push(r.owner);
        }
        if let Ok(mut c) = self.completion.write() {
            c.table = table;
        }
    }

    /// Starts the provider's accept loop if it is not running.
    fn start_serving(&mut self) {
        if self.accepting.as_ref().is_some_and(|a| *a.borrow()) {
            return;
        }
        let listener = match self.listener.take() {
            Some(l) => l,
            None => match rebind(SocketAddr::new(self.tcp_bind, self.tcp_port)) {
                Ok(l) => l,
                Err(e) => {
                    self.say(format!(
                        ">>> [Cannot serve files: TCP port {} unavailable: {e}]",
                        self.tcp_port
                    ));
                    return;
                }
            },
        };
        let (tx, rx) = watch::channel(true);
        self.accepting = Some(tx);
        let auth = match &self.security {
            Security::Tls(id) => {
                let keys = self.peer_keys.clone();
                let lookup: KeyLookup = Arc::new(move |name: &str| {
                    keys.read()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(name)
                        .copied()
                });
                PeerAuth::tls(id.clone(), lookup)
            }
            Security::Plaintext => PeerAuth::plaintext(),
        };
        tokio::spawn(serve(
            listener,
            self.lib.clone(),
            self.notices_tx.clone(),
            rx,
            auth,
        ));
    }

    fn stop_serving(&mut self) {
        if let Some(a) = self.accepting.take() {
            let _ = a.send(false);
        }
    }

    async fn handle_line(&mut self, line: &str) {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(e) => {
                self.say(format!(">>> {e}"));
                self.prompt_due = true;
                return;
            }
        };
        self.prompt_due = true;
        self.handle_command(cmd).await;
    }

    async fn handle_command(&mut self, cmd: Command) {
        tracing::info!(?cmd, "command");
        let state = self.core.state();
        // Deregistered: only local commands and `reg`. Reconnecting on our own: the
        // local table and peers still work; only offers need the server.
        let refused = match (state, &cmd) {
            (
                State::Offline | State::Idle | State::Registering,
                Command::Offer(_)
                | Command::List { .. }
                | Command::Request { .. }
                | Command::Dereg(_),
            ) => Some(">>> [You are offline. Use reg to come back online.]"),
            (State::Reconnecting, Command::Offer(_)) => {
                Some(">>> [Not connected to the server right now; try again shortly.]")
            }
            _ => None,
        };
        if let Some(msg) = refused {
            self.say(msg);
            return;
        }
        match cmd {
            Command::Nothing => {}
            Command::SetDir(dir) => self.setdir(&dir),
            Command::Offer(files) => self.offer(files),
            Command::List {
                long,
                json,
                pattern,
            } => self.list(long, json, pattern.as_deref()),
            Command::Request { pairs, force } => self.request(pairs, force),
            Command::Dereg(name) => {
                if let Some(n) = name.filter(|n| n != self.core.name()) {
                    self.say(format!(
                        ">>> [dereg failed: {n} is not you; you can only deregister yourself ({}).]",
                        self.core.name()
                    ));
                    return;
                }
                // Stop serving first: no transfer starts after we said we left.
                self.stop_serving();
                if self.core.dereg(Instant::now()) {
                    self.busy = Some(Busy::Dereg);
                }
            }
            Command::Reg => {
                if state != State::Offline {
                    self.say(">>> [Already registered.]");
                    return;
                }
                self.core.register(Instant::now());
                self.busy = Some(Busy::Register { initial: false });
            }
            Command::Help(None) => {
                let width = COMMANDS.iter().map(|c| c.usage.len()).max().unwrap_or(0);
                for c in COMMANDS {
                    self.say(format!("  {:width$}  {}", c.usage, c.summary));
                }
            }
            Command::Help(Some(name)) => match help_for(&name) {
                Some(c) => {
                    self.say(format!("  {}: {}", c.usage, c.summary));
                    self.say(format!("  {}", c.details));
                }
                None => self.say(format!(">>> [No such command: {name}]")),
            },
            Command::WhoAmI => {
                self.say(format!(
                    ">>> [You are {} ({}), key fingerprint {}]",
                    self.core.name(),
                    match state {
                        State::Online => "online",
                        State::Reconnecting => "reconnecting",
                        _ => "offline",
                    },
                    fingerprint(&self.identity.public_key())
                ));
            }
            Command::Quit => {
                let code = self.leave().await;
                self.exit_code = Some(code);
            }
        }
    }

    fn setdir(&mut self, dir: &str) {
        let path = Path::new(dir);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
                self.set_library_dir(abs.clone());
                self.save_journal();
                self.say(format!(
                    ">>> [Successfully set {} as the directory for searching offered files.]",
                    abs.display()
                ));
            }
            _ => self.say(format!(">>> [setdir failed: {dir} does not exist.]")),
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

    fn offer(&mut self, files: Vec<String>) {
        let dir = self
            .lib
            .read()
            .ok()
            .and_then(|l| l.dir().map(Path::to_path_buf));
        let Some(dir) = dir else {
            self.say(">>> Directory not set. Set directory using setdir command.");
            return;
        };
        self.start_offer(dir, files, false);
    }

    /// Checks and hashes `files` in `dir` off the event loop, then offers the good ones
    /// (`Internal::OfferChecked`). `restoring`: a crashed run's offers, without messages
    /// for files that are gone.
    fn start_offer(&mut self, dir: PathBuf, files: Vec<String>, restoring: bool) {
        let mut unique = Vec::new();
        for f in files {
            if !unique.contains(&f) {
                unique.push(f);
            }
        }
        let given = unique.len();
        let lib = self.lib.clone();
        let console = self.console.clone();
        let tx = self.internal_tx.clone();
        self.busy = Some(Busy::Hashing);
        let say = move |line: String| {
            if !restoring {
                console.print(&line);
            }
        };
        tokio::task::spawn_blocking(move || {
            let mut ok = Vec::new();
            for f in unique {
                if !proto::valid_file_name(&f) {
                    say(format!(
                        ">>> [Cannot offer {f:?}: not a plain file name (no '/', '..' or control characters)]"
                    ));
                    continue;
                }
                // Hash without holding the library lock: serving goes on meanwhile.
                match Library::prepare_offer(&dir, &f) {
                    Ok(prepared) => {
                        let info = prepared.info();
                        if let Ok(mut l) = lib.write() {
                            l.add_offer(prepared);
                            ok.push(FileEntry {
                                name: f,
                                size: info.size,
                                hash: info.hash,
                            });
                        }
                    }
                    Err(e) => say(format!(">>> [Cannot offer {f}: {e}]")),
                }
            }
            let send = given == 0 || !ok.is_empty();
            if !send {
                say(">>> [Nothing offered.]".to_string());
            }
            let _ = tx.send(Internal::OfferChecked {
                ok,
                send,
                restoring,
            });
        });
    }

    fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::OfferChecked {
                ok,
                send,
                restoring,
            } => {
                if self.busy != Some(Busy::Hashing) {
                    return;
                }
                if !send || (restoring && ok.is_empty()) {
                    return self.finish_command();
                }
                // Journal first: a crash from here on restores these offers.
                self.save_journal();
                match self.core.offer(Instant::now(), &ok) {
                    Some(op) => {
                        if restoring {
                            self.restore_op = Some(op);
                        }
                        self.busy = Some(Busy::Offer(op));
                    }
                    None => {
                        self.say(">>> [Not connected to the server right now; try again shortly.]");
                        self.finish_command();
                    }
                }
            }
            Internal::DownloadDone {
                file,
                owner,
                connected,
                result,
            } => {
                match result {
                    Ok(r) if r.already_present => {
                        self.say(format!(
                            "< {file} is already in {}, identical (BLAKE3 {}); nothing to transfer >",
                            self.download_dir.display(),
                            hex::encode(r.hash)
                        ));
                        self.say(format!("< {file} downloaded successfully! >"));
                    }
                    Ok(r) => {
                        let moved = r.size - r.resumed_from;
                        self.say(format!(
                            "< {file}: {} bytes, BLAKE3 {}, {:.2} s, {} >",
                            r.size,
                            hex::encode(r.hash),
                            r.elapsed.as_secs_f64(),
                            human_rate(moved, r.elapsed)
                        ));
                        self.say(format!("< {file} downloaded successfully! >"));
                    }
                    Err(e) => self.say(format!("< Download of {file} from {owner} failed: {e} >")),
                }
                if connected {
                    self.say(format!("< Connection with client {owner} closed >"));
                }
                if let Some(Busy::Downloads { left }) = &mut self.busy {
                    *left -= 1;
                    if *left == 0 {
                        let _ = self.cancel.send(false);
                        self.finish_command();
                    }
                }
            }
        }
    }

    fn list(&mut self, long: bool, json: bool, pattern: Option<&str>) {
        let rows: Vec<Row> = self
            .core
            .table()
            .rows()
            .into_iter()
            .filter(|r| pattern.is_none_or(|p| glob_match(p, &r.file)))
            .collect();
        if json {
            self.say(serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into()));
            return;
        }
        if rows.is_empty() {
            self.say(">>> [No files available for download at the moment.]");
            return;
        }
        let lines = if long {
            let mut table: Vec<[String; 7]> = vec![[
                "FILENAME".into(),
                "OWNER".into(),
                "IP ADDRESS".into(),
                "TCP PORT".into(),
                "SIZE".into(),
                "BLAKE3".into(),
                "OWNER KEY".into(),
            ]];
            table.extend(rows.iter().map(|r| {
                let key = self
                    .core
                    .table()
                    .owner(&r.owner)
                    .and_then(|o| o.key)
                    .map_or_else(|| "-".to_string(), |k| fingerprint(&k));
                [
                    r.file.clone(),
                    r.owner.clone(),
                    r.ip.to_string(),
                    r.tcp_port.to_string(),
                    r.size.to_string(),
                    r.hash.chars().take(16).collect(),
                    key,
                ]
            }));
            format_columns(&table)
        } else {
            let mut table: Vec<[String; 4]> = vec![[
                "FILENAME".into(),
                "OWNER".into(),
                "IP ADDRESS".into(),
                "TCP PORT".into(),
            ]];
            table.extend(rows.iter().map(|r| {
                [
                    r.file.clone(),
                    r.owner.clone(),
                    r.ip.to_string(),
                    r.tcp_port.to_string(),
                ]
            }));
            format_columns(&table)
        };
        for line in lines {
            self.say(line);
        }
    }

    fn request(&mut self, pairs: Vec<(String, String)>, force: bool) {
        let mut specs = Vec::new();
        for (file, owner) in pairs {
            let valid = self
                .core
                .table()
                .owner(&owner)
                .filter(|o| o.files.contains_key(&file) && owner != self.core.name())
                .map(|o| (SocketAddr::new(o.ip, o.tcp_port), o.key));
            match valid {
                Some((peer, key)) => {
                    let mut spec =
                        FetchSpec::new(peer, owner, file, self.core.name(), &self.download_dir);
                    spec.force = force;
                    spec.peer_key = key;
                    specs.push(spec);
                }
                None => self.say(">>> [Invalid Request]"),
            }
        }
        if specs.is_empty() {
            return;
        }
        let _ = self.cancel.send(false);
        self.busy = Some(Busy::Downloads { left: specs.len() });
        for spec in specs {
            self.spawn_download(spec);
        }
    }

    fn spawn_download(&self, spec: FetchSpec) {
        let console = self.console.clone();
        let tx = self.internal_tx.clone();
        let cancel = self.cancel.subscribe();
        let security = self.security.clone();
        let connected = Arc::new(AtomicBool::new(false));
        let (file, owner) = (spec.file.clone(), spec.owner.clone());
        let conn = connected.clone();
        tokio::spawn(async move {
            let mut bar = None;
            let (f, o) = (file.clone(), owner.clone());
            let on_event = move |ev: FetchEvent| match ev {
                FetchEvent::Connected => {
                    conn.store(true, Ordering::SeqCst);
                    console.print(&format!("< Connection with client {o} established. >"));
                }
                FetchEvent::Started { size, offset } => {
                    if offset > 0 {
                        console.print(&format!(
                            "< Resuming {f} from byte {offset} of {size} ({:.0}%) >",
                            offset as f64 * 100.0 / size.max(1) as f64
                        ));
                    }
                    console.print(&format!("< Downloading {f}... >"));
                    let p = console.progress(&f, size);
                    p.set(offset);
                    bar = Some(p);
                }
                FetchEvent::Progress { done } => {
                    if let Some(b) = &bar {
                        b.set(done);
                    }
                }
            };
            let result = fetch(spec, security, on_event, cancel).await;
            let _ = tx.send(Internal::DownloadDone {
                file,
                owner,
                connected: connected.load(Ordering::SeqCst),
                result,
            });
        });
    }
}

fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

fn reject_text(r: Reject) -> &'static str {
    match r {
        Reject::NameInUse => "name already in use",
        Reject::InvalidName => "invalid name",
        Reject::NotRegistered => "not registered (session expired)",
        Reject::LimitExceeded => "limit exceeded",
        Reject::RateLimited => "too many requests",
        Reject::BadProof => "the proof of identity was not accepted",
    }
}

/// Aligns columns to their longest value, two spaces apart; the last column is not padded.
pub fn format_columns<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                if i + 1 == N {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(
                        ' ',
                        widths[i] - cell.chars().count() + 2,
                    ));
                }
            }
            line
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_longest_value() {
        let rows = vec![
            [
                "FILENAME".to_string(),
                "OWNER".into(),
                "IP ADDRESS".into(),
                "TCP PORT".into(),
            ],
            [
                "a-much-longer-name".into(),
                "B".into(),
                "127.0.0.1".into(),
                "1401".into(),
            ],
        ];
        let out = format_columns(&rows);
        assert_eq!(out[0], "FILENAME            OWNER  IP ADDRESS  TCP PORT");
        assert_eq!(out[1], "a-much-longer-name  B      127.0.0.1   1401");
    }
}
