//! Hole punching as a state machine: probes to the index server until the control channel
//! names the peer's public UDP endpoint, then punches to that endpoint until one of the
//! peer's punches gets through (the path is open both ways) or time runs out.
//!
//! No I/O and no clock: `handle_*` take what happened and `now`, `poll_transmit` hands
//! out the datagrams to send, `poll_timeout` says when to call `handle_timeout` next.
//! The driver (`src/reach/quic.rs`) moves the bytes and then hands the same socket to
//! QUIC, which authenticates the peer; nothing a punch says is trusted beyond "this
//! endpoint answers" (see `docs/PROTOCOL.md`, "Hole punching").
//!
//! Both magics start with a zero byte: a QUIC packet always has its top bits set
//! (long header) or its fixed bit set (short header), so a late punch that reaches the
//! QUIC endpoint is dropped by it as not QUIC.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// First bytes of a probe to the index server: `PROBE_MAGIC || secret[16]` (20 bytes).
pub const PROBE_MAGIC: [u8; 4] = [0x00, b'F', b'A', b'B'];
/// First bytes of a punch to the peer: `PUNCH_MAGIC || id[16] || role` (21 bytes).
pub const PUNCH_MAGIC: [u8; 4] = [0x00, b'F', b'A', b'P'];
/// Length of a probe datagram.
pub const PROBE_LEN: usize = 20;
/// Length of a punch datagram.
pub const PUNCH_LEN: usize = 21;
/// Punches sent at once when the peer's first punch arrives, so that the peer (still
/// punching) sees one of ours even if some are lost.
pub const CONFIRMATIONS: usize = 3;
/// At most this many datagrams wait in [`Punch::poll_transmit`]'s queue (the oldest go
/// first if a driver does not drain it).
const MAX_QUEUED: usize = 8;

/// The timing of one punch. `Default` is the protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchConfig {
    /// Interval between probes to the server while learning (100 ms).
    pub probe_every: Duration,
    /// Interval between punches to the peer (25 ms).
    pub punch_every: Duration,
    /// How long to wait for the peer's endpoint, from the start (2 s).
    pub learn_timeout: Duration,
    /// How long to punch without an answer, from the moment the peer's endpoint is
    /// known (2 s).
    pub punch_timeout: Duration,
}

impl Default for PunchConfig {
    fn default() -> Self {
        PunchConfig {
            probe_every: Duration::from_millis(100),
            punch_every: Duration::from_millis(25),
            learn_timeout: Duration::from_secs(2),
            punch_timeout: Duration::from_secs(2),
        }
    }
}

/// Which end of the transfer this side is (the owner is the QUIC server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Requester,
    Owner,
}

impl Side {
    /// The role byte of this side's punches.
    pub fn role_byte(self) -> u8 {
        match self {
            Side::Requester => 1,
            Side::Owner => 2,
        }
    }

    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Requester => Side::Owner,
            Side::Owner => Side::Requester,
        }
    }
}

/// Why a punch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PunchFailure {
    /// The control channel never named the peer's endpoint within `learn_timeout`.
    #[error("the peer's public UDP endpoint was not learned in time")]
    NoPeerEndpoint,
    /// No punch from the peer arrived within `punch_timeout`.
    #[error("no answer from the peer's endpoint")]
    NoAnswer,
    /// The endpoint named for the peer cannot be sent to (port 0, unspecified address).
    #[error("the peer's endpoint is not usable")]
    BadPeerEndpoint,
}

/// Where a punch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunchState {
    /// Probing the server, waiting for the peer's endpoint.
    Learning,
    /// Punching towards the peer, waiting for its punch.
    Punching,
    /// A punch from the peer arrived: the path is open, QUIC may start on it.
    Open {
        peer: SocketAddr,
    },
    Failed(PunchFailure),
}

/// The probe this side sends to the server.
pub fn probe_datagram(secret: &[u8; 16]) -> Vec<u8> {
    let mut d = Vec::with_capacity(PROBE_LEN);
    d.extend_from_slice(&PROBE_MAGIC);
    d.extend_from_slice(secret);
    d
}

/// The secret of a probe (for the server side); `None` for anything else.
pub fn parse_probe(bytes: &[u8]) -> Option<[u8; 16]> {
    if bytes.len() != PROBE_LEN || bytes[..4] != PROBE_MAGIC {
        return None;
    }
    bytes[4..].try_into().ok()
}

/// A punch from `side` for transfer `id`.
pub fn punch_datagram(id: &[u8; 16], side: Side) -> Vec<u8> {
    let mut d = Vec::with_capacity(PUNCH_LEN);
    d.extend_from_slice(&PUNCH_MAGIC);
    d.extend_from_slice(id);
    d.push(side.role_byte());
    d
}

/// The id and role byte of a punch; `None` for anything else.
pub fn parse_punch(bytes: &[u8]) -> Option<([u8; 16], u8)> {
    if bytes.len() != PUNCH_LEN || bytes[..4] != PUNCH_MAGIC {
        return None;
    }
    let id = bytes[4..20].try_into().ok()?;
    Some((id, bytes[20]))
}

/// One hole punch, from the first probe to an open path (or a failure).
#[derive(Debug)]
pub struct Punch {
    cfg: PunchConfig,
    side: Side,
    id: [u8; 16],
    secret: [u8; 16],
    server: SocketAddr,
    state: PunchState,
    /// Learning: give up at this time.
    learn_deadline: Instant,
    /// Punching: give up at this time (set by `peer_known`).
    punch_deadline: Instant,
    /// The next probe or punch is due at this time.
    next_send: Instant,
    /// The peer's endpoint, once known (adopted anew if its NAT changed the port).
    peer: Option<SocketAddr>,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl Punch {
    /// Starts learning: the first probe is ready at once.
    pub fn new(
        now: Instant,
        cfg: PunchConfig,
        side: Side,
        id: [u8; 16],
        secret: [u8; 16],
        server: SocketAddr,
    ) -> Punch {
        let mut p = Punch {
            cfg,
            side,
            id,
            secret,
            server,
            state: PunchState::Learning,
            learn_deadline: now + cfg.learn_timeout,
            punch_deadline: now + cfg.learn_timeout + cfg.punch_timeout,
            next_send: now + cfg.probe_every,
            peer: None,
            queue: VecDeque::new(),
        };
        p.send_probe();
        p
    }

    /// The control channel told us the peer's public endpoint: start punching (the
    /// first punch is ready at once). Ignored unless still learning.
    pub fn peer_known(&mut self, now: Instant, peer: SocketAddr) {
        if self.state != PunchState::Learning {
            return;
        }
        if peer.port() == 0 || peer.ip().is_unspecified() {
            self.fail(PunchFailure::BadPeerEndpoint);
            return;
        }
        self.peer = Some(peer);
        self.state = PunchState::Punching;
        self.punch_deadline = now + self.cfg.punch_timeout;
        self.next_send = now + self.cfg.punch_every;
        self.send_punch();
    }

    /// A datagram arrived on the punch socket. Only a punch for our id from the other
    /// side, from the peer's endpoint (or from its IP address with another port: a NAT
    /// that rewrote the port, whose endpoint is adopted), counts; anything else is
    /// ignored.
    pub fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.state != PunchState::Punching {
            return;
        }
        let Some(peer) = self.peer else {
            return;
        };
        let Some((id, role)) = parse_punch(bytes) else {
            return;
        };
        if id != self.id || role != self.side.other().role_byte() {
            return;
        }
        if from.ip().to_canonical() != peer.ip().to_canonical() {
            return;
        }
        self.peer = Some(from);
        self.state = PunchState::Open { peer: from };
        for _ in 0..CONFIRMATIONS {
            self.send_punch();
        }
    }

    /// Sends what is due and gives up when time is out.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            PunchState::Learning if now >= self.learn_deadline => {
                self.fail(PunchFailure::NoPeerEndpoint)
            }
            PunchState::Punching if now >= self.punch_deadline => self.fail(PunchFailure::NoAnswer),
            PunchState::Learning if now >= self.next_send => {
                self.next_send = next_after(self.next_send, now, self.cfg.probe_every);
                self.send_probe();
            }
            PunchState::Punching if now >= self.next_send => {
                self.next_send = next_after(self.next_send, now, self.cfg.punch_every);
                self.send_punch();
            }
            _ => {}
        }
    }

    /// The next datagram to send and where to.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.queue.pop_front()
    }

    /// When `handle_timeout` must be called next; `None` once open or failed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            PunchState::Learning => Some(self.next_send.min(self.learn_deadline)),
            PunchState::Punching => Some(self.next_send.min(self.punch_deadline)),
            PunchState::Open { .. } | PunchState::Failed(_) => None,
        }
    }

    pub fn state(&self) -> PunchState {
        self.state
    }

    fn fail(&mut self, why: PunchFailure) {
        self.state = PunchState::Failed(why);
        self.queue.clear();
    }

    fn push(&mut self, to: SocketAddr, d: Vec<u8>) {
        if self.queue.len() >= MAX_QUEUED {
            self.queue.pop_front();
        }
        self.queue.push_back((to, d));
    }

    fn send_probe(&mut self) {
        let d = probe_datagram(&self.secret);
        self.push(self.server, d);
    }

    fn send_punch(&mut self) {
        if let Some(peer) = self.peer {
            let d = punch_datagram(&self.id, self.side);
            self.push(peer, d);
        }
    }
}

/// The send time after `due` for a period `every`, skipping any periods a late wake-up
/// missed (no bursts to catch up).
fn next_after(due: Instant, now: Instant, every: Duration) -> Instant {
    let next = due + every;
    if next <= now { now + every } else { next }
}

#[cfg(test)]
mod tests;
