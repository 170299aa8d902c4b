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
//!
//! This file holds the state, the outputs and the dispatch of inputs to the job they
//! concern; each job's behaviour lives in its own file: `register.rs` (registration,
//! re-registration, abandoned registrations), `leave.rs` (dereg, goodbye, `leaving`),
//! `offers.rs` (offers and re-offers), `liveness.rs` (heartbeats, lost server) and
//! `sync.rs` (table pushes, read-your-writes).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::identity::Identity;
use crate::proto::{EncodeError, FileEntry, Message, Reject, ReqId, Token};
use crate::reliable::{Outstanding, RetryPolicy};

use super::table::ClientTable;

mod failover;
mod leave;
mod liveness;
mod offers;
mod reach;
mod register;
mod sync;

use offers::OfferOp;
pub use reach::Meeting;

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
    /// A request could not be encoded, so it was never sent; it fails as if unanswered.
    /// (Nothing the core builds should hit this: names are validated and offers chunked.)
    Unsendable(EncodeError),
    /// The server arranged the meeting we asked for ([`ClientCore::connect`]).
    Connected(Meeting),
    /// The server we talked to stopped answering: the channel must start over with
    /// this address (a new handshake, the same pinned key); only its datagrams count
    /// from now on. Nothing for the user yet (see [`Event::Moved`]).
    Switch(std::net::SocketAddr),
    /// After `from` stopped answering, `to` registered us again: same session as far as
    /// the others can tell (name, key, offers), table resynchronising.
    Moved {
        from: std::net::SocketAddr,
        to: std::net::SocketAddr,
    },
    /// The server refused the meeting (`Some`), or never answered (`None`).
    ConnectFailed {
        id: [u8; 16],
        reason: Option<Reject>,
    },
    /// Requester `from` wants a transfer connection to us along `meeting`.
    Dial {
        from: String,
        meeting: Meeting,
    },
    /// A punch can start: the peer's public UDP endpoint (`None`: it cannot work).
    PunchPeer {
        id: [u8; 16],
        peer: Option<std::net::SocketAddr>,
    },
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
    /// Our signed record.
    Record,
    /// A meeting we asked for.
    Connect([u8; 16]),
}

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

/// The client's control-plane state.
pub struct ClientCore {
    cfg: Config,
    state: State,
    token: Option<Token>,
    instance: u64,
    seed: u64,
    /// The control channel's handshake hash, which registration proofs are signed over
    /// (see [`ClientCore::set_binding`]).
    binding: [u8; 32],
    /// Sequence number of our last signed record (see [`ClientCore::set_record_seq`]).
    record_seq: u64,
    /// Our record changed on the server: sign and send it at the next step.
    record_due: bool,
    reqs: Outstanding<Tag>,
    out: VecDeque<Vec<u8>>,
    /// NAT test datagrams (clear, to the server's probe port).
    probes: VecDeque<Vec<u8>>,
    /// Recent `Dial` ids (see `reach.rs`).
    dials: VecDeque<[u8; 16]>,
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
    /// Requests that could not be encoded (when, which, whose): failed at the next
    /// `handle_timeout`, which `poll_timeout` asks for at once.
    unsent: Vec<(Instant, ReqId, Tag)>,
    /// The registration `goodbye` abandoned while it was in flight, until its late
    /// welcome comes (see `settling`).
    settle: Option<ReqId>,
    /// Parts of user offers refused as NotRegistered while we register again; the
    /// re-offer after the welcome carries them (see `OfferOp::carries`).
    parked: Vec<OpId>,
    /// The deployment's servers, for failover (see `failover.rs`).
    servers: failover::Servers,
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
            binding: [0; 32],
            record_seq: 0,
            record_due: false,
            out: VecDeque::new(),
            probes: VecDeque::new(),
            dials: VecDeque::new(),
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
            unsent: Vec::new(),
            settle: None,
            parked: Vec::new(),
            servers: Default::default(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Our signed records will be numbered from `seq + 1`: a restarted process must
    /// number above its previous run, so the driver starts it from the wall clock (in
    /// microseconds); clients keep the highest number they saw.
    pub fn set_record_seq(&mut self, seq: u64) {
        self.record_seq = self.record_seq.max(seq);
    }

    /// The control channel opened a session with handshake hash `binding`: later
    /// registration proofs are signed over it, so the server accepts them in that
    /// session only.
    pub fn set_binding(&mut self, binding: [u8; 32]) {
        self.binding = binding;
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
            self.unsent.first().map(|(at, _, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Starts a retried request tagged `tag`, built by `make` from its id; every job
    /// sends through here so that one [`Outstanding`] sees all of them.
    fn request(&mut self, now: Instant, tag: Tag, make: impl FnOnce(u64) -> Message) -> ReqId {
        let id = self.reqs.next_id();
        match make(id).encode() {
            Ok(bytes) => {
                let first = self.reqs.start(now, id, bytes, tag);
                self.out.push_back(first);
            }
            Err(e) => {
                // Said, and failed at the next timeout as if no answer came, so the job
                // that asked ends the way it ends for a lost request.
                self.events.push_back(Event::Unsendable(e));
                self.unsent.push((now, id, tag));
            }
        }
        id
    }

    /// A request gave up (no answer after its retries, or never sendable).
    fn request_failed(&mut self, now: Instant, id: ReqId, tag: Tag) {
        match tag {
            Tag::Register { user } => self.on_register_timed_out(now, id, user),
            Tag::Offer(op) => self.offer_part_done(op, Some(OfferFailure::NoAck)),
            Tag::Dereg => self.on_dereg_timed_out(),
            Tag::Bury | Tag::Record => {}
            Tag::Heartbeat => self.on_heartbeat_timed_out(),
            Tag::Connect(m) => self.on_connect_failed(m, None),
        }
    }

    /// A datagram from the server: a reply goes to the job whose request it answers,
    /// a table push to the table sync.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        self.on_datagram(now, bytes);
        if self.record_due {
            self.send_record(now);
        }
    }

    fn on_datagram(&mut self, now: Instant, bytes: &[u8]) {
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
                Some(Tag::Register { user }) => self.on_register_rejected(now, user, reason),
                Some(Tag::Offer(op)) => self.on_offer_rejected(now, op, reason),
                Some(Tag::Heartbeat) if reason == Reject::NotRegistered => {
                    self.lost_session(now);
                }
                Some(Tag::Dereg) => {
                    // The server no longer knows this session: we are offline either way.
                    self.go_offline();
                }
                Some(Tag::Connect(m)) => self.on_connect_failed(m, Some(reason)),
                _ => {}
            },
            Message::Ack { req, version } => match self.reqs.complete(req) {
                Some(Tag::Offer(op)) => {
                    self.seen_version = self.seen_version.max(version);
                    self.offer_part_done(op, None)
                }
                Some(Tag::Dereg) => self.go_offline(),
                Some(Tag::Heartbeat) => self.on_heartbeat_acked(),
                Some(Tag::Record) => self.seen_version = self.seen_version.max(version),
                _ => {}
            },
            Message::Table {
                from,
                to,
                part,
                parts,
                items,
            } => self.on_table_part(from, to, part, parts, items),
            Message::Connected {
                req,
                via,
                addr,
                ticket,
                secret,
            } => {
                if let Some(Tag::Connect(id)) = self.reqs.complete(req) {
                    let m = Meeting {
                        id,
                        via,
                        addr,
                        ticket,
                        secret,
                    };
                    self.on_connected(id, m);
                }
            }
            Message::Dial {
                id,
                from,
                via,
                addr,
                ticket,
                secret,
            } => {
                let m = Meeting {
                    id,
                    via,
                    addr,
                    ticket,
                    secret,
                };
                self.on_dial(from, m);
            }
            Message::PunchPeer { id, peer } => {
                if self.state == State::Online {
                    self.events.push_back(Event::PunchPeer { id, peer });
                }
            }
            Message::Connect { .. }
            | Message::Register { .. }
            | Message::Record { .. }
            | Message::Offer { .. }
            | Message::Dereg { .. }
            | Message::Heartbeat { .. }
            | Message::TableAck { .. } => {}
        }
    }

    /// Time passed: retransmissions go out, requests out of retries go to the job that
    /// sent them, and due heartbeats and re-registrations start.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.on_timeout(now);
        if self.record_due {
            self.send_record(now);
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        // Judged before the failures below: a move schedules its registration for now,
        // and it must wait for the next call, once the owner has followed the
        // `Event::Switch` (else it would go out through the old server's session).
        let reconnect_due = self.next_reconnect.is_some_and(|t| t <= now);
        let mut resend = Vec::new();
        let failed = self.reqs.handle_timeout(now, &mut resend);
        self.out.extend(resend);
        // Silence from the server we talk to moves us to the next one, if we have one.
        if !self.move_if_silent(now, &failed) {
            for (id, tag) in failed {
                self.request_failed(now, id, tag);
            }
        }
        for (_, id, tag) in std::mem::take(&mut self.unsent) {
            self.request_failed(now, id, tag);
        }
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            // Keep heartbeating while reconnecting: the same session may still be valid
            // once the server is back (it persists sessions).
            self.send_heartbeat(now);
        }
        if reconnect_due && self.next_reconnect.is_some_and(|t| t <= now) {
            self.next_reconnect = None;
            let (user, keep_offers) = self.reconnect_kind();
            self.start_register(now, user, keep_offers);
        }
    }
}

#[cfg(test)]
mod tests;
