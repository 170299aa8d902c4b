//! The relay's pairing as a state machine: hellos and `now` in, verdicts and deadlines
//! out (`docs/PROTOCOL.md`, "Relay"). The driver (`fileapp::reach::relay`) owns the
//! sockets; this decides which connection gets which status byte and which two are
//! spliced.
//!
//! - A hello is `b"FARL"` then a 90-byte [`Ticket`]. Anything else is closed without a
//!   byte. The ticket is verified before anything is remembered about it.
//! - Tickets are single-use per (id, role): each is remembered until it expires (a
//!   reuse, or a second half with the same role, is [`Status::AlreadyUsed`]).
//! - The first half of an id waits, up to the pair timeout, for the other role; the
//!   second half pairs with it.
//! - Limits: paired sessions plus waiting halves never exceed `max_sessions`, waiting
//!   halves never exceed `max_waiting`, remembered tickets never exceed `max_remembered`
//!   (each is [`Status::Full`]).
//!
//! [`bucket`] holds the token bucket the driver's copies are rate-limited by.

pub mod bucket;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::identity::PublicKey;
use crate::reach::ticket::{Role, TICKET_LEN, Ticket, TicketError};

pub use bucket::TokenBucket;

/// The hello's first bytes.
pub const HELLO_MAGIC: [u8; 4] = *b"FARL";
/// A hello: the magic, then a ticket.
pub const HELLO_LEN: usize = HELLO_MAGIC.len() + TICKET_LEN;

/// Defaults of [`Limits`] (and of `fileapp relay`'s options).
pub const DEFAULT_MAX_SESSIONS: usize = 256;
pub const DEFAULT_PAIR_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Tickets remembered at most (each under a hundred bytes, so a few MB at most): far
/// more than 256 sessions use in a ticket's 30 s.
pub const DEFAULT_MAX_REMEMBERED: usize = 65_536;
/// A ticket expiring further ahead than this is refused: a relay must remember every
/// ticket until it expires, so it will not promise to remember one for longer. (The
/// server's tickets live 30 s; the margin is for clocks that disagree.)
pub const MAX_TICKET_AHEAD: Duration = Duration::from_secs(600);

/// The one status byte a relay answers a hello with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// From the next byte on, the stream is spliced to the partner.
    Paired,
    /// Malformed ticket or bad signature.
    BadTicket,
    Expired,
    /// This id and role were already presented.
    AlreadyUsed,
    /// The session, waiting or ticket limit is reached.
    Full,
    /// The partner did not arrive within the pair timeout.
    PartnerTimeout,
}

impl Status {
    pub fn to_byte(self) -> u8 {
        match self {
            Status::Paired => 0,
            Status::BadTicket => 1,
            Status::Expired => 2,
            Status::AlreadyUsed => 3,
            Status::Full => 4,
            Status::PartnerTimeout => 5,
        }
    }

    pub fn from_byte(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Paired,
            1 => Status::BadTicket,
            2 => Status::Expired,
            3 => Status::AlreadyUsed,
            4 => Status::Full,
            5 => Status::PartnerTimeout,
            _ => return None,
        })
    }
}

/// The relay's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Paired sessions plus halves waiting for a partner.
    pub max_sessions: usize,
    /// Halves waiting for a partner.
    pub max_waiting: usize,
    /// Tickets remembered (until each one expires).
    pub max_remembered: usize,
    /// How long a first half waits for its partner.
    pub pair_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_waiting: DEFAULT_MAX_SESSIONS,
            max_remembered: DEFAULT_MAX_REMEMBERED,
            pair_timeout: DEFAULT_PAIR_TIMEOUT,
        }
    }
}

/// The driver's name for a connection (unique while it is open).
pub type ConnId = u64;

/// What to do with a connection that sent a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not a hello: close without answering.
    Close,
    /// Answer this status byte, then close.
    Refuse(Status),
    /// The first half: hold the connection until [`Verdict::Paired`] names it as a
    /// partner, or [`Relay::handle_timeout`] gives it up.
    Wait,
    /// The second half: answer [`Status::Paired`] to both, then splice them.
    Paired { partner: ConnId },
}

#[derive(Debug, Clone, Copy)]
struct Half {
    conn: ConnId,
    role: Role,
    deadline: Instant,
}

/// Tickets seen, halves waiting, sessions running.
#[derive(Debug)]
pub struct Relay {
    key: PublicKey,
    limits: Limits,
    /// (id, role) presented, until when it is remembered.
    seen: HashMap<([u8; 16], Role), Instant>,
    /// The same, by expiry.
    seen_by_expiry: BTreeSet<(Instant, [u8; 16], Role)>,
    waiting: HashMap<[u8; 16], Half>,
    waiting_by_conn: HashMap<ConnId, [u8; 16]>,
    deadlines: BTreeSet<(Instant, ConnId)>,
    sessions: usize,
}

impl Relay {
    /// A relay pairing what `server_key` signed.
    pub fn new(server_key: PublicKey, limits: Limits) -> Relay {
        Relay {
            key: server_key,
            limits,
            seen: HashMap::new(),
            seen_by_expiry: BTreeSet::new(),
            waiting: HashMap::new(),
            waiting_by_conn: HashMap::new(),
            deadlines: BTreeSet::new(),
            sessions: 0,
        }
    }

    /// `conn` sent `bytes` as its hello at `now` (unix time `now_ms`).
    pub fn hello(&mut self, conn: ConnId, bytes: &[u8], now: Instant, now_ms: u64) -> Verdict {
        if bytes.len() != HELLO_LEN || bytes[..4] != HELLO_MAGIC {
            return Verdict::Close;
        }
        if self.waiting_by_conn.contains_key(&conn) {
            // One hello per connection; the driver never sends two.
            return Verdict::Close;
        }
        let ticket = match Ticket::open(&bytes[4..], &self.key, now_ms) {
            Ok(t) => t,
            Err(TicketError::Malformed | TicketError::BadSignature) => {
                return Verdict::Refuse(Status::BadTicket);
            }
            Err(TicketError::Expired) => return Verdict::Refuse(Status::Expired),
        };
        let ahead = Duration::from_millis(ticket.expires_ms - now_ms);
        if ahead > MAX_TICKET_AHEAD {
            return Verdict::Refuse(Status::BadTicket);
        }
        self.expire(now);
        let key = (ticket.id, ticket.role);
        if self.seen.contains_key(&key) {
            return Verdict::Refuse(Status::AlreadyUsed);
        }
        if self.seen.len() >= self.limits.max_remembered {
            return Verdict::Refuse(Status::Full);
        }
        let verdict = match self.waiting.get(&ticket.id) {
            Some(first) if first.role == ticket.role.other() => {
                let first = *first;
                self.unwait(first.conn);
                self.sessions += 1;
                Verdict::Paired {
                    partner: first.conn,
                }
            }
            // Same role is caught as already used above; a waiting entry always has
            // one of the two roles.
            Some(_) => return Verdict::Refuse(Status::AlreadyUsed),
            None => {
                if self.waiting.len() >= self.limits.max_waiting
                    || self.sessions + self.waiting.len() >= self.limits.max_sessions
                {
                    return Verdict::Refuse(Status::Full);
                }
                let deadline = now + self.limits.pair_timeout;
                self.waiting.insert(
                    ticket.id,
                    Half {
                        conn,
                        role: ticket.role,
                        deadline,
                    },
                );
                self.waiting_by_conn.insert(conn, ticket.id);
                self.deadlines.insert((deadline, conn));
                Verdict::Wait
            }
        };
        let until = now + ahead;
        self.seen.insert(key, until);
        self.seen_by_expiry.insert((until, ticket.id, ticket.role));
        verdict
    }

    fn unwait(&mut self, conn: ConnId) -> bool {
        let Some(id) = self.waiting_by_conn.remove(&conn) else {
            return false;
        };
        if let Some(h) = self.waiting.remove(&id) {
            self.deadlines.remove(&(h.deadline, conn));
        }
        true
    }

    /// Forgets tickets whose expiry has passed.
    fn expire(&mut self, now: Instant) {
        while let Some(&first) = self.seen_by_expiry.first() {
            if first.0 > now {
                break;
            }
            self.seen_by_expiry.pop_first();
            self.seen.remove(&(first.1, first.2));
        }
    }

    /// When [`Relay::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let waiting = self.deadlines.first().map(|d| d.0);
        let seen = self.seen_by_expiry.first().map(|s| s.0);
        match (waiting, seen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Gives up the halves whose partner did not come by `now` (answer them
    /// [`Status::PartnerTimeout`] and close them) and forgets expired tickets.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<ConnId> {
        let mut out = Vec::new();
        while let Some(&(deadline, conn)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.unwait(conn);
            out.push(conn);
        }
        self.expire(now);
        out
    }

    /// A waiting half's connection closed (or failed) before its partner came. Its
    /// ticket stays used. Returns whether `conn` was waiting.
    pub fn left(&mut self, conn: ConnId) -> bool {
        self.unwait(conn)
    }

    /// A paired session ended (both its connections are closed).
    pub fn session_ended(&mut self) {
        self.sessions = self.sessions.saturating_sub(1);
    }

    /// Paired sessions running.
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// Halves waiting for a partner.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Tickets remembered.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// A hello for `ticket` (what a client sends).
pub fn hello_bytes(ticket: &[u8; TICKET_LEN]) -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    h[..4].copy_from_slice(&HELLO_MAGIC);
    h[4..].copy_from_slice(ticket);
    h
}

#[cfg(test)]
mod tests;
