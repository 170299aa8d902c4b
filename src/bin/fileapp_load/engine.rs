//! The simulation engine: many simulated clients, each with its own UDP socket, its own
//! Ed25519 identity and its own encrypted control channel ([`ClientLink`]), and the
//! one-thread loop that sends their requests, receives and dispatches replies and
//! pushes, and retransmits.
//!
//! The server keeps one channel session per client address, so every client has its own
//! socket (its own source port). Every message goes through the client's link: sealed on
//! send, opened on receive; a retransmission is handed to the link again (which starts a
//! new handshake when the server went silent, as a real client's does). Replies to
//! requests are matched by request id; table parts go to the socket's one client
//! ([`super::table`]).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use fileapp::channel::ServerPin;
use fileapp::client::link::{ClientLink, LinkEvent};
use fileapp::identity::{Identity, PublicKey};
use fileapp::proto::{FileEntry, Message, Reject, ReqId, Token};
use fileapp::reliable::RetryPolicy;

use super::counters::Counters;
use super::net::{Poller, RECV_BATCH, RecvBatch, client_socket, sock_ip};
use super::table::{Asm, PartId};

/// How much longer than the server's retransmission interval of table parts a sync
/// waits without any part before it counts the server as done retransmitting.
const QUIET_MARGIN: Duration = Duration::from_millis(100);
/// How often pending requests are checked for retransmission: often enough next to
/// the retry interval, rarely enough not to scan them every turn.
const TIMEOUT_CHECK: Duration = Duration::from_millis(20);
/// Fresh registrations (new handshake, challenge, proof) one client may start after a
/// proof the server refused because the session changed under it.
const REGISTER_ATTEMPTS: u8 = 3;

/// What a pending request is, so its reply is counted under the right head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `Register` with the key and no proof: answered by a `Challenge`.
    Register,
    /// The `Register` with the proof: answered by a `Welcome`.
    RegisterProof,
    Heartbeat,
    Offer,
    /// The offer of a propagation round.
    PropOffer,
    /// The signed record after a welcome or an offer (as real clients send it).
    Record,
}

/// A request awaiting its reply, with the plaintext to send again.
struct Pending {
    client: u32,
    kind: Kind,
    first: Instant,
    last: Instant,
    tries: u32,
    bytes: Vec<u8>,
}

/// One simulated client: its socket, identity and channel, its registration and the
/// table it holds.
pub struct Client {
    pub name: String,
    instance: u64,
    tcp_port: u16,
    identity: Identity,
    key: PublicKey,
    /// The socket it speaks from (its own, or, in the memory phase past the open-files
    /// limit, one it takes over from an earlier client that is done).
    pub sock: u32,
    /// The server (index into [`Sim::new`]'s list) it speaks to.
    pub server: usize,
    /// Moving to another server (see `engine/failover.rs`): registering there.
    pub moving: bool,
    link: ClientLink,
    /// The handshake hash of the link's session, which registration proofs are signed over.
    binding: Option<[u8; 32]>,
    register_attempts: u8,
    pub token: Option<Token>,
    /// Table version held (all parts of a delta up to it received).
    pub version: u64,
    pub asm: Option<Asm>,
    /// Last propagation round whose file this client has seen, plus one.
    pub prop_seen: u32,
    /// Requests of this client awaiting a reply.
    pub outstanding: u16,
    /// Has sent a heartbeat (so the server pushes tables to it).
    pub heartbeated: bool,
    /// What it offered, for the record it signs.
    offered: std::collections::BTreeMap<String, FileEntry>,
    record_seq: u64,
}

/// The propagation round under way: who has seen its file, and when.
pub struct PropRound {
    pub file: String,
    pub round: u32,
    pub t0: Instant,
    pub remaining: usize,
    pub per_client_us: Vec<u32>,
    pub acked_at: Option<Instant>,
}

/// All simulated clients and what they are waiting for.
pub struct Sim {
    pub clients: Vec<Client>,
    socks: Vec<UdpSocket>,
    /// The client each socket currently speaks for.
    owner: Vec<u32>,
    pin: Option<ServerPin>,
    pending: HashMap<ReqId, Pending>,
    next_req: ReqId,
    epoll: Poller,
    rb: RecvBatch,
    ready: Vec<u64>,
    opened: Vec<Vec<u8>>,
    /// Datagrams a socket refused with EAGAIN, sent again on the next flush.
    backlog: VecDeque<(u32, Vec<u8>)>,
    pub c: Counters,
    /// Retransmission as real clients do it, and as the server pushes table parts: the
    /// crate's default policy.
    pub retry: RetryPolicy,
    /// Highest table version any reply or part named, per server (each server numbers
    /// its own table).
    pub max_version: Vec<u64>,
    /// The servers, as given to [`Sim::new`].
    servers: Vec<SocketAddr>,
    /// A server killed: its clients move (see `engine/failover.rs`).
    pub failover: Option<failover::Failover>,
    pub prop: Option<PropRound>,
    /// Round-trip times of acknowledged requests, in µs, while recording.
    pub rtt_us: Vec<u32>,
    pub record_rtt: bool,
    /// Memory phase: offer this many files right after each welcome.
    pub offer_after_welcome: Option<u32>,
    /// While a throughput phase runs: clients whose request completed, to be given the
    /// next one.
    pub idle_q: Option<VecDeque<u32>>,
    /// Requests awaiting a reply, all clients together.
    pub inflight: u32,
    last_timeout_check: Instant,
    /// When the last table part arrived.
    pub last_table_at: Instant,
}

impl Sim {
    /// `n` clients named `<prefix><i>`, each with a fresh Ed25519 identity, speaking to
    /// `servers` (socket `s` to server `s % servers.len()`; one deployment, whose channel
    /// key is `pin`, any if `None`) over `sockets` sockets: one each when `sockets >= n`;
    /// else client `i` uses socket `i % sockets`, after the clients before it there are
    /// done (see [`Sim::may_start`]).
    pub fn new(
        servers: &[SocketAddr],
        n: usize,
        sockets: usize,
        prefix: &str,
        pin: Option<ServerPin>,
    ) -> anyhow::Result<Sim> {
        anyhow::ensure!(!servers.is_empty(), "no server to load");
        let mut epoll = Poller::new()?;
        let sockets = sockets.clamp(1, n.max(1));
        let per_sock = n.div_ceil(sockets);
        let mut socks = Vec::with_capacity(sockets);
        for s in 0..sockets {
            let server = servers[s % servers.len()];
            let udp = client_socket(sock_ip(s, per_sock), server)
                .with_context(|| format!("cannot open socket {s}"))?;
            epoll.add(&udp, s as u64)?;
            socks.push(udp);
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let retry = RetryPolicy::default();
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            let identity = Identity::generate().context("cannot generate an identity")?;
            let key = identity.public_key();
            clients.push(Client {
                name: format!("{prefix}{i}"),
                instance: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64,
                tcp_port: 10_000 + (i % 50_000) as u16,
                identity,
                key,
                sock: (i % sockets) as u32,
                server: i % sockets % servers.len(),
                moving: false,
                link: ClientLink::new(pin, rand::random(), retry.interval),
                binding: None,
                register_attempts: 0,
                token: None,
                version: 0,
                asm: None,
                prop_seen: 0,
                outstanding: 0,
                heartbeated: false,
                offered: Default::default(),
                record_seq: 0,
            });
        }
        Ok(Sim {
            clients,
            owner: (0..sockets as u32).collect(),
            socks,
            pin,
            pending: HashMap::new(),
            next_req: seed << 16,
            epoll,
            rb: RecvBatch::default(),
            ready: Vec::new(),
            opened: Vec::new(),
            backlog: VecDeque::new(),
            c: Counters::default(),
            retry,
            max_version: vec![0; servers.len()],
            servers: servers.to_vec(),
            failover: None,
            prop: None,
            rtt_us: Vec::new(),
            record_rtt: false,
            offer_after_welcome: None,
            idle_q: None,
            inflight: 0,
            last_timeout_check: Instant::now(),
            last_table_at: Instant::now(),
        })
    }

    /// Sockets actually bound.
    pub fn local_addrs(&self) -> usize {
        self.socks.iter().filter(|s| s.local_addr().is_ok()).count()
    }

    /// May `client` start? Always with a socket of its own; on a shared socket, once the
    /// client before it there is done (registered with nothing outstanding, or given up):
    /// it then takes the socket over, and its handshake replaces the other's session.
    pub fn may_start(&mut self, client: u32) -> bool {
        let s = self.clients[client as usize].sock as usize;
        let cur = self.owner[s];
        if cur != client && self.clients[cur as usize].outstanding > 0 {
            return false;
        }
        self.owner[s] = client;
        true
    }

    /// Clients holding a token.
    pub fn registered(&self) -> usize {
        self.clients.iter().filter(|c| c.token.is_some()).count()
    }

    /// Sends what client `c`'s link has to send, at once (one socket per client: there is
    /// nothing to batch across).
    fn pump(&mut self, c: u32) {
        let cl = &mut self.clients[c as usize];
        while let Some(d) = cl.link.poll_transmit() {
            match self.socks[cl.sock as usize].send(&d) {
                Ok(_) => self.c.datagrams_out += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.backlog.push_back((c, d)),
                // ECONNREFUSED (an earlier datagram met a closed port) and the like: lost,
                // like on the wire.
                Err(_) => self.c.send_failed += 1,
            }
        }
        while let Some(e) = cl.link.poll_event() {
            match e {
                LinkEvent::Ready { binding, .. } => {
                    cl.binding = Some(binding);
                    self.c.handshakes += 1;
                }
                LinkEvent::Refused(_) => self.c.refused += 1,
            }
        }
    }

    /// Hands one control message of client `c` to its link and sends what comes out.
    fn send(&mut self, c: u32, now: Instant, bytes: Vec<u8>) {
        self.clients[c as usize].link.send(now, bytes);
        self.pump(c);
    }

    /// Sends again what sockets refused earlier.
    pub fn flush(&mut self) {
        for _ in 0..self.backlog.len() {
            let Some((c, d)) = self.backlog.pop_front() else {
                break;
            };
            let s = self.clients[c as usize].sock as usize;
            match self.socks[s].send(&d) {
                Ok(_) => self.c.datagrams_out += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.backlog.push_back((c, d)),
                Err(_) => self.c.send_failed += 1,
            }
        }
    }

    /// Sends a request of `client` and tracks it until answered or given up. A request
    /// that does not encode is a bug of the generator: it ends the run, since the
    /// figures would not count it.
    fn request(
        &mut self,
        client: u32,
        kind: Kind,
        make: impl FnOnce(ReqId) -> Message,
    ) -> anyhow::Result<()> {
        let req = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        let bytes = make(req).encode().with_context(|| {
            let name = &self.clients[client as usize].name;
            format!("cannot encode the {kind:?} request of client {name}")
        })?;
        let now = Instant::now();
        self.clients[client as usize].outstanding += 1;
        self.inflight += 1;
        self.c.requests += 1;
        self.send(client, now, bytes.clone());
        self.pending.insert(
            req,
            Pending {
                client,
                kind,
                first: now,
                last: now,
                tries: 0,
                bytes,
            },
        );
        Ok(())
    }

    /// One turn of the event loop: send what sockets refused before, wait up to
    /// `timeout_ms` for datagrams, handle them, retransmit what timed out. Fails only on
    /// a message that does not encode.
    pub fn turn(&mut self, timeout_ms: u16) -> anyhow::Result<()> {
        self.flush();
        let mut ready = std::mem::take(&mut self.ready);
        self.epoll.wait(timeout_ms, &mut ready);
        let received = ready
            .iter()
            .try_for_each(|&s| self.receive(self.owner[s as usize]));
        // The buffer goes back even on error: it is reused every turn.
        self.ready = ready;
        received?;
        let now = Instant::now();
        if now.duration_since(self.last_timeout_check) >= TIMEOUT_CHECK {
            self.last_timeout_check = now;
            self.check_timeouts(now);
        }
        self.flush();
        Ok(())
    }

    /// Reads and handles what client `c`'s socket has queued, in batches.
    fn receive(&mut self, c: u32) -> anyhow::Result<()> {
        let mut opened = std::mem::take(&mut self.opened);
        let r = self.receive_into(c, &mut opened);
        opened.clear();
        self.opened = opened;
        r
    }

    fn receive_into(&mut self, c: u32, opened: &mut Vec<Vec<u8>>) -> anyhow::Result<()> {
        // Bounded per socket and turn, so other sockets are not starved.
        for _ in 0..4 {
            let now = Instant::now();
            let cl = &mut self.clients[c as usize];
            let n = self.rb.recv(self.socks[cl.sock as usize].as_fd());
            for i in 0..n {
                match cl.link.handle(now, self.rb.get(i)) {
                    Some(m) => opened.push(m),
                    // Handshake answers, or dropped by the channel.
                    None => self.c.channel_packets += 1,
                }
            }
            self.c.datagrams_in += n as u64;
            // The handshake may have finished: what waited for it goes out now.
            self.pump(c);
            for m in opened.drain(..) {
                match Message::decode(&m) {
                    Ok(m) => self.handle(c, now, m)?,
                    Err(_) => self.c.malformed += 1,
                }
            }
            if n < RECV_BATCH {
                break;
            }
        }
        Ok(())
    }

    /// A reply to `req` arrived: the request is done (`None` if late or duplicated).
    fn complete(&mut self, req: ReqId, now: Instant) -> Option<Pending> {
        let Some(p) = self.pending.remove(&req) else {
            self.c.late_replies += 1;
            return None;
        };
        self.done(p.client);
        if self.record_rtt {
            let us = now.saturating_duration_since(p.first).as_micros();
            self.rtt_us.push(us.min(u32::MAX as u128) as u32);
        }
        Some(p)
    }

    /// A request of `client` is over (answered or given up).
    fn done(&mut self, client: u32) {
        let cl = &mut self.clients[client as usize];
        cl.outstanding = cl.outstanding.saturating_sub(1);
        self.inflight = self.inflight.saturating_sub(1);
        if cl.outstanding == 0
            && let Some(q) = self.idle_q.as_mut()
        {
            q.push_back(client);
        }
    }

    /// Dispatches one control message that client `c`'s link opened.
    fn handle(&mut self, c: u32, now: Instant, msg: Message) -> anyhow::Result<()> {
        match msg {
            Message::Challenge { req, nonce } => {
                if let Some(p) = self.complete(req, now) {
                    self.c.challenges += 1;
                    if p.kind == Kind::Register {
                        self.prove(p.client, nonce)?;
                    } else {
                        self.c.unexpected += 1;
                    }
                }
            }
            Message::Welcome {
                req,
                token,
                version,
                ..
            } => {
                self.saw_version(c, version);
                if let Some(p) = self.complete(req, now) {
                    self.c.welcomes += 1;
                    self.clients[p.client as usize].token = Some(token);
                    self.welcomed_after_move(p.client, now);
                    self.send_record(p.client)?;
                    if let Some(k) = self.offer_after_welcome {
                        let c = p.client;
                        let files = (0..k).map(|k| format!("file-{c}-{k}.dat")).collect();
                        self.offer(c, files, Kind::Offer)?;
                    }
                }
            }
            Message::Ack { req, version } => {
                self.saw_version(c, version);
                if let Some(p) = self.complete(req, now) {
                    self.c.acks += 1;
                    match p.kind {
                        Kind::Heartbeat => self.c.heartbeat_acks += 1,
                        Kind::Offer => {
                            self.c.offer_acks += 1;
                            self.send_record(p.client)?;
                        }
                        Kind::PropOffer => {
                            self.c.offer_acks += 1;
                            if let Some(r) = self.prop.as_mut() {
                                r.acked_at = Some(now);
                            }
                            self.send_record(p.client)?;
                        }
                        Kind::Record => self.c.record_acks += 1,
                        Kind::Register | Kind::RegisterProof => self.c.unexpected += 1,
                    }
                }
            }
            Message::Rejected { req, reason } => {
                if let Some(p) = self.complete(req, now) {
                    self.c.rejected += 1;
                    match reason {
                        Reject::NameInUse => self.c.rejected_name_in_use += 1,
                        Reject::InvalidName | Reject::BadProof | Reject::Unreachable => {
                            self.c.rejected_invalid += 1
                        }
                        Reject::NotRegistered => self.c.rejected_not_registered += 1,
                        Reject::LimitExceeded => self.c.rejected_limit += 1,
                        Reject::RateLimited => self.c.rejected_rate_limited += 1,
                    }
                    // A proof signed over a session the link has since replaced (it
                    // handshook again on a retransmission): register again in the new one.
                    let cl = &self.clients[p.client as usize];
                    if p.kind == Kind::RegisterProof
                        && reason == Reject::BadProof
                        && cl.register_attempts < REGISTER_ATTEMPTS
                    {
                        self.register(p.client)?;
                    }
                }
            }
            Message::Table {
                from,
                to,
                part,
                parts,
                items,
            } => {
                let id = PartId {
                    from,
                    to,
                    part,
                    parts,
                };
                self.on_table(c, now, id, &items)?;
            }
            _ => self.c.unexpected += 1,
        }
        Ok(())
    }

    /// Retransmits requests unanswered for the retry interval (through the link again);
    /// gives up after the policy's retries.
    fn check_timeouts(&mut self, now: Instant) {
        let due: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last) >= self.retry.interval)
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            let Some(p) = self.pending.get_mut(&req) else {
                continue;
            };
            if p.tries < self.retry.retries {
                p.tries += 1;
                p.last = now;
                self.c.retransmits += 1;
                let (client, bytes) = (p.client, p.bytes.clone());
                self.send(client, now, bytes);
            } else if let Some(p) = self.pending.remove(&req) {
                self.c.gave_up += 1;
                self.done(p.client);
                self.gave_up_on_server(p.client);
            }
        }
    }

    /// Runs turns until `done` or `timeout`; true if `done`.
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.turn(left.as_millis().clamp(0, 5) as u16)?;
        }
    }

    /// Forgets requests still unanswered (end of a phase); returns how many.
    pub fn abandon_pending(&mut self) -> u64 {
        let n = self.pending.len() as u64;
        for (_, p) in self.pending.drain() {
            self.clients[p.client as usize].outstanding = 0;
        }
        self.inflight = 0;
        n
    }

    /// How long a sync waits with no table part arriving before the server counts as
    /// done retransmitting: longer than its retransmission interval.
    pub fn quiet(&self) -> Duration {
        self.retry.interval + QUIET_MARGIN
    }

    /// No request awaits a reply.
    pub fn idle(&self) -> bool {
        self.pending.is_empty()
    }
}

#[path = "engine/failover.rs"]
pub mod failover;
#[path = "engine/requests.rs"]
mod requests;

#[cfg(test)]
#[path = "engine/tests.rs"]
mod tests;
