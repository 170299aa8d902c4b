//! Reach: what the server judges of each client's reachability, and the meetings it
//! arranges between a requester and an owner that cannot reach each other directly.
//!
//! - Reachability. After each registration the driver tests whether the client's TCP
//!   port accepts a connection from outside ([`Index::poll_reach_test`], answered by
//!   [`Index::reach_tested`]); the client's NAT-test datagram, sent from its control
//!   socket to the server's probe port, tells whether its NAT maps UDP per destination
//!   ([`Index::handle_probe`]). Both reach every client as an `Item::Reach`.
//! - Meetings (`Message::Connect`): reverse (the owner is told to connect out to the
//!   requester), relayed (both get single-use tickets for a relay) and punched (both
//!   get a probe secret; once the server has seen each side's probe it tells each the
//!   other's public UDP endpoint). A meeting lives [`MEETING_LIFETIME`]; asking again
//!   with the same id repeats the same answers, so loss is healed by the requester's
//!   retransmissions.
//!
//! Probe datagrams come in clear (they are sent from sockets with no channel session)
//! and are never answered on the path they came by: the server only records the
//! source address a 128-bit secret came from, and speaks to the clients through their
//! authenticated sessions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;

use crate::identity::Identity;
use crate::proto::{Item, Message, Reject, ReqId, Token};
use crate::reach::punch::PROBE_MAGIC;
use crate::reach::ticket::{Role, TICKET_LIFETIME_MS, Ticket};
use crate::reach::{Nat, Reach, Via};

use super::{Index, Owner, OwnerId};

/// First bytes of the NAT test a client sends from its control socket to the server's
/// probe port (its UDP port + 1), followed by [`nat_key`] of its session token.
pub const NAT_MAGIC: [u8; 4] = [0x00, b'F', b'A', b'N'];
/// Length of a NAT test or a punch probe datagram.
pub const PROBE_LEN: usize = 20;
/// How long a meeting's answers are kept for retransmitted `Connect`s and probes.
pub const MEETING_LIFETIME: Duration = Duration::from_secs(30);
/// Most meetings one requester may have open at once.
pub const MAX_MEETINGS_PER_CLIENT: usize = 16;
/// Most meetings open at once.
pub const MAX_MEETINGS: usize = 4096;

/// The key of a client's NAT test: only the holder of the session token knows it.
pub fn nat_key(token: Token) -> [u8; 16] {
    let k = blake3::derive_key("fileapp nat test v1", &token.to_le_bytes());
    let mut out = [0; 16];
    out.copy_from_slice(&k[..16]);
    out
}

/// The relay the server hands tickets for, and the clock tickets expire by.
#[derive(Clone)]
pub struct RelaySetup {
    /// Signs tickets: the relay checks them with its public key.
    pub signer: Arc<Identity>,
    /// Where clients connect (`None`: the server's own address, TCP, same port).
    pub addr: Option<SocketAddr>,
    /// The server's own address when it is known (it was bound to one): what an owner
    /// of another server is told when `addr` is `None`. Without either, relayed
    /// meetings with other servers' owners cannot be arranged.
    pub public: Option<SocketAddr>,
    /// Wall-clock time (unix ms) at the index's `epoch` instant.
    pub unix_ms_at_epoch: u64,
}

impl std::fmt::Debug for RelaySetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelaySetup({:?})", self.addr)
    }
}

/// A TCP port the driver is to test from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachTest {
    pub name: String,
    pub instance: u64,
    pub addr: SocketAddr,
}

/// One side of a punch: its secret and, once seen, the endpoint its probes came from.
#[derive(Debug, Clone)]
struct PunchSide {
    secret: [u8; 16],
    seen: Option<SocketAddr>,
}

/// A meeting the server arranged.
#[derive(Debug, Clone)]
pub(super) struct Meeting {
    requester: OwnerId,
    owner: OwnerId,
    via: Via,
    expires: Instant,
    dial: Message,
    answer: Message,
    /// Punched: (requester, owner).
    punch: Option<[PunchSide; 2]>,
}

/// The index's reach state.
#[derive(Debug, Default)]
pub(super) struct ReachState {
    pub(super) relay: Option<RelaySetup>,
    meetings: HashMap<[u8; 16], Meeting>,
    /// Punch secret -> (meeting, side: 0 requester, 1 owner).
    secrets: HashMap<[u8; 16], ([u8; 16], usize)>,
    /// NAT test key -> owner.
    nat_keys: HashMap<[u8; 16], OwnerId>,
    tests: std::collections::VecDeque<ReachTest>,
}

impl Owner {
    pub(super) fn reach_item(&self) -> Item {
        Item::Reach {
            owner: self.name.clone(),
            tcp: self.reach.tcp,
            nat: self.reach.nat,
        }
    }
}

impl Index {
    /// Hands out relay tickets from now on (the server runs or names a relay).
    pub fn set_relay(&mut self, relay: RelaySetup) {
        self.reach.relay = Some(relay);
    }

    /// The next TCP port to test from outside (after a registration).
    pub fn poll_reach_test(&mut self) -> Option<ReachTest> {
        self.reach.tests.pop_front()
    }

    /// The driver's test of `t` found its TCP port reachable (`ok`) or not. Ignored when
    /// the owner registered again meanwhile.
    pub fn reach_tested(&mut self, now: Instant, t: &ReachTest, ok: bool) {
        let Some(&id) = self.by_name.get(&t.name) else {
            return;
        };
        let o = &self.owners[id];
        if !o.online || o.instance != t.instance || o.reach.tcp == Some(ok) {
            return;
        }
        self.update_reach(now, id, |r| r.tcp = Some(ok));
    }

    /// What the server judged of `name` (for tests and diagnostics).
    pub fn owner_reach(&self, name: &str) -> Option<Reach> {
        Some(self.owners[*self.by_name.get(name)?].reach)
    }

    fn update_reach(&mut self, now: Instant, id: OwnerId, f: impl FnOnce(&mut Reach)) {
        let v = self.bump();
        let o = &mut self.owners[id];
        f(&mut o.reach);
        o.reach_ver = v;
        self.set_latest(id, v);
        self.schedule_push_now(now);
        // The other servers of a deployment show it too; a lone server keeps none.
        if self.in_deployment() {
            self.ops.push(crate::store::StoreOp::Owner(self.row(id)));
        }
    }

    /// After a registration of `id` with session `token`: its reach is unknown again,
    /// its TCP port is to be tested, and its NAT test will carry this token's key.
    pub(super) fn reach_registered(&mut self, id: OwnerId, token: Token, old: Token, v: u64) {
        self.reach.nat_keys.remove(&nat_key(old));
        self.reach.nat_keys.insert(nat_key(token), id);
        let o = &mut self.owners[id];
        o.reach = Reach::default();
        o.reach_ver = v;
        // Only the address the client proved it sends from is tested: an advertised
        // one could aim the server's connections at anyone (it stays untested, and
        // requesters try it directly first).
        if o.peer_ip.to_canonical() != o.addr.ip().to_canonical() {
            return;
        }
        let t = ReachTest {
            name: o.name.clone(),
            instance: o.instance,
            addr: SocketAddr::new(o.addr.ip(), o.tcp_port),
        };
        self.reach.tests.push_back(t);
    }

    /// A clear datagram of the probe kind from `src`: a NAT test on the probe port
    /// (`probe_port`), a punch probe on the main port. Never answered to `src`.
    pub fn handle_probe(&mut self, now: Instant, src: SocketAddr, bytes: &[u8], probe_port: bool) {
        if bytes.len() != PROBE_LEN {
            return;
        }
        let (magic, secret) = bytes.split_at(4);
        let Ok(secret) = <[u8; 16]>::try_from(secret) else {
            return;
        };
        if probe_port && magic == NAT_MAGIC {
            self.on_nat_test(now, src, &secret);
        } else if !probe_port && magic == PROBE_MAGIC {
            self.on_punch_probe(now, src, &secret);
        }
    }

    fn on_nat_test(&mut self, now: Instant, src: SocketAddr, key: &[u8; 16]) {
        let Some(&id) = self.reach.nat_keys.get(key) else {
            return;
        };
        let o = &self.owners[id];
        if !o.online || o.addr.ip() != src.ip() || o.reach.nat != Nat::Unknown {
            return;
        }
        // The same socket sent to another port of ours: one mapping for both
        // destinations, or a new one for this destination.
        let nat = if o.addr.port() == src.port() {
            Nat::Independent
        } else {
            Nat::Dependent
        };
        self.update_reach(now, id, |r| r.nat = nat);
    }

    pub(super) fn on_punch_probe(&mut self, now: Instant, src: SocketAddr, secret: &[u8; 16]) {
        let Some(&(id, side)) = self.reach.secrets.get(secret) else {
            // Perhaps an owner of ours probing for a meeting another server holds.
            return self.probe_for_elsewhere(now, src, secret);
        };
        let Some(m) = self.reach.meetings.get_mut(&id) else {
            return;
        };
        let Some(sides) = m.punch.as_mut() else {
            return;
        };
        sides[side].seen = Some(src);
        let (Some(r), Some(o)) = (sides[0].seen, sides[1].seen) else {
            return;
        };
        let (requester, owner) = (m.requester, m.owner);
        // Every probe once both are known repeats the news: a lost one is healed by
        // the next probe, which the client sends until it hears.
        let to_r = self.owners[requester].addr;
        self.send(to_r, &Message::PunchPeer { id, peer: Some(o) });
        self.deliver(owner, &Message::PunchPeer { id, peer: Some(r) });
    }

    /// `Connect` from `src`: arrange (or repeat) the meeting `id` with `owner`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_connect(
        &mut self,
        now: Instant,
        src: SocketAddr,
        req: ReqId,
        token: Token,
        owner: String,
        via: Via,
        id: [u8; 16],
    ) {
        let Some(me) = self.session(src, token).filter(|&i| self.owners[i].online) else {
            return self.reject(src, req, Reject::NotRegistered);
        };
        self.owners[me].last_seen = now;
        self.expire_meetings(now);
        if let Some(m) = self.reach.meetings.get(&id) {
            if m.requester != me {
                return self.reject(src, req, Reject::InvalidName);
            }
            let (dial, mut answer) = (m.dial.clone(), m.answer.clone());
            if let Message::Connected { req: r, .. } = &mut answer {
                *r = req;
            }
            let owner = m.owner;
            self.deliver(owner, &dial);
            return self.send(src, &answer);
        }
        let Some(&them) = self.by_name.get(&owner) else {
            return self.reject(src, req, Reject::Unreachable);
        };
        if them == me || !self.owners[them].online || !self.can_meet(them) {
            return self.reject(src, req, Reject::Unreachable);
        }
        let mine = self
            .reach
            .meetings
            .values()
            .filter(|m| m.requester == me)
            .count();
        if mine >= MAX_MEETINGS_PER_CLIENT || self.reach.meetings.len() >= MAX_MEETINGS {
            return self.reject(src, req, Reject::LimitExceeded);
        }
        let Some(m) = self.meeting(now, me, them, via, id) else {
            return self.reject(src, req, Reject::Unreachable);
        };
        if let Some(sides) = &m.punch {
            for (side, s) in sides.iter().enumerate() {
                self.reach.secrets.insert(s.secret, (id, side));
            }
        }
        let (dial, mut answer) = (m.dial.clone(), m.answer.clone());
        if let Message::Connected { req: r, .. } = &mut answer {
            *r = req;
        }
        self.reach.meetings.insert(id, m);
        self.deliver(them, &dial);
        self.send(src, &answer);
    }

    /// The meeting for `via`, if the server can arrange it.
    fn meeting(
        &mut self,
        now: Instant,
        me: OwnerId,
        them: OwnerId,
        via: Via,
        id: [u8; 16],
    ) -> Option<Meeting> {
        let remote = self.is_remote(them);
        let (r, o) = (&self.owners[me], &self.owners[them]);
        let from = r.name.clone();
        let mut m = Meeting {
            requester: me,
            owner: them,
            via,
            expires: now + MEETING_LIFETIME,
            dial: Message::Dial {
                id,
                from,
                via,
                addr: None,
                ticket: None,
                secret: None,
            },
            answer: Message::Connected {
                req: 0,
                via,
                addr: None,
                ticket: None,
                secret: None,
            },
            punch: None,
        };
        let (
            Message::Dial {
                addr,
                ticket,
                secret,
                ..
            },
            Message::Connected {
                addr: a_addr,
                ticket: a_ticket,
                secret: a_secret,
                ..
            },
        ) = (&mut m.dial, &mut m.answer)
        else {
            return None;
        };
        match via {
            Via::Direct => return None,
            Via::Reverse => {
                if r.reach.tcp == Some(false) {
                    return None;
                }
                *addr = Some(SocketAddr::new(r.peer_ip, r.tcp_port));
            }
            Via::Relayed => {
                let relay = self.reach.relay.as_ref()?;
                let at = now.saturating_duration_since(self.epoch).as_millis() as u64;
                let expires_ms = relay.unix_ms_at_epoch + at + TICKET_LIFETIME_MS;
                let seal = |role| {
                    (Ticket {
                        id,
                        role,
                        expires_ms,
                    })
                    .seal(&relay.signer)
                    .to_vec()
                };
                // "The server's own address" means the owner's server to an owner of
                // another server: it must be told this relay's address.
                *addr = match remote {
                    true => Some(relay.addr.or(relay.public)?),
                    false => relay.addr,
                };
                *a_addr = relay.addr;
                *ticket = Some(seal(Role::Owner));
                *a_ticket = Some(seal(Role::Requester));
            }
            Via::Punched => {
                if r.reach.nat == Nat::Dependent || o.reach.nat == Nat::Dependent {
                    return None;
                }
                let secrets: [[u8; 16]; 2] = [self.rng.random(), self.rng.random()];
                *a_secret = Some(secrets[0]);
                *secret = Some(secrets[1]);
                m.punch = Some(secrets.map(|secret| PunchSide { secret, seen: None }));
            }
        }
        Some(m)
    }

    fn expire_meetings(&mut self, now: Instant) {
        let secrets = &mut self.reach.secrets;
        self.reach.meetings.retain(|_, m| {
            let keep = m.expires > now;
            if !keep && let Some(sides) = &m.punch {
                for s in sides {
                    secrets.remove(&s.secret);
                }
            }
            keep
        });
    }

    /// Meetings open (for tests and diagnostics).
    pub fn meetings(&self) -> usize {
        self.reach.meetings.len()
    }

    /// The path of meeting `id` (for tests).
    pub fn meeting_via(&self, id: &[u8; 16]) -> Option<Via> {
        self.reach.meetings.get(id).map(|m| m.via)
    }
}
