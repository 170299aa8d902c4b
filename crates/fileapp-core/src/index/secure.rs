//! The index behind its control channel: what the server driver runs.
//!
//! Every datagram goes through the [`ServerChannel`] first. Handshake packets are
//! answered by the channel alone (never with more bytes than they carried); a data
//! packet that authenticates is handed to the [`Index`] with the session's handshake
//! hash, which registration proofs are signed over. Anything else is dropped and
//! counted, never answered.
//!
//! The index still names clients by address. Each address speaks through one session,
//! the last whose handshake came from that address (its client proved it receives
//! there); a session sending from an address another session holds is dropped, so an
//! authenticated client cannot spoof its way into someone else's address. The index's
//! replies are sealed for the session of their address; one with no session (its
//! client's session was closed meanwhile) is not sent, and counted.
//!
//! Sessions idle for the index's offline window are closed: a client that left or
//! vanished does not hold server memory for ever; one that is merely quiet handshakes
//! again when it next speaks.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::channel::{ChannelStats, Inbound, ServerChannel, ServerConfig};

use super::Index;

/// What the gate between channel and index counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Authenticated packets from an address that another session holds.
    pub address_conflicts: u64,
    /// Replies of the index for an address with no session.
    pub unsealed: u64,
    /// Sessions closed because they were idle.
    pub idle_closed: u64,
}

/// The index and the channel every one of its datagrams travels through.
pub struct SecureIndex {
    index: Index,
    channel: ServerChannel,
    /// The session each client address speaks through.
    by_addr: HashMap<SocketAddr, u32>,
    /// Each session's address and when it last sent an authenticated packet.
    live: HashMap<u32, (SocketAddr, Instant)>,
    idle_after: Duration,
    next_sweep: Instant,
    /// Handshake answers, sent before the index's datagrams.
    replies: VecDeque<(SocketAddr, Vec<u8>)>,
    stats: GateStats,
}

impl std::fmt::Debug for SecureIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecureIndex({:?})", self.channel)
    }
}

impl SecureIndex {
    /// `index` behind a channel with the X25519 static key `secret`, randomness from
    /// `seed` (from the OS in production).
    pub fn new(
        index: Index,
        secret: [u8; 32],
        seed: [u8; 32],
        now: Instant,
        cfg: ServerConfig,
    ) -> SecureIndex {
        let idle_after = index.config().offline_after * 2;
        SecureIndex {
            index,
            channel: ServerChannel::new(secret, seed, now, cfg),
            by_addr: HashMap::new(),
            live: HashMap::new(),
            idle_after,
            next_sweep: now + idle_after / 4,
            replies: VecDeque::new(),
            stats: GateStats::default(),
        }
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn index_mut(&mut self) -> &mut Index {
        &mut self.index
    }

    /// The static public key of the channel secret `secret` (what clients pin).
    pub fn public_key_of(secret: &[u8; 32]) -> [u8; 32] {
        crate::channel::crypto::static_public(secret)
    }

    /// The static public key clients pin.
    pub fn public_key(&self) -> [u8; 32] {
        self.channel.public_key()
    }

    pub fn channel_stats(&self) -> &ChannelStats {
        self.channel.stats()
    }

    pub fn gate_stats(&self) -> &GateStats {
        &self.stats
    }

    /// Open sessions (authenticated or not).
    pub fn sessions(&self) -> usize {
        self.channel.sessions()
    }

    /// Handles one datagram from `src`. Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) {
        self.handle(now, src, bytes, false);
    }

    /// As [`SecureIndex::handle_datagram`], returning the control message the datagram
    /// carried, if it authenticated (for drivers' tests that check what a client sent).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn handle_datagram_opened(
        &mut self,
        now: Instant,
        src: SocketAddr,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
        self.handle(now, src, bytes, true)
    }

    fn handle(
        &mut self,
        now: Instant,
        src: SocketAddr,
        bytes: &[u8],
        keep: bool,
    ) -> Option<Vec<u8>> {
        if bytes.first() == Some(&0) {
            // A punch probe, in clear (no channel packet starts with 0): the index
            // records where it came from; nothing is answered.
            self.index.handle_probe(now, src, bytes, false);
            return None;
        }
        match self.channel.handle(now, src, bytes) {
            Ok(Inbound::Reply(reply)) => {
                self.replies.push_back((src, reply));
                None
            }
            Ok(Inbound::Data {
                session, payload, ..
            }) => {
                if !self.take_address(session, src) {
                    self.stats.address_conflicts += 1;
                    return None;
                }
                self.live.insert(session, (src, now));
                let binding = *self.channel.handshake_hash(session)?;
                self.index.handle_message(now, src, &binding, &payload);
                keep.then_some(payload)
            }
            // Counted by the channel; nothing is answered.
            Err(_) => None,
        }
    }

    /// May `session` speak from `src`? It may when `src` is its own, free, or where its
    /// handshake came from (a client that handshook again replaces its old session).
    fn take_address(&mut self, session: u32, src: SocketAddr) -> bool {
        match self.by_addr.get(&src).copied() {
            Some(s) if s == session => true,
            Some(other) if self.channel.origin(session) == Some(src) => {
                self.close(other);
                self.by_addr.insert(src, session);
                true
            }
            Some(_) => false,
            None => {
                // A session that moved leaves its old address.
                if let Some((old, _)) = self.live.get(&session)
                    && self.by_addr.get(old) == Some(&session)
                {
                    self.by_addr.remove(old);
                }
                self.by_addr.insert(src, session);
                true
            }
        }
    }

    fn close(&mut self, session: u32) {
        self.channel.close(session);
        if let Some((addr, _)) = self.live.remove(&session)
            && self.by_addr.get(&addr) == Some(&session)
        {
            self.by_addr.remove(&addr);
        }
    }

    /// A datagram on the probe port (the main port + 1): a client's NAT test.
    pub fn handle_probe_port(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) {
        self.index.handle_probe(now, src, bytes, true);
    }

    /// Runs whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.index.poll_timeout().is_some_and(|t| t <= now) {
            self.index.handle_timeout(now);
        }
        if self.channel.poll_timeout().is_some_and(|t| t <= now) {
            self.channel.handle_timeout(now);
        }
        if now >= self.next_sweep {
            self.next_sweep = now + self.idle_after / 4;
            let limit = self.idle_after;
            let idle: Vec<u32> = self
                .live
                .iter()
                .filter(|(_, (_, t))| now.saturating_duration_since(*t) >= limit)
                .map(|(s, _)| *s)
                .collect();
            for s in idle {
                self.stats.idle_closed += 1;
                self.close(s);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.index.poll_timeout(),
            self.channel.poll_timeout(),
            Some(self.next_sweep),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next datagram to send: handshake answers first, then the index's messages,
    /// each sealed for its address's session.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.poll_transmit_traced()
            .map(|(dst, sealed, _)| (dst, sealed))
    }

    /// As [`SecureIndex::poll_transmit`], with the index's message before sealing (for
    /// drivers' tests that must tell a table push from a reply; `None` for handshake
    /// packets).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn poll_transmit_plain(&mut self) -> Option<(SocketAddr, Vec<u8>, Option<Vec<u8>>)> {
        self.poll_transmit_traced()
    }

    fn poll_transmit_traced(&mut self) -> Option<(SocketAddr, Vec<u8>, Option<Vec<u8>>)> {
        if let Some((dst, r)) = self.replies.pop_front() {
            return Some((dst, r, None));
        }
        loop {
            let (dst, plain) = self.index.poll_transmit()?;
            let Some(&session) = self.by_addr.get(&dst) else {
                self.stats.unsealed += 1;
                continue;
            };
            match self.channel.seal(session, &plain) {
                Ok((_, sealed)) => return Some((dst, sealed, Some(plain))),
                Err(_) => self.stats.unsealed += 1,
            }
        }
    }
}

/// The index's own reads and operator calls (`stats`, `apply_remote`, ...) pass
/// through. Datagrams do not: [`SecureIndex::handle_datagram`],
/// [`SecureIndex::poll_transmit`] and the timers are this type's own.
impl std::ops::Deref for SecureIndex {
    type Target = Index;
    fn deref(&self) -> &Index {
        &self.index
    }
}

impl std::ops::DerefMut for SecureIndex {
    fn deref_mut(&mut self) -> &mut Index {
        &mut self.index
    }
}

#[cfg(test)]
mod tests;
