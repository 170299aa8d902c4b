//! The server's table as a sans-io state machine.
//!
//! Inputs: datagrams with their source address ([`Index::handle_datagram`]) and the passing
//! of time ([`Index::handle_timeout`]), both with `now` given by the caller. Outputs:
//! datagrams to send ([`Index::poll_transmit`]), changes to persist
//! ([`Index::take_store_ops`]) and the next deadline ([`Index::poll_timeout`]).
//!
//! The driver must persist the store ops of a batch *before* sending that batch's
//! datagrams, so an acknowledged change is never lost.
//!
//! # Table versions
//! Every change takes the next table version. Each owner records the version at which its
//! header (address, online) last changed and each file the version at which it was added,
//! so "everything that changed since version v" is computed from the current state without
//! a log. A client at version `v` receives a delta `v -> current` in parts; a delta from
//! version 0 is a full snapshot of online owners.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::identity::{self, PublicKey};
use crate::proto::FileEntry;
use crate::proto::{self, Item, Message, Reject, Token};
use crate::reliable::RetryPolicy;
use crate::store::{FileRow, OwnerRecord, OwnerRow, StoreOp};

fn file_item(owner: &str, file: &str, st: &FileState) -> Item {
    Item::File {
        owner: owner.to_string(),
        file: file.to_string(),
        size: st.size,
        hash: st.hash,
    }
}

/// Tunables of the index. Defaults are the production values.
#[derive(Debug, Clone)]
pub struct Config {
    /// Heartbeat interval announced to clients.
    pub heartbeat: Duration,
    /// A client silent this long is marked offline.
    pub offline_after: Duration,
    /// Retransmission of table parts.
    pub retry: RetryPolicy,
    /// Changes within this window are pushed together.
    pub coalesce: Duration,
    /// Most files one client may offer.
    pub max_files_per_client: usize,
    /// Most online clients behind one IP address.
    pub max_clients_per_ip: usize,
    /// Datagrams per second accepted from one source address (0 = unlimited); bursts
    /// of twice that are allowed.
    pub rate_limit: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat: Duration::from_secs(10),
            offline_after: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            coalesce: Duration::from_millis(5),
            max_files_per_client: 10_000,
            max_clients_per_ip: 10_000,
            // Far above what an honest client sends (a 10,000-file offer is ~100
            // datagrams), far below what floods a server.
            rate_limit: 2_000,
        }
    }
}

/// Counters for operators and the load generator.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub datagrams_in: u64,
    pub malformed: u64,
    pub rate_limited: u64,
    pub refused: u64,
    pub registrations: u64,
    pub table_parts_sent: u64,
}

type OwnerId = usize;

/// An offered file: when it was last (re)announced, and what it was then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    ver: u64,
    size: u64,
    hash: [u8; 32],
}

/// The fields of a `Register` request, with the peer address resolved.
struct Registration {
    name: String,
    instance: u64,
    tcp_port: u16,
    keep_offers: bool,
    peer_ip: IpAddr,
    /// Proven public key, if the client registered with one.
    key: Option<PublicKey>,
    /// May take the name from an online session with the same key.
    evict: bool,
}

/// How long a registration nonce stays valid: one to two of these.
const NONCE_PERIOD: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Push {
    from: u64,
    to: u64,
    parts: Arc<Vec<Vec<u8>>>,
    unacked: BTreeSet<u16>,
    next_at: Instant,
    retries_left: u32,
}

#[derive(Debug)]
struct Owner {
    name: String,
    addr: SocketAddr,
    /// Where peers reach its TCP port.
    peer_ip: IpAddr,
    tcp_port: u16,
    online: bool,
    token: Token,
    instance: u64,
    /// Version at which the header (address, ports, online) last changed.
    ver: u64,
    /// Highest version of the header or any file: the key in `by_ver`.
    latest: u64,
    files: BTreeMap<String, FileState>,
    last_seen: Instant,
    /// The client has proven it receives at `addr` and wants tables: it sent a heartbeat
    /// or a table ACK (carrying the token it could only have read there). Only then is
    /// it pushed tables, so a spoofed registration cannot aim pushes at a victim.
    verified: bool,
    /// Table version the client is known to hold.
    acked: u64,
    push: Option<Push>,
    /// The public key this name is bound to, once registered with one.
    key: Option<PublicKey>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The index server's state.
pub struct Index {
    cfg: Config,
    version: u64,
    owners: Vec<Owner>,
    by_name: HashMap<String, OwnerId>,
    by_token: HashMap<Token, OwnerId>,
    /// Each owner once, under its `latest` version: the delta since v is a range scan.
    by_ver: BTreeMap<u64, OwnerId>,
    online: BTreeSet<OwnerId>,
    /// Online sessions that heartbeated: the ones tables are pushed to.
    listeners: BTreeSet<OwnerId>,
    /// Packed deltas by `from`, valid while the version is `packed_at`: clients at the
    /// same version share one delta (e.g. a storm of newcomers at version 0).
    packed: HashMap<u64, Arc<Vec<Vec<u8>>>>,
    packed_at: u64,
    per_ip: HashMap<IpAddr, usize>,
    buckets: HashMap<SocketAddr, Bucket>,
    timers: BTreeSet<(Instant, OwnerId)>,
    push_due: Option<Instant>,
    next_liveness: Instant,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    ops: Vec<StoreOp>,
    /// Cryptographic RNG for session tokens: a client seeing its own tokens must learn
    /// nothing about anyone else's.
    rng: rand::rngs::StdRng,
    /// Keys registration nonces; never leaves the process.
    secret: [u8; 32],
    /// Start of nonce periods.
    epoch: Instant,
    stats: Stats,
}

impl Index {
    /// An index holding what `records` (from the store) hold. Clients that were online are
    /// given `offline_after` from `now` to come back by heartbeat. `seed` seeds token
    /// generation (from the OS in production, fixed in tests).
    pub fn new(cfg: Config, records: Vec<OwnerRecord>, now: Instant, seed: [u8; 32]) -> Index {
        let mut ix = Index {
            next_liveness: now + cfg.offline_after / 4,
            cfg,
            version: 0,
            owners: Vec::new(),
            by_name: HashMap::new(),
            by_token: HashMap::new(),
            by_ver: BTreeMap::new(),
            online: BTreeSet::new(),
            listeners: BTreeSet::new(),
            packed: HashMap::new(),
            packed_at: 0,
            per_ip: HashMap::new(),
            buckets: HashMap::new(),
            timers: BTreeSet::new(),
            push_due: None,
            out: VecDeque::new(),
            ops: Vec::new(),
            rng: rand::SeedableRng::from_seed(seed),
            secret: blake3::derive_key("fileapp nonce secret v1", &seed),
            epoch: now,
            stats: Stats::default(),
        };
        for rec in records {
            let row = rec.row;
            let files: BTreeMap<String, FileState> = rec
                .files
                .into_iter()
                .map(|f| {
                    let st = FileState {
                        ver: f.ver,
                        size: f.size,
                        hash: f.hash,
                    };
                    (f.name, st)
                })
                .collect();
            let latest = files.values().map(|f| f.ver).fold(row.ver, u64::max);
            ix.version = ix.version.max(latest);
            let id = ix.owners.len();
            ix.by_name.insert(row.name.clone(), id);
            ix.by_token.insert(row.token, id);
            ix.by_ver.insert(latest, id);
            if row.online {
                ix.online.insert(id);
                *ix.per_ip.entry(row.addr.ip()).or_default() += 1;
            }
            ix.owners.push(Owner {
                name: row.name,
                addr: row.addr,
                peer_ip: row.peer_ip,
                tcp_port: row.tcp_port,
                online: row.online,
                token: row.token,
                instance: row.instance,
                ver: row.ver,
                latest,
                files,
                last_seen: now,
                verified: false,
                acked: 0,
                push: None,
                key: row.key,
            });
        }
        ix
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Number of registered names, online or not.
    pub fn owners(&self) -> usize {
        self.owners.len()
    }

    /// Source addresses with rate-limit state (for tests and diagnostics).
    pub fn rate_limited_sources(&self) -> usize {
        self.buckets.len()
    }

    pub fn online_count(&self) -> usize {
        self.online.len()
    }

    /// Is `name` online, and with which offered files? (For tests and diagnostics.)
    pub fn owner_files(&self, name: &str) -> Option<(bool, Vec<String>)> {
        let o = &self.owners[*self.by_name.get(name)?];
        Some((o.online, o.files.keys().cloned().collect()))
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    /// Changes to persist before the pending datagrams may leave.
    pub fn take_store_ops(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.ops)
    }

    /// When [`Index::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.timers.first().map(|(t, _)| *t);
        [Some(self.next_liveness), self.push_due, timers]
            .into_iter()
            .flatten()
            .min()
    }

    fn random_token(&mut self) -> Token {
        use rand::RngExt;
        self.rng.random()
    }

    /// The registration nonce for `src` and `key`, `age` periods ago.
    fn nonce(&self, now: Instant, src: SocketAddr, key: &PublicKey, age: u64) -> [u8; 16] {
        let period = now.saturating_duration_since(self.epoch).as_secs() / NONCE_PERIOD.as_secs();
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(src.to_string().as_bytes());
        h.update(key);
        h.update(&period.saturating_sub(age).to_le_bytes());
        let mut n = [0u8; 16];
        n.copy_from_slice(&h.finalize().as_bytes()[..16]);
        n
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn send(&mut self, to: SocketAddr, msg: &Message) {
        if let Ok(bytes) = msg.encode() {
            self.out.push_back((to, bytes));
        }
    }

    fn allow(&mut self, now: Instant, src: SocketAddr) -> bool {
        let rate = self.cfg.rate_limit;
        if rate == 0 {
            return true;
        }
        let burst = 2.0 * rate as f64;
        let b = self.buckets.entry(src).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate as f64).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Handles one datagram from `src`. Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams_in += 1;
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if !self.allow(now, src) {
            self.stats.rate_limited += 1;
            return;
        }
        match msg {
            Message::Register {
                req,
                name,
                instance,
                tcp_port,
                keep_offers,
                advertise,
                key,
                proof,
                evict,
            } => {
                let key = match (key, proof) {
                    (None, _) => None,
                    (Some(key), None) => {
                        // Prove possession first: a stateless nonce bound to the source
                        // address, the key and the time.
                        let nonce = self.nonce(now, src, &key, 0);
                        return self.send(src, &Message::Challenge { req, nonce });
                    }
                    (Some(key), Some(p)) => {
                        let fresh = (0..2).any(|age| self.nonce(now, src, &key, age) == p.nonce);
                        if !fresh
                            || !identity::verify_registration(
                                &key, &p.sig, &p.nonce, &name, instance, tcp_port,
                            )
                        {
                            return self.reject(src, req, Reject::BadProof);
                        }
                        Some(key)
                    }
                };
                let reg = Registration {
                    name,
                    instance,
                    tcp_port,
                    keep_offers,
                    peer_ip: advertise.unwrap_or(src.ip()).to_canonical(),
                    key,
                    evict,
                };
                self.on_register(now, src, req, reg)
            }
            Message::Offer { req, token, files } => self.on_offer(now, src, req, token, files),
            Message::Dereg { req, token } => self.on_dereg(now, src, req, token),
            Message::Heartbeat {
                req,
                token,
                table_version,
            } => self.on_heartbeat(now, src, req, token, table_version),
            Message::TableAck { token, to, part } => self.on_table_ack(now, src, token, to, part),
            // Server-bound only; anything else is ignored.
            Message::Welcome { .. }
            | Message::Challenge { .. }
            | Message::Rejected { .. }
            | Message::Ack { .. }
            | Message::Table { .. } => self.stats.malformed += 1,
        }
    }

    fn reject(&mut self, to: SocketAddr, req: u64, reason: Reject) {
        self.stats.refused += 1;
        self.send(to, &Message::Rejected { req, reason });
    }

    /// The owner a token names, if the request is from its address.
    fn session(&self, src: SocketAddr, token: Token) -> Option<OwnerId> {
        let id = *self.by_token.get(&token)?;
        (self.owners[id].addr == src).then_some(id)
    }

    fn row(&self, id: OwnerId) -> OwnerRow {
        let o = &self.owners[id];
        OwnerRow {
            name: o.name.clone(),
            addr: o.addr,
            peer_ip: o.peer_ip,
            tcp_port: o.tcp_port,
            online: o.online,
            token: o.token,
            instance: o.instance,
            ver: o.ver,
            key: o.key,
        }
    }

    fn set_latest(&mut self, id: OwnerId, v: u64) {
        let o = &mut self.owners[id];
        self.by_ver.remove(&o.latest);
        o.latest = v;
        self.by_ver.insert(v, id);
    }

    fn schedule_push(&mut self, now: Instant) {
        if self.push_due.is_none() {
            self.push_due = Some(now + self.cfg.coalesce);
        }
    }

    fn set_online(&mut self, id: OwnerId, online: bool) {
        let o = &mut self.owners[id];
        if o.online == online {
            return;
        }
        o.online = online;
        let ip = o.addr.ip();
        if online {
            self.online.insert(id);
            *self.per_ip.entry(ip).or_default() += 1;
        } else {
            self.online.remove(&id);
            self.listeners.remove(&id);
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
            let o = &mut self.owners[id];
            if let Some(p) = o.push.take() {
                self.timers.remove(&(p.next_at, id));
            }
        }
    }

    fn on_register(&mut self, now: Instant, src: SocketAddr, req: u64, reg: Registration) {
        let Registration {
            name,
            instance,
            tcp_port,
            keep_offers,
            peer_ip,
            key,
            evict,
        } = reg;
        if !proto::valid_client_name(&name) || tcp_port == 0 {
            return self.reject(src, req, Reject::InvalidName);
        }
        let existing = self.by_name.get(&name).copied();
        if let Some(id) = existing {
            let o = &self.owners[id];
            if o.online && o.instance == instance && o.addr == src {
                // A retransmission whose welcome was lost: answer it again.
                let token = o.token;
                return self.welcome(src, req, token);
            }
            match (o.key, key) {
                // A name belongs to the key that registered it; the same key takes it
                // back at once (a crashed client restarted), online or not.
                (Some(bound), Some(k)) if bound == k && (evict || !o.online) => {
                    if o.online {
                        self.go_offline(id);
                    }
                }
                (Some(_), _) => return self.reject(src, req, Reject::NameInUse),
                (None, _) if o.online => return self.reject(src, req, Reject::NameInUse),
                (None, _) => {}
            }
        }
        if self.per_ip.get(&src.ip()).copied().unwrap_or(0) >= self.cfg.max_clients_per_ip {
            return self.reject(src, req, Reject::LimitExceeded);
        }
        let token = self.random_token();
        let v = self.bump();
        let id = match existing {
            Some(id) => {
                let old = self.owners[id].token;
                self.by_token.remove(&old);
                id
            }
            None => {
                let id = self.owners.len();
                self.owners.push(Owner {
                    name: name.clone(),
                    addr: src,
                    peer_ip,
                    tcp_port,
                    online: false,
                    token,
                    instance,
                    ver: v,
                    latest: v,
                    files: BTreeMap::new(),
                    last_seen: now,
                    verified: false,
                    acked: 0,
                    push: None,
                    key,
                });
                self.by_name.insert(name.clone(), id);
                self.by_ver.insert(v, id);
                id
            }
        };
        if !keep_offers && !self.owners[id].files.is_empty() {
            // A new process under this name cannot serve its predecessor's files.
            self.owners[id].files.clear();
            self.ops.push(StoreOp::ClearFiles {
                owner: name.clone(),
            });
        }
        {
            let o = &mut self.owners[id];
            o.addr = src;
            o.peer_ip = peer_ip;
            o.tcp_port = tcp_port;
            o.token = token;
            o.instance = instance;
            o.key = o.key.or(key);
            o.ver = v;
            o.last_seen = now;
            o.verified = false;
            self.listeners.remove(&id);
            o.acked = 0;
        }
        self.by_token.insert(token, id);
        self.set_online(id, true);
        self.set_latest(id, v);
        self.ops.push(StoreOp::Owner(self.row(id)));
        self.stats.registrations += 1;
        self.welcome(src, req, token);
        self.schedule_push(now);
    }

    fn welcome(&mut self, to: SocketAddr, req: u64, token: Token) {
        let heartbeat_ms = self.cfg.heartbeat.as_millis().min(u32::MAX as u128) as u32;
        let version = self.version;
        self.send(
            to,
            &Message::Welcome {
                req,
                token,
                heartbeat_ms,
                version,
            },
        );
    }

    fn ack(&mut self, to: SocketAddr, req: u64) {
        let version = self.version;
        self.send(to, &Message::Ack { req, version });
    }

    fn on_offer(
        &mut self,
        now: Instant,
        src: SocketAddr,
        req: u64,
        token: Token,
        files: Vec<FileEntry>,
    ) {
        let Some(id) = self
            .session(src, token)
            .filter(|&id| self.owners[id].online)
        else {
            return self.reject(src, req, Reject::NotRegistered);
        };
        if !files.iter().all(|f| proto::valid_file_name(&f.name)) {
            return self.reject(src, req, Reject::InvalidName);
        }
        let o = &mut self.owners[id];
        o.last_seen = now;
        // New names, and names whose content changed since their offer; the rest are
        // duplicates, answered but not applied.
        let mut changed: BTreeMap<String, FileEntry> = BTreeMap::new();
        for f in files {
            let same = o
                .files
                .get(&f.name)
                .is_some_and(|s| s.size == f.size && s.hash == f.hash);
            if !same {
                changed.insert(f.name.clone(), f);
            }
        }
        let added = changed.keys().filter(|n| !o.files.contains_key(*n)).count();
        if o.files.len() + added > self.cfg.max_files_per_client {
            return self.reject(src, req, Reject::LimitExceeded);
        }
        if !changed.is_empty() {
            let v = self.bump();
            let o = &mut self.owners[id];
            let mut rows = Vec::with_capacity(changed.len());
            for (name, f) in changed {
                let st = FileState {
                    ver: v,
                    size: f.size,
                    hash: f.hash,
                };
                rows.push(FileRow {
                    name: name.clone(),
                    ver: v,
                    size: f.size,
                    hash: f.hash,
                });
                o.files.insert(name, st);
            }
            self.ops.push(StoreOp::Files {
                owner: o.name.clone(),
                files: rows,
            });
            self.set_latest(id, v);
            self.schedule_push(now);
        }
        self.ack(src, req);
    }

    fn on_dereg(&mut self, now: Instant, src: SocketAddr, req: u64, token: Token) {
        let Some(id) = self.session(src, token) else {
            return self.reject(src, req, Reject::NotRegistered);
        };
        if self.owners[id].online {
            self.go_offline(id);
            self.schedule_push(now);
        }
        // Already offline: the ACK was lost, answer again.
        self.ack(src, req);
    }

    fn go_offline(&mut self, id: OwnerId) {
        let v = self.bump();
        self.set_online(id, false);
        self.owners[id].ver = v;
        self.set_latest(id, v);
        self.ops.push(StoreOp::Owner(self.row(id)));
    }

    fn on_heartbeat(
        &mut self,
        now: Instant,
        src: SocketAddr,
        req: u64,
        token: Token,
        table_version: u64,
    ) {
        let Some(id) = self
            .session(src, token)
            .filter(|&id| self.owners[id].online)
        else {
            return self.reject(src, req, Reject::NotRegistered);
        };
        let version = self.version;
        let o = &mut self.owners[id];
        o.last_seen = now;
        o.verified = true;
        self.listeners.insert(id);
        // Trust the client about what it holds; never beyond what exists.
        o.acked = table_version.min(version);
        let stale_push = o.push.as_ref().is_some_and(|p| p.from != o.acked);
        if stale_push && let Some(p) = self.owners[id].push.take() {
            self.timers.remove(&(p.next_at, id));
        }
        self.ack(src, req);
        if self.owners[id].acked < self.version && self.owners[id].push.is_none() {
            self.start_push(now, id, self.cfg.retry.retries);
        }
    }

    fn on_table_ack(&mut self, now: Instant, src: SocketAddr, token: Token, to: u64, part: u16) {
        let Some(id) = self
            .session(src, token)
            .filter(|&id| self.owners[id].online)
        else {
            return;
        };
        let o = &mut self.owners[id];
        o.last_seen = now;
        o.verified = true;
        self.listeners.insert(id);
        let Some(p) = o.push.as_mut() else { return };
        if p.to != to {
            return;
        }
        p.unacked.remove(&part);
        if p.unacked.is_empty() {
            let next_at = p.next_at;
            o.acked = to;
            o.push = None;
            self.timers.remove(&(next_at, id));
            if self.owners[id].acked < self.version {
                self.start_push(now, id, self.cfg.retry.retries);
            }
        }
    }

    /// Everything a client at version `from` lacks, as absolute items.
    fn delta(&self, from: u64) -> Vec<Item> {
        let mut items = Vec::new();
        for (_, &id) in self.by_ver.range(from + 1..) {
            let o = &self.owners[id];
            if o.ver > from {
                if from == 0 && !o.online {
                    continue; // a snapshot lists online owners only
                }
                items.push(Item::Owner {
                    name: o.name.clone(),
                    ip: o.peer_ip,
                    tcp_port: o.tcp_port,
                    online: o.online,
                    key: o.key,
                });
                if o.online {
                    // The header changed (came back, moved): the client may hold none
                    // of its files, so send them all.
                    items.extend(o.files.iter().map(|(f, st)| file_item(&o.name, f, st)));
                }
            } else if o.online {
                items.extend(
                    o.files
                        .iter()
                        .filter(|(_, st)| st.ver > from)
                        .map(|(f, st)| file_item(&o.name, f, st)),
                );
            }
        }
        items
    }

    fn start_push(&mut self, now: Instant, id: OwnerId, retries_left: u32) {
        let from = self.owners[id].acked;
        let to = self.version;
        if self.packed_at != to {
            self.packed.clear();
            self.packed_at = to;
        }
        let parts = match self.packed.get(&from) {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(proto::pack_table(from, to, self.delta(from)));
                self.packed.insert(from, p.clone());
                p
            }
        };
        let addr = self.owners[id].addr;
        for p in parts.iter() {
            self.out.push_back((addr, p.clone()));
        }
        self.stats.table_parts_sent += parts.len() as u64;
        let next_at = now + self.cfg.retry.interval;
        let o = &mut self.owners[id];
        if let Some(old) = o.push.take() {
            self.timers.remove(&(old.next_at, id));
        }
        let o = &mut self.owners[id];
        o.push = Some(Push {
            from,
            to,
            unacked: (0..parts.len() as u16).collect(),
            parts,
            next_at,
            retries_left,
        });
        self.timers.insert((next_at, id));
    }

    /// Runs whatever is due at `now`: coalesced pushes, retransmissions, liveness.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.push_due.is_some_and(|t| t <= now) {
            self.push_due = None;
            let due: Vec<OwnerId> = self
                .listeners
                .iter()
                .copied()
                .filter(|&id| {
                    let o = &self.owners[id];
                    o.verified && o.push.is_none() && o.acked < self.version
                })
                .collect();
            for id in due {
                self.start_push(now, id, self.cfg.retry.retries);
            }
        }
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            self.retransmit(now, id);
        }
        if self.next_liveness <= now {
            self.next_liveness = now + (self.cfg.offline_after / 4).max(Duration::from_millis(1));
            // A bucket idle long enough to be full again carries no state: forget it, so
            // datagrams from many (spoofed) sources cannot grow the table without bound.
            if self.cfg.rate_limit > 0 {
                // Bursts are 2x the rate, so an empty bucket is full after 2 s.
                let refill = Duration::from_secs(2);
                self.buckets
                    .retain(|_, b| now.saturating_duration_since(b.at) < refill);
            }
            let silent: Vec<OwnerId> = self
                .online
                .iter()
                .copied()
                .filter(|&id| {
                    now.saturating_duration_since(self.owners[id].last_seen)
                        >= self.cfg.offline_after
                })
                .collect();
            if !silent.is_empty() {
                for id in silent {
                    self.go_offline(id);
                }
                self.schedule_push(now);
            }
        }
    }

    fn retransmit(&mut self, now: Instant, id: OwnerId) {
        let version = self.version;
        let Some(p) = self.owners[id].push.as_mut() else {
            return;
        };
        if p.retries_left == 0 {
            // Give up; the client's next heartbeat reports its version and restarts.
            self.owners[id].push = None;
            return;
        }
        let left = p.retries_left - 1;
        if p.to < version {
            // The table moved on: send the current delta instead of a stale one.
            self.owners[id].push = None;
            return self.start_push(now, id, left);
        }
        p.retries_left = left;
        p.next_at = now + self.cfg.retry.interval;
        let next_at = p.next_at;
        let addr = self.owners[id].addr;
        let p = self.owners[id].push.as_ref().expect("checked above");
        let resend: Vec<Vec<u8>> = p
            .unacked
            .iter()
            .map(|&i| p.parts[i as usize].clone())
            .collect();
        self.stats.table_parts_sent += resend.len() as u64;
        for d in resend {
            self.out.push_back((addr, d));
        }
        self.timers.insert((next_at, id));
    }
}

#[cfg(test)]
mod tests;
