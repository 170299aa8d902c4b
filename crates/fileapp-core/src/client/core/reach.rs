//! Reach, the client's half of the control plane: asking the server to arrange a
//! meeting with an owner (`Connect`), hearing that a requester wants one of ours
//! (`Dial`) or that a punch can start (`PunchPeer`), and the NAT test sent after each
//! welcome. Opening sockets and connections is the driver's; this decides nothing but
//! what to send and what to tell.

use std::net::SocketAddr;
use std::time::Instant;

use crate::index::{NAT_MAGIC, PROBE_LEN, nat_key};
use crate::proto::{Message, Reject};
use crate::reach::Via;

use super::{ClientCore, Event, State, Tag};

/// How many `Dial` ids are remembered, so the repeats a retransmitted `Connect` causes
/// start one connection, not several.
const DIALS_REMEMBERED: usize = 64;

/// A meeting's details, from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meeting {
    pub id: [u8; 16],
    pub via: Via,
    /// Reverse: where the owner connects; relayed: the relay (`None`: the server's own
    /// address, TCP).
    pub addr: Option<SocketAddr>,
    /// Relayed: our ticket.
    pub ticket: Option<Vec<u8>>,
    /// Punched: our probe secret.
    pub secret: Option<[u8; 16]>,
}

impl ClientCore {
    /// Asks the server to have `owner` meet us `via` this path, as meeting `id`.
    /// Answered by [`Event::Connected`] or [`Event::ConnectFailed`]. `false`: not online.
    pub fn connect(&mut self, now: Instant, owner: &str, via: Via, id: [u8; 16]) -> bool {
        let Some(token) = self.token.filter(|_| self.state == State::Online) else {
            return false;
        };
        let owner = owner.to_string();
        self.request(now, Tag::Connect(id), |req| Message::Connect {
            req,
            token,
            owner,
            via,
            id,
        });
        true
    }

    /// The NAT test datagrams to send from the control socket to the server's probe
    /// port (its port + 1), in clear.
    pub fn poll_probe(&mut self) -> Option<Vec<u8>> {
        self.probes.pop_front()
    }

    /// After a welcome: the NAT test, twice (it is not acknowledged; a lost pair
    /// leaves our NAT "unknown", which only costs a punch attempt).
    pub(super) fn queue_nat_test(&mut self) {
        let Some(token) = self.token else { return };
        let mut d = Vec::with_capacity(PROBE_LEN);
        d.extend_from_slice(&NAT_MAGIC);
        d.extend_from_slice(&nat_key(token));
        self.probes.push_back(d.clone());
        self.probes.push_back(d);
    }

    pub(super) fn on_connected(&mut self, id: [u8; 16], m: Meeting) {
        self.events.push_back(Event::Connected(Meeting { id, ..m }));
    }

    pub(super) fn on_connect_failed(&mut self, id: [u8; 16], reason: Option<Reject>) {
        self.events.push_back(Event::ConnectFailed { id, reason });
    }

    pub(super) fn on_dial(&mut self, from: String, m: Meeting) {
        if self.state != State::Online || self.dials.contains(&m.id) {
            return;
        }
        if self.dials.len() >= DIALS_REMEMBERED {
            self.dials.pop_front();
        }
        self.dials.push_back(m.id);
        self.events.push_back(Event::Dial { from, meeting: m });
    }
}
