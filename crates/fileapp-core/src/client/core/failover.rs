//! Failover: a client given several servers of one deployment (one shared database, one
//! server key) moves to the next when the one it talks to stops answering, and keeps its
//! session there: the same name and key, its offers, its signed record and its table.
//!
//! When the server "stopped answering" is the retry contract's answer: a request of
//! ours (a heartbeat, an offer, our record, a meeting) went unanswered through all its
//! retries while we were online, or a registration did while we were moving. Nothing a
//! datagram says causes or stops a move: only silence does, and only datagrams from the
//! server we talk to count ([`ClientCore::is_server`]).
//!
//! A move, in order: everything in flight to the old server is dropped (offer parts are
//! parked and carried by the re-offer, meetings fail), the table is kept as it is but
//! its version forgotten (versions are per server), [`Event::Switch`] tells the owner to
//! point the channel at the new address (a new handshake, same pinned key), and a
//! registration follows at once, keeping our offers (`keep_offers`) and taking the name
//! back from our own session at the old server (`evict`, same key). Its welcome ends the
//! move ([`Event::Moved`]): the record and every offer are sent again and the heartbeat
//! asks the new server for a snapshot, which replaces the table we kept meanwhile.
//!
//! Moves go round the list (after the last address, the first). A whole round without a
//! welcome says [`Event::ServerLost`] once and goes on round the list, one attempt per
//! heartbeat interval.

use std::net::SocketAddr;
use std::time::Instant;

use super::{ClientCore, Event, State, Tag};

/// The servers of the deployment and where we are in the list.
#[derive(Debug, Default)]
pub(super) struct Servers {
    addrs: Vec<SocketAddr>,
    current: usize,
    /// The outage in progress: the server that stopped answering, and moves since.
    lost: Option<(usize, usize)>,
    /// A whole round went unanswered in this outage (said once).
    said_lost: bool,
    /// The registration the next reconnect starts: (user's, keep_offers).
    register: Option<(bool, bool)>,
}

impl ClientCore {
    /// The servers of our deployment, in the order to try them; the first is the one we
    /// start with. With fewer than two nothing moves.
    pub fn set_servers(&mut self, addrs: Vec<SocketAddr>) {
        self.servers = Servers {
            addrs,
            ..Servers::default()
        };
    }

    /// The server we talk to now (`None` if none was set).
    pub fn server(&self) -> Option<SocketAddr> {
        self.servers.addrs.get(self.servers.current).copied()
    }

    /// Whether a datagram from `from` may be the server's: only the current server's
    /// count (always true when no list was set).
    pub fn is_server(&self, from: SocketAddr) -> bool {
        self.server().is_none_or(|s| s == from)
    }

    /// [`ClientCore::handle_datagram`] for a datagram from `from`: dropped unless it
    /// comes from the server we talk to.
    pub fn handle_datagram_from(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.is_server(from) {
            self.handle_datagram(now, bytes);
        }
    }

    /// True while a move is under way (moved, not yet welcomed).
    pub fn moving(&self) -> bool {
        self.servers.lost.is_some()
    }

    fn can_move(&self) -> bool {
        self.servers.addrs.len() > 1 && !self.leaving
    }

    /// Requests that went unanswered through all their retries: the current server
    /// stopped answering if we were online (or moving). Returns true if we moved; the
    /// requests are then settled here (offer parts parked, meetings failed).
    pub(super) fn move_if_silent(&mut self, now: Instant, failed: &[(u64, Tag)]) -> bool {
        let online = self.state == State::Online
            && failed.iter().any(|(_, t)| {
                matches!(
                    t,
                    Tag::Heartbeat | Tag::Offer(_) | Tag::Record | Tag::Connect(_)
                )
            });
        // The user's registration goes its own way (see `move_registering`).
        // Also a registration again after the server forgot us (`Reconnecting`): that
        // server may be the one that died.
        let moving_on = (self.moving() || self.state == State::Reconnecting)
            && failed
                .iter()
                .any(|(_, t)| matches!(t, Tag::Register { user: false }));
        if !self.can_move() || !(online || moving_on) {
            return false;
        }
        for (id, tag) in failed {
            match tag {
                // One entry per part: each carried entry settles one part of its op.
                Tag::Offer(op) => self.parked.push(*op),
                Tag::Connect(m) => self.on_connect_failed(*m, None),
                Tag::Register { .. } => self.abandon(*id),
                _ => {}
            }
        }
        self.move_on(now, false);
        true
    }

    /// The user's registration at the first server went unanswered: try the next one,
    /// unless every server had its turn. True if we moved.
    pub(super) fn move_registering(&mut self, now: Instant, id: u64) -> bool {
        let round_done = self
            .servers
            .lost
            .is_some_and(|(_, moves)| moves + 1 >= self.servers.addrs.len());
        if !self.can_move() || round_done {
            self.servers.lost = None;
            return false;
        }
        self.abandon(id);
        self.move_on(now, true);
        true
    }

    /// Moves to the next server of the list (see the module docs).
    fn move_on(&mut self, now: Instant, user: bool) {
        let n = self.servers.addrs.len();
        let s = &mut self.servers;
        let (_, moves) = s.lost.get_or_insert((s.current, 0));
        *moves += 1;
        let round = *moves % n == 0;
        s.current = (s.current + 1) % n;
        let to = s.addrs[s.current];
        // Everything in flight was for the old server.
        let (parked, mut meetings) = (&mut self.parked, Vec::new());
        self.reqs.cancel_where(|t| {
            match t {
                Tag::Offer(op) => parked.push(*op),
                Tag::Connect(m) => meetings.push(*m),
                _ => {}
            }
            true
        });
        for m in meetings {
            self.on_connect_failed(m, None);
        }
        self.register_req = None;
        self.next_heartbeat = None;
        // Versions are the old server's: the new one starts us from a snapshot, which
        // replaces the rows we keep showing meanwhile.
        self.table.rebase();
        self.seen_version = 0;
        self.state = if user {
            State::Registering
        } else {
            State::Reconnecting
        };
        let keep = if user { self.keep_offers } else { true };
        self.servers.register = Some((user, keep));
        // Registered at the new address as soon as the channel follows (the switch is
        // handled before the next timeout), or after a pause once a round went by.
        self.next_reconnect = Some(if round { now + self.heartbeat } else { now });
        self.events.push_back(Event::Switch(to));
        if round && !self.servers.said_lost {
            self.servers.said_lost = true;
            self.events.push_back(Event::ServerLost);
        }
    }

    /// The user's registration was refused: the outage is over (the user hears why).
    pub(super) fn end_move(&mut self) {
        self.servers.lost = None;
        self.servers.said_lost = false;
        self.servers.register = None;
    }

    /// The registration a due reconnect starts: (user's, keep_offers).
    pub(super) fn reconnect_kind(&mut self) -> (bool, bool) {
        self.servers.register.take().unwrap_or((false, true))
    }

    /// A welcome ended the outage: `Some((from, to))` if it came from another server
    /// than the one that stopped answering.
    pub(super) fn moved(&mut self) -> Option<(SocketAddr, SocketAddr)> {
        let (from, _) = self.servers.lost.take()?;
        self.servers.said_lost = false;
        self.servers.register = None;
        let s = &self.servers;
        (from != s.current).then(|| (s.addrs[from], s.addrs[s.current]))
    }
}

#[cfg(test)]
mod tests;
