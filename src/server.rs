//! The index server's thin tokio driver: moves datagrams between a pre-bound UDP socket
//! and the [`SecureIndex`] (the index behind its encrypted control channel), persists
//! each batch's changes before that batch's replies leave, and wakes the index when its
//! next deadline comes.
//!
//! The caller binds the socket ([`bind`]), opens the store and builds the index (seeded
//! from the OS); [`run`] only drives them. **Persist before reply** is enforced here, in
//! `Driver::flush`: the batch's store ops are committed before any of its datagrams is
//! sent, and a failed commit sends nothing. What cannot be sent is counted and logged,
//! the index's own failures (`Index::poll_error`) included.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::channel::MAX_DATAGRAM;
use crate::index::{Config, OFFLINE_AFTER_HEARTBEATS, SecureIndex};
use crate::store::Store;

pub mod reach;
pub mod shared;
pub mod status;

pub use shared::{Remote, Shared};

/// Datagrams read before one commit: the group-commit batch size.
const BATCH: usize = 1024;

/// Receive and send buffer asked for on the server socket, in bytes (8 MiB): absorbs
/// bursts such as hundreds of clients registering at once. The kernel caps it at
/// `net.core.{r,w}mem_max`. Tools that face the server (the load generator) should ask
/// for the same.
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("cannot persist the table: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Binds the server socket: `bind` if given, else all interfaces, IPv6 and IPv4 together
/// where the system allows, IPv4 only otherwise.
pub fn bind(bind: Option<IpAddr>, port: u16) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let make = |addr: SocketAddr, dual: bool| -> io::Result<std::net::UdpSocket> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if dual {
            s.set_only_v6(false)?;
        }
        // Best effort: smaller buffers only drop more in bursts, which retries cover.
        if let Err(e) = s.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
            tracing::warn!("cannot set the receive buffer to {SOCKET_BUFFER_BYTES} bytes: {e}");
        }
        if let Err(e) = s.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
            tracing::warn!("cannot set the send buffer to {SOCKET_BUFFER_BYTES} bytes: {e}");
        }
        s.bind(&addr.into())?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    match bind {
        Some(ip) => make(SocketAddr::new(ip, port), false),
        None => make(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            true,
        )
        .or_else(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                Err(e)
            } else {
                make(SocketAddr::from(([0, 0, 0, 0], port)), false)
            }
        }),
    }
}

/// What the driver itself could not do. Each is survivable (the protocol's retries cover
/// a lost datagram), so it is counted and logged, and the server keeps serving.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DriverStats {
    /// Datagrams the socket refused to send (unreachable address, wrong family, ...).
    pub send_failed: u64,
    /// Receive errors caused by earlier sends (ICMP port unreachable) and interrupts.
    pub recv_transient: u64,
    /// The index's `table_parts_sent` at the last flush: more means a push round went out.
    pub parts_flushed: u64,
    /// Forwards to other servers not queued (no shared database, or its outbox full).
    pub forwards_dropped: u64,
}

/// The socket, the index and the store, moved together by [`run`].
struct Driver {
    socket: UdpSocket,
    index: SecureIndex,
    store: Box<dyn Store>,
    stats: DriverStats,
    services: Services,
}

/// What a server may run beside its socket, all optional: the follower of a shared
/// database and the metrics, status and admin address.
#[derive(Debug, Default)]
pub struct Services {
    pub shared: Option<Shared>,
    pub status: Option<status::Status>,
    /// The probe port and the reachability tests.
    pub reach: Option<reach::ReachService>,
}

/// How often the status page and the metrics' gauges are refreshed.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs the index on the pre-bound `socket`, persisting to `store`, until `shutdown`
/// completes.
pub async fn run(
    socket: UdpSocket,
    index: SecureIndex,
    store: Box<dyn Store>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    run_with(socket, index, store, Services::default(), shutdown).await
}

/// [`run`] with services: the shared database's follower (its rows are applied as
/// remote changes), and the metrics and status address with its admin requests.
pub async fn run_with(
    socket: UdpSocket,
    mut index: SecureIndex,
    store: Box<dyn Store>,
    mut services: Services,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    if let Some(sh) = services.shared.as_mut() {
        // Versions handed out before a restart were partly never persisted (remote
        // changes): start above them. Microseconds since 1970 only grow.
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        index.raise_version(micros);
        index.index_mut().set_server_id(&sh.me);
        let addr = socket
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string());
        sh.follow(
            shared::FollowConfig::for_offline_after(index.config().offline_after),
            addr,
        );
    }
    let mut d = Driver {
        socket,
        index,
        store,
        stats: DriverStats::default(),
        services,
    };
    let r = d.serve(shutdown).await;
    tracing::info!(
        index = ?d.index.index().stats(),
        channel = ?d.index.channel_stats(),
        gate = ?d.index.gate_stats(),
        driver = ?d.stats,
        "index server stopped"
    );
    r
}

impl Driver {
    async fn serve(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        tokio::pin!(shutdown);
        let mut status_tick = tokio::time::interval(STATUS_EVERY);
        loop {
            let deadline = self.index.poll_timeout();
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                Some(ev) = recv_remote(&mut self.services.shared) => {
                    self.remote(Instant::now(), ev);
                }
                Some(cmd) = status::recv_admin(&mut self.services.status) => {
                    let now = Instant::now();
                    let reply = cmd.apply(&mut self.index, now);
                    self.flush().await?; // durable before the operator hears "done"
                    cmd.answer(reply);
                }
                _ = status_tick.tick() => self.publish_status(),
                Some(ev) = reach::recv(&mut self.services.reach) => {
                    let now = Instant::now();
                    match ev {
                        reach::ReachEvent::Probe(src, bytes) => {
                            self.index.handle_probe_port(now, src, &bytes)
                        }
                        reach::ReachEvent::Tested(t, ok) => {
                            self.index.index_mut().reach_tested(now, &t, ok)
                        }
                    }
                }
                r = self.socket.recv_from(&mut buf) => {
                    let now = Instant::now();
                    self.received(now, r, &buf)?;
                    // Drain what else is queued: one commit for the whole batch.
                    for _ in 1..BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            r => self.received(now, r, &buf)?,
                        }
                    }
                }
                _ = sleep_until(deadline) => {}
            }
            let now = Instant::now();
            if self.index.poll_timeout().is_some_and(|t| t <= now) {
                self.index.handle_timeout(now);
            }
            self.flush().await?;
        }
    }

    /// Hands a received datagram to the index; a transient error is counted, any other
    /// stops the server.
    fn received(
        &mut self,
        now: Instant,
        r: io::Result<(usize, SocketAddr)>,
        buf: &[u8],
    ) -> Result<(), ServerError> {
        match r {
            Ok((n, src)) => self.index.handle_datagram(now, src, &buf[..n]),
            // ICMP port-unreachable from a vanished client surfaces here on some systems:
            // not our problem, keep serving.
            Err(e) if is_transient(&e) => {
                self.stats.recv_transient += 1;
                tracing::debug!("transient receive error: {e}");
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Applies what the follower read from the shared database.
    fn remote(&mut self, now: Instant, ev: Remote) {
        match ev {
            Remote::Rows { rows, gone } => {
                for (rec, home) in rows {
                    status::note_remote(&mut self.services.status, &rec, &home);
                    self.index.apply_remote(now, rec, &home);
                }
                for name in gone {
                    self.index.released_elsewhere(now, &name);
                }
            }
            Remote::Down(home) => {
                let n = self.index.home_down(now, &home);
                tracing::warn!("server {home} is down: {n} of its clients marked offline");
            }
            Remote::Forwarded(bodies) => {
                for b in bodies {
                    match crate::index::Forward::decode(&b) {
                        Some(f) => self.index.index_mut().handle_forward(now, f),
                        None => tracing::warn!("a forward from another server did not decode"),
                    }
                }
            }
        }
    }

    /// Refreshes the status page's numbers and the metrics' gauges.
    fn publish_status(&mut self) {
        if self.services.shared.is_none() && self.services.status.is_none() {
            return;
        }
        let local = self.index.local_online() as u64;
        if let Some(sh) = &self.services.shared {
            sh.state
                .local_online
                .store(local, std::sync::atomic::Ordering::Relaxed);
        }
        let shared = self.services.shared.as_ref().map(|s| s.state.clone());
        if let Some(st) = self.services.status.as_mut() {
            st.publish(&self.index, &self.stats, shared.as_deref());
        }
    }

    /// Ends a batch: persists its changes, then sends its datagrams (never the other way
    /// round: a failed commit sends nothing), and logs what could not be sent.
    async fn flush(&mut self) -> Result<(), ServerError> {
        let ops = self.index.index_mut().take_store_ops();
        if !ops.is_empty() {
            // Durable before any reply of this batch leaves.
            let t = Instant::now();
            self.store.commit(&ops)?;
            metrics::histogram!("fileapp_store_commit_seconds").record(t.elapsed().as_secs_f64());
            status::note_ops(&mut self.services.status, &ops);
        }
        let parts = self.index.stats().table_parts_sent;
        let fan_out = Instant::now();
        while let Some((dst, bytes)) = self.index.poll_transmit() {
            if let Err(e) = send(&self.socket, dst, &bytes).await {
                self.stats.send_failed += 1;
                // A dead or hostile address can fail every datagram: log on powers of two.
                let n = self.stats.send_failed;
                if n.is_power_of_two() {
                    tracing::warn!("cannot send to {dst}: {e} ({n} send failures so far)");
                } else {
                    tracing::debug!("cannot send to {dst}: {e}");
                }
            }
        }
        if parts != self.stats.parts_flushed {
            self.stats.parts_flushed = parts;
            metrics::histogram!("fileapp_push_fanout_seconds")
                .record(fan_out.elapsed().as_secs_f64());
        }
        while let Some(e) = self.index.index_mut().poll_error() {
            tracing::warn!("{e}");
        }
        while let Some((to, f)) = self.index.index_mut().poll_forward() {
            let queued = match &self.services.shared {
                Some(sh) => sh.forward(&to, f.encode()),
                None => false,
            };
            if !queued {
                self.stats.forwards_dropped += 1;
            }
        }
        while let Some(t) = self.index.index_mut().poll_reach_test() {
            if let Some(r) = &self.services.reach {
                r.start_test(t);
            }
        }
        Ok(())
    }
}

async fn recv_remote(shared: &mut Option<Shared>) -> Option<Remote> {
    match shared {
        Some(s) => s.events.recv().await,
        None => std::future::pending().await,
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Sends one datagram, waiting while the socket buffer is full. An error is the caller's
/// to count: the datagram is lost like any other, and the retry logic covers it.
async fn send(socket: &UdpSocket, dst: SocketAddr, bytes: &[u8]) -> io::Result<()> {
    loop {
        match socket.try_send_to(bytes, dst) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.writable().await?,
            Err(e) => return Err(e),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// The index settings an operator chose, on top of the defaults.
pub fn index_config(opts: &crate::cli::ServerOpts) -> Config {
    let mut cfg = Config::default();
    if let Some(ms) = opts.heartbeat_ms {
        cfg.heartbeat = std::time::Duration::from_millis(ms.max(1));
        cfg.offline_after = cfg.heartbeat * OFFLINE_AFTER_HEARTBEATS;
    }
    if let Some(ms) = opts.offline_after_ms {
        cfg.offline_after = std::time::Duration::from_millis(ms.max(1));
    }
    if let Some(n) = opts.rate_limit {
        cfg.rate_limit = n;
    }
    if let Some(n) = opts.max_clients_per_ip {
        cfg.max_clients_per_ip = n;
    }
    if let Some(n) = opts.push_budget {
        cfg.push_budget = n;
    }
    // Every name is bound to a key: the channel authenticates the server, and the key
    // authenticates the client.
    cfg.require_key = true;
    cfg
}

/// The first non-loopback IPv4 address of this host, to tell clients where to connect.
/// Listing interfaces sends nothing anywhere.
pub fn primary_ip() -> Option<IpAddr> {
    if_addrs::get_if_addrs()
        .ok()?
        .into_iter()
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
}

#[cfg(test)]
mod tests;
