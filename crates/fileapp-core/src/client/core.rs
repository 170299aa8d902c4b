//! The client's control-plane state machine, sans-io: registration, offers, dereg,
//! heartbeats, automatic re-registration, and the local table.
//!
//! The core acts on its own (heartbeats, re-registering after the server forgot us,
//! re-offering after that, table resyncs), but never against what the user said last:
//! once the user leaves (`dereg`, or [`ClientCore::goodbye`] when the program exits),
//! heartbeats stop, a NotRegistered means "we are gone", a re-registration in flight is
//! abandoned and its late welcome answered with a Dereg; a new `reg` ends a dereg still
//! in flight.
//!
//! Commands ([`ClientCore::register`], [`ClientCore::offer`], ...) and inputs
//! ([`ClientCore::handle_datagram`], [`ClientCore::handle_timeout`]) take `now`;
//! outputs are datagrams for the server ([`ClientCore::poll_transmit`]), [`Event`]s for
//! the user ([`ClientCore::poll_event`]) and the next deadline
//! ([`ClientCore::poll_timeout`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::identity::Identity;
use crate::proto::{FileEntry, MAX_DATAGRAM, Message, Proof, Reject, ReqId, Token};
use crate::reliable::{Outstanding, RetryPolicy};

use super::table::{ClientTable, PartOutcome};

/// Identifies one user-level operation (an `offer` may take several datagrams).
pub type OpId = u64;

/// What the user should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Registration (first, `reg`) accepted.
    Registered,
    /// Registration refused.
    RegisterRejected(Reject),
    /// No answer to a user-initiated registration.
    RegisterTimedOut,
    OfferDone(OpId),
    OfferFailed(OpId, OfferFailure),
    Deregistered,
    DeregTimedOut,
    /// A table delta was applied.
    TableUpdated,
    /// Heartbeats stopped being answered (said once per outage).
    ServerLost,
    /// Registered again on our own after an outage or after the server forgot us.
    ServerBack,
}

/// Why an offer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferFailure {
    NoAck,
    Rejected(Reject),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// `user` is false for automatic re-registration.
    Register {
        user: bool,
    },
    Offer(OpId),
    Dereg,
    Heartbeat,
    /// Dereg of a session we never wanted: the late welcome of a registration we had
    /// abandoned. Its outcome concerns nobody.
    Bury,
}

/// How many abandoned registrations we remember, to answer their late welcomes.
const MAX_ABANDONED: usize = 16;

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not registered yet.
    Idle,
    Registering,
    Online,
    /// Lost the server; trying to register again on our own.
    Reconnecting,
    /// Deregistered by the user (`reg` brings it back).
    Offline,
}

/// Settings of the client core.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub tcp_port: u16,
    pub retry: RetryPolicy,
    /// Heartbeat interval until the server announces its own.
    pub heartbeat: Duration,
    /// IP address to advertise to peers instead of our datagrams' source address.
    pub advertise: Option<std::net::IpAddr>,
    /// Our key pair: registrations prove we hold it, and the name is bound to it.
    pub identity: Option<Arc<Identity>>,
    /// We are the only process using this identity: a session of our name that the
    /// server still thinks online is a previous run of ours, and may be replaced.
    pub evict: bool,
}

struct OfferOp {
    remaining: usize,
    failed: Option<OfferFailure>,
    /// Internal re-offer after re-registration: no user event.
    silent: bool,
    /// Parts of user offers refused because the server had forgotten us: this re-offer
    /// carries their files, so they end with its outcome.
    carries: Vec<OpId>,
}

/// The client's control-plane state.
pub struct ClientCore {
    cfg: Config,
    state: State,
    token: Option<Token>,
    instance: u64,
    seed: u64,
    reqs: Outstanding<Tag>,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    table: ClientTable,
    offered: BTreeMap<String, FileEntry>,
    ops: HashMap<OpId, OfferOp>,
    next_op: OpId,
    heartbeat: Duration,
    next_heartbeat: Option<Instant>,
    next_reconnect: Option<Instant>,
    /// Highest table version named by a reply to us: once our table reaches it, it
    /// shows our own changes (read-your-writes).
    seen_version: u64,
    /// `keep_offers` of the registration in progress.
    keep_offers: bool,
    /// The user asked to leave and we are not offline yet: nothing automatic may bring
    /// us back.
    leaving: bool,
    /// The registration request in flight, if any.
    register_req: Option<ReqId>,
    /// Registrations given up while they may have reached the server: a welcome for one
    /// of them is answered with a Dereg of the session it names.
    abandoned: VecDeque<ReqId>,
    /// Parts of user offers refused as NotRegistered while we register again; the
    /// re-offer after the welcome carries them (see [`OfferOp::carries`]).
    parked: Vec<OpId>,
}

impl ClientCore {
    /// `seed` must be random per process: it seeds request ids and registration instances.
    pub fn new(cfg: Config, seed: u64) -> Self {
        ClientCore {
            reqs: Outstanding::new(cfg.retry, seed),
            heartbeat: cfg.heartbeat,
            cfg,
            state: State::Idle,
            token: None,
            instance: 0,
            seed,
            out: VecDeque::new(),
            events: VecDeque::new(),
            table: ClientTable::default(),
            offered: BTreeMap::new(),
            ops: HashMap::new(),
            next_op: 1,
            next_heartbeat: None,
            next_reconnect: None,
            seen_version: 0,
            keep_offers: false,
            leaving: false,
            register_req: None,
            abandoned: VecDeque::new(),
            parked: Vec::new(),
        }
    }

    /// True while the server has acknowledged a change that our table does not show yet.
    pub fn behind_own_writes(&self) -> bool {
        self.state == State::Online && self.table.version() < self.seen_version
    }

    #[cfg(test)]
    pub(crate) fn cfg_evict_for_tests(&mut self, evict: bool) {
        self.cfg.evict = evict;
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn table(&self) -> &ClientTable {
        &self.table
    }

    /// Files this client has offered (and re-offers after re-registering).
    pub fn offered(&self) -> &BTreeMap<String, FileEntry> {
        &self.offered
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.reqs.poll_timeout(),
            self.next_heartbeat,
            self.next_reconnect,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn request(&mut self, now: Instant, tag: Tag, make: impl FnOnce(u64) -> Message) -> ReqId {
        let id = self.reqs.next_id();
        // Every message we build fits (names are validated, offers are chunked).
        if let Ok(bytes) = make(id).encode() {
            let first = self.reqs.start(now, id, bytes, tag);
            self.out.push_back(first);
        }
        id
    }

    /// Registers (or, after `dereg`, registers again keeping our offers). A dereg still
    /// in flight is dropped: the user changed their mind, and its late answer must not
    /// take the new session offline.
    pub fn register(&mut self, now: Instant) {
        let keep_offers = self.state == State::Offline || self.leaving;
        self.start_register(now, true, keep_offers);
    }

    /// Registers a restarted client that will offer its previous files again: the
    /// server keeps them meanwhile instead of dropping them.
    pub fn register_resuming(&mut self, now: Instant) {
        self.start_register(now, true, true);
    }

    fn start_register(&mut self, now: Instant, user: bool, keep_offers: bool) {
        // A registration still in flight is superseded: should it have reached the
        // server, its late welcome is undone rather than adopted.
        if let Some(id) = self.register_req.take()
            && self.reqs.complete(id).is_some()
        {
            self.abandon(id);
        }
        self.reqs
            .cancel_where(|t| matches!(t, Tag::Register { .. } | Tag::Heartbeat));
        if user {
            self.leaving = false;
            self.next_reconnect = None;
            self.reqs.cancel_where(|t| *t == Tag::Dereg);
        }
        self.instance = self
            .instance
            .wrapping_add(self.seed.rotate_left(17) | 1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if user {
            self.state = State::Registering;
        }
        self.keep_offers = keep_offers;
        self.send_register(now, user, None);
    }

    /// Sends a registration, with a proof for `nonce` once the server has challenged us.
    fn send_register(&mut self, now: Instant, user: bool, nonce: Option<[u8; 16]>) {
        let (name, tcp_port, instance) = (self.cfg.name.clone(), self.cfg.tcp_port, self.instance);
        let (advertise, keep_offers) = (self.cfg.advertise, self.keep_offers);
        let key = self.cfg.identity.as_ref().map(|i| i.public_key());
        let evict = self.cfg.evict;
        let proof = match (&self.cfg.identity, nonce) {
            (Some(id), Some(nonce)) => Some(Proof {
                nonce,
                sig: id.sign_registration(&nonce, &name, instance, tcp_port),
            }),
            _ => None,
        };
        let id = self.request(now, Tag::Register { user }, |req| Message::Register {
            req,
            name,
            instance,
            tcp_port,
            keep_offers,
            advertise,
            key,
            proof,
            evict,
        });
        self.register_req = Some(id);
    }

    /// Offers `files` (already checked locally). Returns the operation id whose outcome
    /// arrives as [`Event::OfferDone`] or [`Event::OfferFailed`]. `None` if not online
    /// (or leaving).
    pub fn offer(&mut self, now: Instant, files: &[FileEntry]) -> Option<OpId> {
        if self.state != State::Online || self.leaving {
            return None;
        }
        for f in files {
            self.offered.insert(f.name.clone(), f.clone());
        }
        Some(self.send_offer(now, files.to_vec(), false, Vec::new()))
    }

    fn send_offer(
        &mut self,
        now: Instant,
        files: Vec<FileEntry>,
        silent: bool,
        carries: Vec<OpId>,
    ) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        let token = self.token.unwrap_or_default();
        let chunks = chunk_files(files);
        self.ops.insert(
            op,
            OfferOp {
                remaining: chunks.len(),
                failed: None,
                silent,
                carries,
            },
        );
        for files in chunks {
            self.request(now, Tag::Offer(op), |req| Message::Offer {
                req,
                token,
                files,
            });
        }
        op
    }

    /// Deregisters. Returns false if not online. From here until the outcome nothing
    /// automatic runs: no heartbeats, no re-registration.
    pub fn dereg(&mut self, now: Instant) -> bool {
        if !matches!(self.state, State::Online | State::Reconnecting) {
            return false;
        }
        self.stop_automatic();
        self.leaving = true;
        if !self.reqs.any(|t| *t == Tag::Dereg) {
            let token = self.token.unwrap_or_default();
            self.request(now, Tag::Dereg, |req| Message::Dereg { req, token });
        }
        true
    }

    /// Best-effort goodbye when the program exits: one Dereg, not retried. Whatever the
    /// state, the core stops acting on its own: a registration in flight is abandoned
    /// (and a late welcome for it answered with a Dereg, should the driver still run).
    pub fn goodbye(&mut self) -> Option<Vec<u8>> {
        let online = matches!(self.state, State::Online | State::Reconnecting);
        self.stop_automatic();
        if self.state == State::Registering {
            self.state = self.not_online();
        }
        self.leaving = online;
        let token = self.token.filter(|_| online)?;
        let req = self.reqs.next_id();
        Message::Dereg { req, token }.encode().ok()
    }

    /// Offline after a session, idle before the first.
    fn not_online(&self) -> State {
        if self.token.is_some() {
            State::Offline
        } else {
            State::Idle
        }
    }

    /// Stops every automatic action: heartbeats, re-registration (abandoned: its late
    /// welcome gets a Dereg), and user offers waiting for a re-registration fail.
    fn stop_automatic(&mut self) {
        self.next_heartbeat = None;
        self.next_reconnect = None;
        self.reqs.cancel_where(|t| *t == Tag::Heartbeat);
        if let Some(id) = self.register_req.take()
            && self.reqs.complete(id).is_some()
        {
            self.abandon(id);
        }
        self.fail_parked(OfferFailure::Rejected(Reject::NotRegistered));
    }

    /// Remembers registration `id` as unwanted, should its welcome still come.
    fn abandon(&mut self, id: ReqId) {
        if self.abandoned.len() >= MAX_ABANDONED {
            self.abandoned.pop_front();
        }
        self.abandoned.push_back(id);
    }

    /// A welcome for a registration we abandoned: take that session offline again.
    fn bury(&mut self, now: Instant, req: ReqId, token: Token) {
        let Some(i) = self.abandoned.iter().position(|r| *r == req) else {
            return;
        };
        self.abandoned.remove(i);
        self.request(now, Tag::Bury, |req| Message::Dereg { req, token });
    }

    fn fail_parked(&mut self, failure: OfferFailure) {
        for op in std::mem::take(&mut self.parked) {
            self.offer_part_done(op, Some(failure));
        }
    }

    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        let Ok(msg) = Message::decode(bytes) else {
            return;
        };
        match msg {
            Message::Welcome {
                req,
                token,
                heartbeat_ms,
                version,
            } => match self.reqs.complete(req) {
                Some(Tag::Register { user }) => {
                    self.register_req = None;
                    self.seen_version = version;
                    self.on_welcome(now, user, token, heartbeat_ms);
                }
                Some(_) => {}
                None => self.bury(now, req, token),
            },
            Message::Challenge { req, nonce } => {
                if let Some(Tag::Register { user }) = self.reqs.complete(req) {
                    self.send_register(now, user, Some(nonce));
                }
            }
            Message::Rejected { req, reason } => match self.reqs.complete(req) {
                Some(Tag::Register { user: true }) => {
                    self.register_req = None;
                    self.state = self.not_online();
                    self.fail_parked(OfferFailure::Rejected(Reject::NotRegistered));
                    self.events.push_back(Event::RegisterRejected(reason));
                }
                Some(Tag::Register { user: false }) => {
                    // Someone else took our name while we were away: stay away, retry later.
                    self.register_req = None;
                    self.next_reconnect = Some(now + self.heartbeat);
                    self.fail_parked(OfferFailure::Rejected(Reject::NotRegistered));
                }
                Some(Tag::Offer(op)) => {
                    if reason == Reject::NotRegistered && self.lost_session(now) {
                        // The re-offer after the welcome carries this part's files.
                        self.parked.push(op);
                    } else {
                        self.offer_part_done(op, Some(OfferFailure::Rejected(reason)));
                    }
                }
                Some(Tag::Heartbeat) if reason == Reject::NotRegistered => {
                    self.lost_session(now);
                }
                Some(Tag::Dereg) => {
                    // The server no longer knows this session: we are offline either way.
                    self.go_offline();
                }
                _ => {}
            },
            Message::Ack { req, version } => match self.reqs.complete(req) {
                Some(Tag::Offer(op)) => {
                    self.seen_version = self.seen_version.max(version);
                    self.offer_part_done(op, None)
                }
                Some(Tag::Dereg) => self.go_offline(),
                Some(Tag::Heartbeat) if self.state == State::Reconnecting => {
                    self.state = State::Online;
                    self.events.push_back(Event::ServerBack);
                }
                _ => {}
            },
            Message::Table {
                from,
                to,
                part,
                parts,
                items,
            } => {
                let Some(token) = self.token else { return };
                if self.state != State::Online {
                    return;
                }
                let (outcome, ack) = self.table.handle_part(from, to, part, parts, items);
                if ack && let Ok(b) = (Message::TableAck { token, to, part }).encode() {
                    self.out.push_back(b);
                }
                if outcome == PartOutcome::Applied {
                    self.events.push_back(Event::TableUpdated);
                }
            }
            Message::Register { .. }
            | Message::Offer { .. }
            | Message::Dereg { .. }
            | Message::Heartbeat { .. }
            | Message::TableAck { .. } => {}
        }
    }

    fn on_welcome(&mut self, now: Instant, user: bool, token: Token, heartbeat_ms: u32) {
        self.token = Some(token);
        self.state = State::Online;
        self.next_reconnect = None;
        if heartbeat_ms > 0 {
            self.heartbeat = Duration::from_millis(heartbeat_ms as u64);
        }
        // A new session gets a full snapshot.
        self.table.reset();
        // Heartbeat at once: it proves our address and starts the table push.
        self.send_heartbeat(now);
        let carries = std::mem::take(&mut self.parked);
        if self.offered.is_empty() {
            for op in carries {
                self.offer_part_done(op, None);
            }
        } else {
            let files: Vec<FileEntry> = self.offered.values().cloned().collect();
            self.send_offer(now, files, true, carries);
        }
        self.events.push_back(if user {
            Event::Registered
        } else {
            Event::ServerBack
        });
    }

    fn send_heartbeat(&mut self, now: Instant) {
        let Some(token) = self.token else { return };
        self.next_heartbeat = Some(now + self.heartbeat);
        if self.reqs.any(|t| *t == Tag::Heartbeat) {
            // Still being retried: its retransmissions are our heartbeats, and its
            // failure is how we notice a lost server.
            return;
        }
        let table_version = self.table.version();
        self.request(now, Tag::Heartbeat, |req| Message::Heartbeat {
            req,
            token,
            table_version,
        });
    }

    /// The dereg is done (or the server says we are gone): offline, said once.
    fn go_offline(&mut self) {
        self.stop_automatic();
        self.reqs.cancel_where(|t| *t == Tag::Dereg);
        self.leaving = false;
        self.state = State::Offline;
        self.table.reset();
        self.events.push_back(Event::Deregistered);
    }

    /// The server does not know our session (restarted without it, timed us out, or
    /// applied our dereg): register again on our own, keeping our offers, unless the
    /// user is leaving, in which case we are gone. A registration already in flight is
    /// not restarted. True if a re-registration is on its way.
    fn lost_session(&mut self, now: Instant) -> bool {
        if self.leaving {
            self.go_offline();
            return false;
        }
        if !matches!(self.state, State::Online | State::Reconnecting) {
            return false;
        }
        self.state = State::Reconnecting;
        self.next_heartbeat = None;
        if !self.reqs.any(|t| matches!(t, Tag::Register { .. })) {
            self.next_reconnect = None;
            self.start_register(now, false, true);
        }
        true
    }

    fn offer_part_done(&mut self, op: OpId, failure: Option<OfferFailure>) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        o.remaining -= 1;
        if o.failed.is_none() {
            o.failed = failure;
        }
        if o.remaining > 0 {
            return;
        }
        let o = self.ops.remove(&op).expect("present");
        for carried in o.carries {
            self.offer_part_done(carried, o.failed);
        }
        if o.silent {
            return;
        }
        self.events.push_back(match o.failed {
            None => Event::OfferDone(op),
            Some(f) => Event::OfferFailed(op, f),
        });
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut resend = Vec::new();
        let failed = self.reqs.handle_timeout(now, &mut resend);
        self.out.extend(resend);
        for (id, tag) in failed {
            match tag {
                Tag::Register { user: true } => {
                    // The user is told we are not registered: if the server did register
                    // us and only its welcome was lost, undo it when it comes.
                    self.register_req = None;
                    self.abandon(id);
                    self.state = self.not_online();
                    self.fail_parked(OfferFailure::NoAck);
                    self.events.push_back(Event::RegisterTimedOut);
                }
                Tag::Register { user: false } => {
                    self.register_req = None;
                    self.next_reconnect = Some(now + self.heartbeat);
                    self.fail_parked(OfferFailure::NoAck);
                }
                Tag::Offer(op) => self.offer_part_done(op, Some(OfferFailure::NoAck)),
                Tag::Dereg => {
                    // We stopped heartbeating: the server takes us offline by itself.
                    self.leaving = false;
                    self.state = State::Offline;
                    self.table.reset();
                    self.events.push_back(Event::DeregTimedOut);
                }
                Tag::Bury => {}
                Tag::Heartbeat => {
                    if self.state == State::Online {
                        self.state = State::Reconnecting;
                        self.events.push_back(Event::ServerLost);
                    }
                }
            }
        }
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            // Keep heartbeating while reconnecting: the same session may still be valid
            // once the server is back (it persists sessions).
            self.send_heartbeat(now);
        }
        if self.next_reconnect.is_some_and(|t| t <= now) {
            self.next_reconnect = None;
            self.start_register(now, false, true);
        }
    }
}

/// Splits offered files into groups whose Offer message fits in one datagram.
fn chunk_files(files: Vec<FileEntry>) -> Vec<Vec<FileEntry>> {
    // Header 3, variant 1, req <=10, token <=19, list length <=3.
    const OVERHEAD: usize = 3 + 1 + 10 + 19 + 3;
    let mut chunks: Vec<Vec<FileEntry>> = vec![Vec::new()];
    let mut used = OVERHEAD;
    for f in files {
        // Name length varint (<=2 for <=255 bytes), size varint (<=10), hash 32.
        let size = f.name.len() + 2 + 10 + 32;
        if used + size > MAX_DATAGRAM && !chunks.last().is_some_and(Vec::is_empty) {
            chunks.push(Vec::new());
            used = OVERHEAD;
        }
        used += size;
        chunks.last_mut().expect("never empty").push(f);
    }
    chunks
}

#[cfg(test)]
mod tests;
