//! Many simulated clients over a few UDP sockets, speaking the control protocol directly
//! with [`Message`], and the load phases built on them.
//!
//! Clients share sockets (the server only checks that a token comes from the address that
//! registered it). Replies to requests are matched by request id. Table parts carry no
//! token, so a part arriving on a shared socket is given to a client of that socket that
//! expects it (same `from` as its table version, part not yet held); copies of one part
//! for clients at the same version are identical, so any such client may take it. A part
//! nobody expects is a retransmission of something already held: it is acknowledged for
//! every client of the socket that holds that version, as a real client would.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use fileapp::proto::{FileEntry, Item, Message, Reject, ReqId, Token};
use serde::Serialize;

use super::net::{Epoll, OutQueue, RECV_BATCH, RecvBatch, connected_socket};

/// Retransmission as real clients do it: every 500 ms, 3 times, then give up.
pub const RETRY: Duration = Duration::from_millis(500);
pub const RETRIES: u8 = 3;
/// Socket buffers asked for (the kernel caps them at net.core.*mem_max).
const SOCK_BUF: usize = 8 << 20;
/// A duplicate table part is acknowledged (for every client of its socket that holds
/// it) at most once per this gap; the server retransmits every 500 ms.
const DUP_ACK_GAP: Duration = Duration::from_millis(100);
/// Longer than the server's retransmission interval of table parts.
const QUIET: Duration = Duration::from_millis(600);

macro_rules! counters {
    ($($f:ident),* $(,)?) => {
        /// What the simulated clients sent and received.
        #[derive(Debug, Default, Clone, Copy, Serialize)]
        pub struct Counters { $(pub $f: u64),* }
        impl Counters {
            pub fn since(&self, b: &Counters) -> Counters {
                Counters { $($f: self.$f.saturating_sub(b.$f)),* }
            }
        }
    };
}

counters!(
    datagrams_out,
    datagrams_in,
    send_failed,
    malformed,
    requests,
    retransmits,
    gave_up,
    late_replies,
    welcomes,
    acks,
    heartbeat_acks,
    offer_acks,
    rejected,
    rejected_name_in_use,
    rejected_invalid,
    rejected_not_registered,
    rejected_limit,
    rejected_rate_limited,
    table_parts,
    table_parts_dup,
    table_parts_ignored,
    table_acks_sent,
    deltas_applied,
    unexpected,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Register,
    Heartbeat,
    Offer,
    /// The offer of a propagation round.
    PropOffer,
}

struct Pending {
    client: u32,
    kind: Kind,
    first: Instant,
    last: Instant,
    tries: u8,
    bytes: Vec<u8>,
}

/// A table delta being assembled.
struct Asm {
    from: u64,
    to: u64,
    parts: u16,
    have: Vec<u64>,
    missing: u16,
}

impl Asm {
    fn has(&self, part: u16) -> bool {
        self.have[part as usize / 64] & (1 << (part % 64)) != 0
    }
}

pub struct Client {
    pub name: String,
    sock: u32,
    instance: u64,
    pub token: Option<Token>,
    /// Table version held (all parts of a delta up to it received).
    pub version: u64,
    asm: Option<Asm>,
    /// Last propagation round whose file this client has seen, plus one.
    prop_seen: u32,
    /// Requests of this client awaiting a reply.
    outstanding: u16,
    /// Has sent a heartbeat (so the server pushes tables to it).
    heartbeated: bool,
}

pub struct Sock {
    udp: UdpSocket,
    fd: RawFd,
    out: OutQueue,
    clients: Vec<u32>,
    inflight: u32,
    cursor: usize,
    /// Duplicate parts (to, part) acknowledged lately, and when: one retransmission
    /// round brings one copy per client missing it, all acknowledged by the first.
    dup_acked: HashMap<(u64, u16), Instant>,
}

struct PropRound {
    file: String,
    round: u32,
    t0: Instant,
    remaining: usize,
    per_client_us: Vec<u32>,
    acked_at: Option<Instant>,
}

pub struct Sim {
    pub socks: Vec<Sock>,
    pub clients: Vec<Client>,
    pending: HashMap<ReqId, Pending>,
    next_req: ReqId,
    epoll: Epoll,
    rb: RecvBatch,
    ready: Vec<u64>,
    msgs: Vec<Message>,
    pub c: Counters,
    /// Highest table version any reply or part named.
    pub max_version: u64,
    prop: Option<PropRound>,
    /// Round-trip times of acknowledged requests, in µs, while recording.
    pub rtt_us: Vec<u32>,
    record_rtt: bool,
    /// Memory phase: offer this many files right after each welcome.
    offer_after_welcome: Option<u32>,
    last_timeout_check: Instant,
    /// When the last table part arrived.
    pub last_table_at: Instant,
}

impl Sim {
    /// `n` clients named `<prefix><i>`, spread round-robin over `sockets` sockets.
    pub fn new(server: SocketAddr, n: usize, sockets: usize, prefix: &str) -> anyhow::Result<Sim> {
        let sockets = sockets.clamp(1, n.max(1));
        let mut epoll = Epoll::new()?;
        let mut socks = Vec::with_capacity(sockets);
        for i in 0..sockets {
            let udp = connected_socket(server, SOCK_BUF)?;
            epoll.add(&udp, i as u64)?;
            socks.push(Sock {
                fd: udp.as_raw_fd(),
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
            max_version: 0,
            prop: None,
            rtt_us: Vec::new(),
            record_rtt: false,
            offer_after_welcome: None,
            last_timeout_check: Instant::now(),
            last_table_at: Instant::now(),
        })
    }

    pub fn local_addrs(&self) -> usize {
        self.socks
            .iter()
            .filter(|s| s.udp.local_addr().is_ok())
            .count()
    }

    pub fn registered(&self) -> usize {
        self.clients.iter().filter(|c| c.token.is_some()).count()
    }

    fn request(&mut self, client: u32, kind: Kind, make: impl FnOnce(ReqId) -> Message) -> bool {
        let req = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        let Ok(bytes) = make(req).encode() else {
            return false;
        };
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
        true
    }

    pub fn register(&mut self, client: u32) -> bool {
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

    pub fn heartbeat(&mut self, client: u32) -> bool {
        let cl = &mut self.clients[client as usize];
        let (Some(token), table_version) = (cl.token, cl.version) else {
            return false;
        };
        cl.heartbeated = true;
        self.request(client, Kind::Heartbeat, |req| Message::Heartbeat {
            req,
            token,
            table_version,
        })
    }

    pub fn offer(&mut self, client: u32, files: Vec<String>, kind: Kind) -> bool {
        let Some(token) = self.clients[client as usize].token else {
            return false;
        };
        let files = files.into_iter().map(FileEntry::named).collect();
        self.request(client, kind, |req| Message::Offer { req, token, files })
    }

    /// Sends everything queued.
    pub fn flush(&mut self) {
        for s in &mut self.socks {
            if !s.out.is_empty() {
                let (sent, failed) = s.out.flush(s.fd);
                self.c.datagrams_out += sent;
                self.c.send_failed += failed;
            }
        }
    }

    /// One turn of the event loop: send what is queued, wait up to `timeout_ms` for
    /// datagrams, handle them, retransmit what timed out.
    pub fn turn(&mut self, timeout_ms: i32) {
        self.flush();
        let mut ready = std::mem::take(&mut self.ready);
        self.epoll.wait(timeout_ms, &mut ready);
        let mut msgs = std::mem::take(&mut self.msgs);
        for &s in &ready {
            let s = s as usize;
            // Bounded per socket and turn, so sends are not starved.
            for _ in 0..8 {
                let n = self.rb.recv(self.socks[s].fd);
                for i in 0..n {
                    match Message::decode(self.rb.get(i)) {
                        Ok(m) => msgs.push(m),
                        Err(_) => self.c.malformed += 1,
                    }
                }
                self.c.datagrams_in += n as u64;
                let now = Instant::now();
                for m in msgs.drain(..) {
                    self.handle(s, now, m);
                }
                if n < RECV_BATCH {
                    break;
                }
            }
        }
        self.ready = ready;
        self.msgs = msgs;
        let now = Instant::now();
        if now.duration_since(self.last_timeout_check) >= Duration::from_millis(20) {
            self.last_timeout_check = now;
            self.check_timeouts(now);
        }
        self.flush();
    }

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

    fn handle(&mut self, s: usize, now: Instant, msg: Message) {
        match msg {
            Message::Welcome {
                req,
                token,
                version,
                ..
            } => {
                self.max_version = self.max_version.max(version);
                if let Some(p) = self.complete(req, now) {
                    self.c.welcomes += 1;
                    self.clients[p.client as usize].token = Some(token);
                    if let Some(k) = self.offer_after_welcome {
                        let c = p.client;
                        let files = (0..k).map(|k| format!("file-{c}-{k}.dat")).collect();
                        self.offer(c, files, Kind::Offer);
                    }
                }
            }
            Message::Ack { req, version } => {
                self.max_version = self.max_version.max(version);
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
            } => self.on_table(s, now, from, to, part, parts, &items),
            _ => self.c.unexpected += 1,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_table(
        &mut self,
        s: usize,
        now: Instant,
        from: u64,
        to: u64,
        part: u16,
        parts: u16,
        items: &[Item],
    ) {
        self.c.table_parts += 1;
        self.last_table_at = now;
        if parts == 0 || part >= parts || from >= to {
            self.c.table_parts_ignored += 1;
            return;
        }
        self.max_version = self.max_version.max(to);
        // Which client of this socket expects this part? Prefer one already assembling
        // this delta, then one idle at `from`, then one assembling an older delta.
        let (mut assembling, mut idle, mut older) = (None, None, None);
        for &c in &self.socks[s].clients {
            let cl = &self.clients[c as usize];
            if cl.token.is_none() {
                continue;
            }
            match &cl.asm {
                Some(a) if a.from == from && a.to == to && a.parts == parts && !a.has(part) => {
                    assembling = Some(c);
                    break;
                }
                Some(a) if a.from == from && a.to == to && a.parts == parts => {}
                Some(a) if cl.version == from && a.to < to => {
                    older = older.or(Some(c));
                }
                None if cl.version == from && idle.is_none() => idle = Some(c),
                _ => {}
            }
        }
        let Some(c) = assembling.or(idle).or(older) else {
            // A copy nobody is missing: a retransmission (or a push that crossed a
            // heartbeat). Acknowledge it for every client holding that version.
            self.c.table_parts_dup += 1;
            let sock = &mut self.socks[s];
            if sock
                .dup_acked
                .get(&(to, part))
                .is_some_and(|t| now.saturating_duration_since(*t) < DUP_ACK_GAP)
            {
                return;
            }
            if sock.dup_acked.len() >= 4096 {
                sock.dup_acked
                    .retain(|_, t| now.saturating_duration_since(*t) < DUP_ACK_GAP);
            }
            sock.dup_acked.insert((to, part), now);
            for &c in &sock.clients {
                let cl = &self.clients[c as usize];
                if let (Some(token), true) = (cl.token, cl.version >= to) {
                    sock.out.push(&Message::TableAck { token, to, part });
                    self.c.table_acks_sent += 1;
                }
            }
            return;
        };
        let cl = &mut self.clients[c as usize];
        let fresh = !matches!(&cl.asm, Some(a) if a.from == from && a.to == to && a.parts == parts);
        if fresh {
            cl.asm = Some(Asm {
                from,
                to,
                parts,
                have: vec![0; (parts as usize).div_ceil(64)],
                missing: parts,
            });
        }
        let done = match cl.asm.as_mut() {
            Some(a) => {
                a.have[part as usize / 64] |= 1 << (part % 64);
                a.missing -= 1;
                a.missing == 0
            }
            None => false,
        };
        if done {
            cl.asm = None;
            cl.version = to;
            self.c.deltas_applied += 1;
        }
        if let Some(token) = cl.token {
            self.socks[s]
                .out
                .push(&Message::TableAck { token, to, part });
            self.c.table_acks_sent += 1;
        }
        if let Some(r) = self.prop.as_mut()
            && cl.prop_seen != r.round + 1
            && items
                .iter()
                .any(|i| matches!(i, Item::File { file, .. } if *file == r.file))
        {
            cl.prop_seen = r.round + 1;
            r.remaining = r.remaining.saturating_sub(1);
            let us = now.saturating_duration_since(r.t0).as_micros();
            r.per_client_us.push(us.min(u32::MAX as u128) as u32);
        }
    }

    /// Retransmits requests unanswered for [`RETRY`]; gives up after [`RETRIES`].
    fn check_timeouts(&mut self, now: Instant) {
        let due: Vec<ReqId> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last) >= RETRY)
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            let Some(p) = self.pending.get_mut(&req) else {
                continue;
            };
            if p.tries < RETRIES {
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
    fn run_until(&mut self, timeout: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.turn(left.as_millis().clamp(0, 5) as i32);
        }
    }

    /// Forgets requests still unanswered (end of a phase); returns how many.
    fn abandon_pending(&mut self) -> u64 {
        let n = self.pending.len() as u64;
        for (_, p) in self.pending.drain() {
            let cl = &mut self.clients[p.client as usize];
            cl.outstanding = 0;
            self.socks[cl.sock as usize].inflight = 0;
        }
        n
    }

    fn in_sync(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.token.is_none() || (c.version >= self.max_version && c.asm.is_none()))
    }
}

// ---- phases ---------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Serialize)]
pub struct RegReport {
    pub clients: usize,
    pub welcomed: usize,
    pub rejected: u64,
    pub seconds: f64,
    pub per_sec: f64,
    /// Register datagrams sent again after 500 ms without a reply.
    pub retransmits: u64,
    /// Clients that never got an answer (after 3 retries).
    pub unanswered: u64,
    pub counters: Counters,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct SyncReport {
    pub in_sync: bool,
    pub seconds: f64,
    pub version: u64,
    pub counters: Counters,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct TputReport {
    pub seconds: f64,
    pub window_per_socket: u32,
    pub acked: u64,
    pub acked_per_sec: f64,
    pub rtt_p50_us: u32,
    pub rtt_p99_us: u32,
    pub rtt_max_us: u32,
    pub retransmits: u64,
    pub gave_up: u64,
    /// Table parts received / TableAcks sent per second during the window.
    pub table_parts_per_sec: f64,
    pub table_acks_per_sec: f64,
    /// All datagrams the clients sent / received per second.
    pub datagrams_out_per_sec: f64,
    pub datagrams_in_per_sec: f64,
    /// Left unanswered when the 2 s drain after the window ended.
    pub unanswered_after_drain: u64,
    pub counters: Counters,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PropReport {
    pub rounds: u32,
    pub completed: u32,
    pub clients: usize,
    /// Time from sending the offer until the last of the N clients got a part with the
    /// file, per round.
    pub all_p50_ms: f64,
    pub all_p99_ms: f64,
    pub all_max_ms: f64,
    /// Same, per (client, round) pair.
    pub each_p50_ms: f64,
    pub each_p99_ms: f64,
    /// Time until the offer itself was acknowledged.
    pub offer_ack_p50_ms: f64,
    pub counters: Counters,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct MemLoadReport {
    pub clients: usize,
    pub welcomed: usize,
    pub offers_acked: u64,
    pub files_per_client: u32,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub retransmits: u64,
    pub gave_up: u64,
    pub counters: Counters,
}

pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Sim {
    /// Phase 1: every client sends Register at once; retries like a real client.
    pub fn phase_register(&mut self) -> RegReport {
        let before = self.c;
        let t0 = Instant::now();
        for c in 0..self.clients.len() as u32 {
            self.register(c);
        }
        self.flush();
        let mut last_answer = t0;
        let limit = RETRY * (RETRIES as u32 + 1) + Duration::from_millis(200);
        let deadline = t0 + limit;
        while !self.pending.is_empty() && Instant::now() < deadline {
            let answered = self.c.welcomes + self.c.rejected;
            self.turn(5);
            if self.c.welcomes + self.c.rejected != answered {
                last_answer = Instant::now();
            }
        }
        let unanswered = self.abandon_pending();
        let c = self.c.since(&before);
        let seconds = last_answer.duration_since(t0).as_secs_f64();
        let welcomed = self.registered();
        RegReport {
            clients: self.clients.len(),
            welcomed,
            rejected: c.rejected,
            seconds,
            per_sec: if seconds > 0.0 {
                welcomed as f64 / seconds
            } else {
                0.0
            },
            retransmits: c.retransmits,
            unanswered: unanswered + c.gave_up,
            counters: c,
        }
    }

    /// Between phases: every registered client heartbeats with its table version and
    /// assembles the pushes it gets, until all hold the newest version and no table part
    /// came for [`QUIET`] (the server is done retransmitting). Clients still behind after
    /// a second heartbeat again (as real ones would, later).
    pub fn sync(&mut self, timeout: Duration) -> SyncReport {
        let before = self.c;
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        let mut next_nudge = t0;
        let mut ok = false;
        while Instant::now() < deadline {
            let now = Instant::now();
            if now >= next_nudge {
                next_nudge = now + Duration::from_secs(1);
                let max = self.max_version;
                for c in 0..self.clients.len() as u32 {
                    let cl = &self.clients[c as usize];
                    if cl.token.is_some()
                        && cl.outstanding == 0
                        && (!cl.heartbeated || cl.version < max || cl.asm.is_some())
                    {
                        self.heartbeat(c);
                    }
                }
            }
            self.turn(5);
            // In sync, and the server has stopped retransmitting to us.
            if self.pending.is_empty() && self.in_sync() && self.last_table_at.elapsed() >= QUIET {
                ok = true;
                break;
            }
        }
        // Late heartbeat ACKs do not matter here.
        self.abandon_pending();
        SyncReport {
            in_sync: ok,
            seconds: t0.elapsed().as_secs_f64(),
            version: self.max_version,
            counters: self.c.since(&before),
        }
    }

    /// The next registered client of socket `s` with no request outstanding (a real
    /// client has at most one heartbeat in flight).
    fn next_client_on(&mut self, s: usize) -> Option<u32> {
        let sock = &mut self.socks[s];
        for _ in 0..sock.clients.len() {
            let c = sock.clients[sock.cursor % sock.clients.len()];
            sock.cursor = sock.cursor.wrapping_add(1);
            let cl = &self.clients[c as usize];
            if cl.token.is_some() && cl.outstanding == 0 {
                return Some(c);
            }
        }
        None
    }

    /// Phase 2: for `duration`, keep `window` requests outstanding per socket (at most one
    /// per client): heartbeats, and one offer of a new file every `offer_every` requests.
    pub fn phase_throughput(
        &mut self,
        duration: Duration,
        window: u32,
        offer_every: u64,
    ) -> TputReport {
        let before = self.c;
        self.rtt_us.clear();
        self.record_rtt = true;
        let t0 = Instant::now();
        let deadline = t0 + duration;
        let mut n: u64 = 0;
        while Instant::now() < deadline {
            for s in 0..self.socks.len() {
                while self.socks[s].inflight < window {
                    let Some(c) = self.next_client_on(s) else {
                        break;
                    };
                    n += 1;
                    if offer_every > 0 && n.is_multiple_of(offer_every) {
                        self.offer(c, vec![format!("load-{c}-{n}.dat")], Kind::Offer);
                    } else {
                        self.heartbeat(c);
                    }
                }
            }
            self.turn(1);
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let at_end = self.c.since(&before);
        self.record_rtt = false;
        // Drain: answers to what is still in flight (not counted in the rate).
        self.run_until(Duration::from_secs(2), |s| s.pending.is_empty());
        let unanswered = self.abandon_pending();
        let c = self.c.since(&before);
        let mut rtt = std::mem::take(&mut self.rtt_us);
        rtt.sort_unstable();
        let rate = |v: u64| v as f64 / elapsed;
        TputReport {
            seconds: elapsed,
            window_per_socket: window,
            acked: at_end.acks,
            acked_per_sec: rate(at_end.acks),
            rtt_p50_us: percentile(&rtt, 0.50),
            rtt_p99_us: percentile(&rtt, 0.99),
            rtt_max_us: rtt.last().copied().unwrap_or(0),
            retransmits: c.retransmits,
            gave_up: c.gave_up,
            table_parts_per_sec: rate(at_end.table_parts),
            table_acks_per_sec: rate(at_end.table_acks_sent),
            datagrams_out_per_sec: rate(at_end.datagrams_out),
            datagrams_in_per_sec: rate(at_end.datagrams_in),
            unanswered_after_drain: unanswered,
            counters: c,
        }
    }

    /// Phase 3: `rounds` times, one client offers a new file; time until every
    /// registered client received a table part listing it.
    pub fn phase_propagation(&mut self, rounds: u32, round_timeout: Duration) -> PropReport {
        let before = self.c;
        let n = self.registered();
        let mut all_us = Vec::new();
        let mut each_us = Vec::new();
        let mut ack_us = Vec::new();
        let mut completed = 0;
        let registered: Vec<u32> = (0..self.clients.len() as u32)
            .filter(|&c| self.clients[c as usize].token.is_some())
            .collect();
        for round in 0..rounds {
            if registered.is_empty() {
                break;
            }
            let offerer = registered[(round as usize * 7919) % registered.len()];
            let file = format!("prop-{round}.dat");
            let t0 = Instant::now();
            self.prop = Some(PropRound {
                file: file.clone(),
                round,
                t0,
                remaining: n,
                per_client_us: Vec::with_capacity(n),
                acked_at: None,
            });
            self.offer(offerer, vec![file], Kind::PropOffer);
            let done = self.run_until(round_timeout, |s| {
                s.prop.as_ref().is_some_and(|r| r.remaining == 0)
            });
            if let Some(r) = self.prop.take() {
                if done {
                    completed += 1;
                    all_us.push(r.per_client_us.iter().copied().max().unwrap_or(0));
                }
                each_us.extend(r.per_client_us);
                if let Some(a) = r.acked_at {
                    ack_us.push(a.saturating_duration_since(r.t0).as_micros() as u32);
                }
            }
            // Let the table ACKs of this round land before the next offer.
            self.run_until(Duration::from_millis(500), |s| {
                s.pending.is_empty() && s.in_sync()
            });
        }
        self.abandon_pending();
        all_us.sort_unstable();
        each_us.sort_unstable();
        ack_us.sort_unstable();
        let ms = |us: u32| us as f64 / 1000.0;
        PropReport {
            rounds,
            completed,
            clients: n,
            all_p50_ms: ms(percentile(&all_us, 0.50)),
            all_p99_ms: ms(percentile(&all_us, 0.99)),
            all_max_ms: ms(all_us.last().copied().unwrap_or(0)),
            each_p50_ms: ms(percentile(&each_us, 0.50)),
            each_p99_ms: ms(percentile(&each_us, 0.99)),
            offer_ack_p50_ms: ms(percentile(&ack_us, 0.50)),
            counters: self.c.since(&before),
        }
    }

    /// Phase 4 load: every client registers then offers `files` files, with at most
    /// `window` requests outstanding per socket; no heartbeats, so no pushes.
    pub fn phase_memory_load(
        &mut self,
        files: u32,
        window: u32,
        timeout: Duration,
    ) -> MemLoadReport {
        let before = self.c;
        self.offer_after_welcome = Some(files);
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        let total = self.clients.len();
        loop {
            let started_all = self.socks.iter().all(|s| s.cursor >= s.clients.len());
            if started_all && self.pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            for s in 0..self.socks.len() {
                while self.socks[s].inflight < window
                    && self.socks[s].cursor < self.socks[s].clients.len()
                {
                    let sock = &mut self.socks[s];
                    let c = sock.clients[sock.cursor];
                    sock.cursor += 1;
                    self.register(c);
                }
            }
            self.turn(1);
        }
        let seconds = t0.elapsed().as_secs_f64();
        self.offer_after_welcome = None;
        self.abandon_pending();
        let c = self.c.since(&before);
        MemLoadReport {
            clients: total,
            welcomed: self.registered(),
            offers_acked: c.offer_acks,
            files_per_client: files,
            seconds,
            requests_per_sec: (c.welcomes + c.acks) as f64 / seconds.max(1e-9),
            retransmits: c.retransmits,
            gave_up: c.gave_up,
            counters: c,
        }
    }
}
