//! The server's table as a sans-io state machine.
//!
//! Inputs: datagrams with their source address ([`Index::handle_datagram`]) and the passing
//! of time ([`Index::handle_timeout`]), both with `now` given by the caller. Outputs:
//! datagrams to send ([`Index::poll_transmit`]), changes to persist
//! ([`Index::take_store_ops`]), the next deadline ([`Index::poll_timeout`]) and what could
//! not be sent ([`Index::poll_error`], also counted in [`Stats`]).
//!
//! The caller seeds all randomness ([`Index::new`]'s `seed`: from the OS in production,
//! fixed in tests), so a run is reproducible from its inputs.
//!
//! **Persist before reply.** The driver must persist the store ops of a batch *before*
//! sending that batch's datagrams, so an acknowledged change is never lost. The index
//! cannot enforce this itself (it does no I/O); `fileapp::server::run` does.
//!
//! # Table versions
//! Every change takes the next table version. Each owner records the version at which its
//! header (address, online) last changed and each file the version at which it was added,
//! so "everything that changed since version v" is computed from the current state without
//! a log. A client at version `v` receives a delta `v -> current` in parts; a delta from
//! version 0 is a full snapshot of online owners.
//!
//! # Layout
//! - `config`: [`Config`] and the default values as public constants.
//! - `stats`: [`Stats`] and [`SendError`], what is counted and reported.
//! - `register`: sessions, tokens, challenges and who may take a name.
//! - `offers`: offers and deregistration.
//! - `files`: `FileSet`, an owner's offered files, compact and in name order.
//! - `table`: versions, deltas, persisted rows, restoring from the store.
//! - `push`: table pushes, their retransmission and coalescing.
//! - `liveness`: heartbeats and the offline sweep.
//! - `limits`: rate limiting, clients per IP, files per client.
//! - `remote`: owners whose sessions live on another server of a shared database.

mod config;
mod files;
mod forward;
mod limits;
mod liveness;
mod offers;
mod push;
mod reach;
mod record;
mod register;
mod remote;
mod secure;
mod stats;
mod table;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::identity::PublicKey;
use crate::proto::{Message, PackError, RecordSig, Reject, ReqId, Token};
use crate::store::{OwnerRecord, StoreOp};

pub use config::{
    Config, DEFAULT_COALESCE, DEFAULT_HEARTBEAT, DEFAULT_MAX_CLIENTS_PER_IP,
    DEFAULT_MAX_FILES_PER_CLIENT, DEFAULT_OFFLINE_AFTER, DEFAULT_RATE_LIMIT, DEFAULT_SIGN_WAIT,
    OFFLINE_AFTER_HEARTBEATS,
};
pub use forward::{Forward, MAX_QUEUED_FORWARDS, PROBE_FORWARD_EVERY};
pub use limits::RATE_BURST_SECONDS;
pub use reach::{NAT_MAGIC, PROBE_LEN, ReachTest, RelaySetup, nat_key};
pub use register::token_at_rest;
pub use secure::{GateStats, SecureIndex};
pub use stats::{MAX_QUEUED_ERRORS, RequestCounts, SendError, Stats};

#[cfg(test)]
use crate::reliable::RetryPolicy;
#[cfg(test)]
use register::NONCE_PERIOD;

type OwnerId = usize;

/// An offered file: when it was last (re)announced, and what it was then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    ver: u64,
    size: u64,
    hash: [u8; 32],
    /// Files in a folder; 0 for a file.
    files: u64,
}

#[derive(Debug)]
struct Owner {
    name: String,
    addr: SocketAddr,
    /// Where peers reach its TCP port.
    peer_ip: IpAddr,
    tcp_port: u16,
    online: bool,
    /// The live session token; 0 for a session restored from the store until its
    /// client presents the token again.
    token: Token,
    /// What the store keeps of `token` (`register::token_at_rest`).
    token_at_rest: u128,
    instance: u64,
    /// Version at which the header (address, ports, online) last changed.
    ver: u64,
    /// Highest version of the header or any file: the key in `by_ver`.
    latest: u64,
    files: files::FileSet,
    last_seen: Instant,
    /// The client has proven it receives at `addr` and wants tables: it sent a heartbeat
    /// or a table ACK (carrying the token it could only have read there). Only then is
    /// it pushed tables, so a spoofed registration cannot aim pushes at a victim.
    verified: bool,
    /// Table version the client is known to hold.
    acked: u64,
    /// Boxed: most owners have none at any moment (72 bytes inline otherwise).
    push: Option<Box<push::Push>>,
    /// The public key this name is bound to, once registered with one.
    key: Option<PublicKey>,
    /// `peer_ip` is the address the owner advertised (signed), not the observed one.
    advertised: bool,
    /// The owner's signature over its record as it stands; `None` once it changed.
    record: Option<RecordSig>,
    /// Version at which `record` last changed.
    rec_ver: u64,
    /// Highest sequence number accepted from this owner: a record must exceed it.
    seq: u64,
    /// What the server judged of its reachability (not persisted: tested anew at
    /// each registration).
    reach: crate::reach::Reach,
    /// Version at which `reach` last changed.
    reach_ver: u64,
}

/// The index server's state.
pub struct Index {
    cfg: Config,
    version: u64,
    owners: Vec<Owner>,
    by_name: HashMap<String, OwnerId>,
    by_token: HashMap<Token, OwnerId>,
    /// Sessions restored from the store, by their token's digest, until the token
    /// itself is presented (see `register::token_at_rest`).
    restored: HashMap<u128, OwnerId>,
    /// Each owner once, under its `latest` version: the delta since v is a range scan.
    by_ver: BTreeMap<u64, OwnerId>,
    online: BTreeSet<OwnerId>,
    /// Owners whose sessions live on another server, with that server's id.
    remote: HashMap<OwnerId, std::sync::Arc<str>>,
    /// Online sessions that heartbeated: the ones tables are pushed to.
    listeners: BTreeSet<OwnerId>,
    /// Packed deltas by `from`, valid while the version is `packed_at`: clients at the
    /// same version share one delta (e.g. a storm of newcomers at version 0).
    packed: HashMap<u64, Result<push::Parts, PackError>>,
    packed_at: u64,
    per_ip: HashMap<IpAddr, usize>,
    buckets: HashMap<SocketAddr, limits::Bucket>,
    timers: BTreeSet<(Instant, OwnerId)>,
    push_due: Option<Instant>,
    /// What the push rounds may still send: see [`Config::push_budget`].
    push_budget: limits::Budget,
    next_liveness: Instant,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    ops: Vec<StoreOp>,
    /// What could not be sent, for the driver to log.
    errors: VecDeque<SendError>,
    /// Cryptographic RNG for session tokens: a client seeing its own tokens must learn
    /// nothing about anyone else's.
    rng: rand::rngs::StdRng,
    /// Keys registration nonces; never leaves the process.
    secret: [u8; 32],
    /// Start of nonce periods.
    epoch: Instant,
    /// Reachability tests and the meetings arranged through NAT.
    reach: reach::ReachState,
    /// Meetings with owners of other servers of the deployment.
    forward: forward::ForwardState,
    stats: Stats,
}

impl Index {
    /// An index holding what `records` (from the store) hold. Clients that were online are
    /// given `offline_after` from `now` to come back by heartbeat. `seed` seeds token
    /// generation and the nonce key (from the OS in production, fixed in tests).
    pub fn new(cfg: Config, records: Vec<OwnerRecord>, now: Instant, seed: [u8; 32]) -> Index {
        let mut ix = Index {
            next_liveness: now + cfg.offline_after / 4,
            cfg,
            version: 0,
            owners: Vec::new(),
            by_name: HashMap::new(),
            by_token: HashMap::new(),
            restored: HashMap::new(),
            by_ver: BTreeMap::new(),
            online: BTreeSet::new(),
            remote: HashMap::new(),
            listeners: BTreeSet::new(),
            packed: HashMap::new(),
            packed_at: 0,
            per_ip: HashMap::new(),
            buckets: HashMap::new(),
            timers: BTreeSet::new(),
            push_due: None,
            push_budget: limits::Budget::full(now),
            out: VecDeque::new(),
            ops: Vec::new(),
            errors: VecDeque::new(),
            rng: rand::SeedableRng::from_seed(seed),
            secret: blake3::derive_key("fileapp nonce secret v1", &seed),
            epoch: now,
            reach: Default::default(),
            forward: Default::default(),
            stats: Stats::default(),
        };
        ix.restore(records, now);
        ix
    }

    /// The current table version.
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

    /// The key `name` is bound to. (For tests and diagnostics.)
    pub fn owner_key(&self, name: &str) -> Option<PublicKey> {
        self.owners[*self.by_name.get(name)?].key
    }

    /// Is `name` online, and with which offered files? (For tests and diagnostics.)
    pub fn owner_files(&self, name: &str) -> Option<(bool, Vec<String>)> {
        let o = &self.owners[*self.by_name.get(name)?];
        Some((o.online, o.files.keys().map(str::to_string).collect()))
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

    /// Handles one datagram from `src` that came through no control channel: as
    /// [`Index::handle_message`] with an all-zero binding. For tests and tools that
    /// drive the index directly; the server feeds [`SecureIndex`] instead.
    pub fn handle_datagram(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) {
        self.handle_message(now, src, &[0; 32], bytes)
    }

    /// Handles one control message from `src`, authenticated by the session whose
    /// handshake hash is `binding` (a registration proof must be signed over it).
    /// Never panics, whatever the bytes.
    pub fn handle_message(
        &mut self,
        now: Instant,
        src: SocketAddr,
        binding: &[u8; 32],
        bytes: &[u8],
    ) {
        self.stats.datagrams_in += 1;
        let Ok(msg) = Message::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if !self.allow(now, src) {
            self.stats.rate_limited += 1;
            return;
        }
        let kinds = &mut self.stats.requests;
        match &msg {
            Message::Register { .. } => kinds.register += 1,
            Message::Offer { .. } => kinds.offer += 1,
            Message::Dereg { .. } => kinds.dereg += 1,
            Message::Heartbeat { .. } => kinds.heartbeat += 1,
            Message::TableAck { .. } => kinds.table_ack += 1,
            _ => {}
        }
        match msg {
            msg @ Message::Register { .. } => self.on_register_request(now, src, binding, msg),
            Message::Offer { req, token, files } => self.on_offer(now, src, req, token, files),
            Message::Dereg { req, token } => self.on_dereg(now, src, req, token),
            Message::Record {
                req,
                token,
                seq,
                sig,
            } => self.on_record(now, src, req, token, seq, sig),
            Message::Connect {
                req,
                token,
                owner,
                via,
                id,
            } => self.on_connect(now, src, req, token, owner, via, id),
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
            | Message::Table { .. }
            | Message::Dial { .. }
            | Message::Connected { .. }
            | Message::PunchPeer { .. } => self.stats.malformed += 1,
        }
    }

    /// Runs whatever is due at `now`: coalesced pushes, retransmissions, liveness.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_due_pushes(now);
        self.run_due_retransmits(now);
        self.check_liveness(now);
    }

    /// Queues `msg` for `to`; one that does not encode is reported, not sent.
    fn send(&mut self, to: SocketAddr, msg: &Message) {
        match msg.encode() {
            Ok(bytes) => self.out.push_back((to, bytes)),
            Err(source) => self.report(SendError::Encode { to, source }),
        }
    }

    fn reject(&mut self, to: SocketAddr, req: ReqId, reason: Reject) {
        self.stats.refused += 1;
        self.send(to, &Message::Rejected { req, reason });
    }

    fn ack(&mut self, to: SocketAddr, req: ReqId) {
        let version = self.version;
        self.send(to, &Message::Ack { req, version });
    }
}

#[cfg(test)]
mod tests;
