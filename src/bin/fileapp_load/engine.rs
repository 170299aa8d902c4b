//! The simulation engine: many simulated clients over a few UDP sockets, speaking the
//! control protocol directly with [`Message`], and the one-thread loop that sends their
//! requests, receives and dispatches replies and pushes, and retransmits.
//!
//! Clients share sockets (the server only checks that a token comes from the address that
//! registered it). Replies to requests are matched by request id; table parts are handed
//! out by [`super::table`].

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use fileapp::proto::{FileEntry, Message, Reject, ReqId, Token};
use fileapp::reliable::RetryPolicy;

use super::counters::Counters;
use super::net::{OutQueue, Poller, RECV_BATCH, RecvBatch, connected_socket};
use super::table::{Asm, PartId};

/// How much longer than the server's retransmission interval of table parts a sync
/// waits without any part before it counts the server as done retransmitting.
const QUIET_MARGIN: Duration = Duration::from_millis(100);
/// How often pending requests are checked for retransmission: often enough next to
/// the retry interval, rarely enough not to scan them every turn.
const TIMEOUT_CHECK: Duration = Duration::from_millis(20);

/// What a pending request is, so its reply is counted under the right head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Register,
    Heartbeat,
    Offer,
    /// The offer of a propagation round.
    PropOffer,
}

/// A request awaiting its reply, with the bytes to send again.
struct Pending {
    client: u32,
    kind: Kind,
    first: Instant,
    last: Instant,
    tries: u32,
    bytes: Vec<u8>,
}

/// One simulated client: its registration and the table it holds.
pub struct Client {
    pub name: String,
    pub sock: u32,
    instance: u64,
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
}

/// One UDP socket, its send queue and the clients sharing it.
pub struct Sock {
    udp: UdpSocket,
    pub out: OutQueue,
    pub clients: Vec<u32>,
    pub inflight: u32,
    pub cursor: usize,
    /// Duplicate parts (to, part) acknowledged lately, and when: one retransmission
    /// round brings one copy per client missing it, all acknowledged by the first.
    pub dup_acked: HashMap<(u64, u16), Instant>,
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

/// All simulated clients, their sockets, and what they are waiting for.
pub struct Sim {
    pub socks: Vec<Sock>,
    pub clients: Vec<Client>,
    pending: HashMap<ReqId, Pending>,
    next_req: ReqId,
    epoll: Poller,
    rb: RecvBatch,
    ready: Vec<u64>,
    msgs: Vec<Message>,
    pub c: Counters,
    /// Retransmission as real clients do it, and as the server pushes table parts: the
    /// crate's default policy.
    pub retry: RetryPolicy,
    /// Highest table version any reply or part named.
    pub max_version: Vec<u64>,
    pub prop: Option<PropRound>,
    /// Round-trip times of acknowledged requests, in µs, while recording.
    pub rtt_us: Vec<u32>,
    pub record_rtt: bool,
    /// Memory phase: offer this many files right after each welcome.
    pub offer_after_welcome: Option<u32>,
    last_timeout_check: Instant,
    /// When the last table part arrived.
    pub last_table_at: Instant,
}

impl Sim {
    /// `n` clients named `<prefix><i>`, spread round-robin over `sockets` sockets, the
    /// sockets round-robin over `servers` (several servers on one database).
    pub fn new(
        servers: &[SocketAddr],
        n: usize,
        sockets: usize,
        prefix: &str,
    ) -> anyhow::Result<Sim> {
        anyhow::ensure!(!servers.is_empty(), "no server to talk to");
        let sockets = sockets.clamp(servers.len(), n.max(servers.len()));
        let mut epoll = Poller::new()?;
        let mut socks = Vec::with_capacity(sockets);
        for i in 0..sockets {
            let udp = connected_socket(servers[i % servers.len()])?;
            epoll.add(&udp, i as u64)?;
            socks.push(Sock {
                udp,
                out: OutQueue::default(),
                clients: Vec::new(),
                inflight: 0,
                cursor: 0,
                dup_acked: HashMap::new(),
            });
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let clients = (0..n)
            .map(|i| {
                let s = i % sockets;
                socks[s].clients.push(i as u32);
                Client {
                    name: format!("{prefix}{i}"),
                    sock: s as u32,
                    instance: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64,
                    token: None,
                    version: 0,
                    asm: None,
                    prop_seen: 0,
                    outstanding: 0,
                    heartbeated: false,
                }
            })
            .collect();
        Ok(Sim {
            socks,
            clients,
            pending: HashMap::new(),
            next_req: seed << 16,
            epoll,
            rb: RecvBatch::default(),
            ready: Vec::new(),
            msgs: Vec::new(),
            c: Counters::default(),
            retry: RetryPolicy::default(),
            max_version: vec![0; servers.len()],
            prop: None,
            rtt_us: Vec::new(),
            record_rtt: false,
            offer_after_welcome: None,
            last_timeout_check: Instant::now(),
            last_table_at: Instant::now(),
        })
    }

    /// Sockets actually bound (the socket count in the report).
    pub fn local_addrs(&self) -> usize {
        self.socks
            .iter()
            .filter(|s| s.udp.local_addr().is_ok())
            .count()
    }

    /// Clients holding a token.
    pub fn registered(&self) -> usize {
        self.clients.iter().filter(|c| c.token.is_some()).count()
    }

    /// Queues a request of `client` and tracks it until answered or given up. A request
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
        let cl = &mut self.clients[client as usize];
        cl.outstanding += 1;
        let sock = &mut self.socks[cl.sock as usize];
        sock.inflight += 1;
        sock.out.push_bytes(&bytes);
        self.c.requests += 1;
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

    /// Registers `client` (keyless, a made-up TCP port).
    pub fn register(&mut self, client: u32) -> anyhow::Result<()> {
        let cl = &self.clients[client as usize];
        let (name, instance) = (cl.name.clone(), cl.instance);
        let tcp_port = 10_000 + (client % 50_000) as u16;
        self.request(client, Kind::Register, |req| Message::Register {
            req,
            name,
            instance,
            tcp_port,
            keep_offers: false,
            advertise: None,
            // Keyless registrations: the load measures the index, not Ed25519.
            key: None,
            proof: None,
            evict: false,
        })
    }

    /// Heartbeats with the table version held; nothing for a client not registered.
    pub fn heartbeat(&mut self, client: u32) -> anyhow::Result<()> {
        let cl = &mut self.clients[client as usize];
        let (Some(token), table_version) = (cl.token, cl.version) else {
            return Ok(());
        };
        cl.heartbeated = true;
        self.request(client, Kind::Heartbeat, |req| Message::Heartbeat {
            req,
            token,
            table_version,
        })
    }

    /// Offers `files`; nothing for a client not registered.
    pub fn offer(&mut self, client: u32, files: Vec<String>, kind: Kind) -> anyhow::Result<()> {
        let Some(token) = self.clients[client as usize].token else {
            return Ok(());
        };
        let files = files.into_iter().map(FileEntry::named).collect();
        self.request(client, kind, |req| Message::Offer { req, token, files })
    }

    /// Sends everything queued.
    pub fn flush(&mut self) {
        for s in &mut self.socks {
            if !s.out.is_empty() {
                let (sent, failed) = s.out.flush(s.udp.as_fd());
                self.c.datagrams_out += sent;
                self.c.send_failed += failed;
            }
        }
    }

    /// One turn of the event loop: send what is queued, wait up to `timeout_ms` for
    /// datagrams, handle them, retransmit what timed out. Fails only on a message that
    /// does not encode.
    pub fn turn(&mut self, timeout_ms: u16) -> anyhow::Result<()> {
        self.flush();
        let mut ready = std::mem::take(&mut self.ready);
        self.epoll.wait(timeout_ms, &mut ready);
        let mut msgs = std::mem::take(&mut self.msgs);
        let received = ready
            .iter()
            .try_for_each(|&s| self.receive(s as usize, &mut msgs));
        // Buffers go back even on error: they are reused every turn.
        self.ready = ready;
        self.msgs = msgs;
        received?;
        let now = Instant::now();
        if now.duration_since(self.last_timeout_check) >= TIMEOUT_CHECK {
            self.last_timeout_check = now;
            self.check_timeouts(now);
        }
        self.flush();
        Ok(())
    }

    /// Reads and handles what socket `s` has queued, in batches; `msgs` is scratch.
    fn receive(&mut self, s: usize, msgs: &mut Vec<Message>) -> anyhow::Result<()> {
        // Bounded per socket and turn, so sends are not starved.
        for _ in 0..8 {
            let n = self.rb.recv(self.socks[s].udp.as_fd());
            for i in 0..n {
                match Message::decode(self.rb.get(i)) {
                    Ok(m) => msgs.push(m),
                    Err(_) => self.c.malformed += 1,
                }
            }
            self.c.datagrams_in += n as u64;
            let now = Instant::now();
            for m in msgs.drain(..) {
                self.handle(s, now, m)?;
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
        let cl = &mut self.clients[p.client as usize];
        cl.outstanding = cl.outstanding.saturating_sub(1);
        let s = &mut self.socks[cl.sock as usize];
        s.inflight = s.inflight.saturating_sub(1);
        if self.record_rtt {
            let us = now.saturating_duration_since(p.first).as_micros();
            self.rtt_us.push(us.min(u32::MAX as u128) as u32);
        }
        Some(p)
    }

    /// Dispatches one datagram received on socket `s`.
    fn handle(&mut self, s: usize, now: Instant, msg: Message) -> anyhow::Result<()> {
        match msg {
            Message::Welcome {
                req,
                token,
                version,
                ..
            } => {
                self.note_version(s, version);
                if let Some(p) = self.complete(req, now) {
                    self.c.welcomes += 1;
                    self.clients[p.client as usize].token = Some(token);
                    if let Some(k) = self.offer_after_welcome {
                        let c = p.client;
                        let files = (0..k).map(|k| format!("file-{c}-{k}.dat")).collect();
                        self.offer(c, files, Kind::Offer)?;
                    }
                }
            }
            Message::Ack { req, version } => {
                self.note_version(s, version);
                if let Some(p) = self.complete(req, now) {
                    self.c.acks += 1;
                    match p.kind {
                        Kind::Heartbeat => self.c.heartbeat_acks += 1,
                        Kind::Offer => self.c.offer_acks += 1,
                        Kind::PropOffer => {
                            self.c.offer_acks += 1;
                            if let Some(r) = self.prop.as_mut() {
                                r.acked_at = Some(now);
                            }
                        }
                        Kind::Register => self.c.unexpected += 1,
                    }
                }
            }
            Message::Rejected { req, reason } => {
                if self.complete(req, now).is_some() {
                    self.c.rejected += 1;
                    match reason {
                        Reject::NameInUse => self.c.rejected_name_in_use += 1,
                        Reject::InvalidName | Reject::BadProof => self.c.rejected_invalid += 1,
                        Reject::NotRegistered => self.c.rejected_not_registered += 1,
                        Reject::LimitExceeded => self.c.rejected_limit += 1,
                        Reject::RateLimited => self.c.rejected_rate_limited += 1,
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
                self.on_table(s, now, id, &items)?;
            }
            _ => self.c.unexpected += 1,
        }
        Ok(())
    }

    /// Retransmits requests unanswered for the retry interval; gives up after the
    /// policy's retries.
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
                let s = self.clients[p.client as usize].sock as usize;
                self.socks[s].out.push_bytes(&p.bytes);
            } else if let Some(p) = self.pending.remove(&req) {
                self.c.gave_up += 1;
                let cl = &mut self.clients[p.client as usize];
                cl.outstanding = cl.outstanding.saturating_sub(1);
                let s = &mut self.socks[cl.sock as usize];
                s.inflight = s.inflight.saturating_sub(1);
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
            let cl = &mut self.clients[p.client as usize];
            cl.outstanding = 0;
            self.socks[cl.sock as usize].inflight = 0;
        }
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

    /// Every registered client holds the newest table version seen from its server,
    /// none mid-delta.
    pub fn in_sync(&self) -> bool {
        self.clients.iter().all(|c| {
            c.token.is_none() || (c.version >= self.newest(c.sock as usize) && c.asm.is_none())
        })
    }

    /// Each server numbers its own table: versions are kept per server.
    pub fn note_version(&mut self, sock: usize, v: u64) {
        let n = self.max_version.len();
        let m = &mut self.max_version[sock % n];
        *m = (*m).max(v);
    }

    /// The newest version seen from the server of socket `sock`.
    pub fn newest(&self, sock: usize) -> u64 {
        self.max_version[sock % self.max_version.len()]
    }
}

#[cfg(test)]
#[path = "engine/tests.rs"]
mod tests;
