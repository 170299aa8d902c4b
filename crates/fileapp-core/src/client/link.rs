//! The client's control channel as the client core uses it: plaintext control messages
//! in and out, sealed datagrams on the wire.
//!
//! Sans-io like the core: messages, datagrams and `now` in; datagrams to send and
//! [`LinkEvent`]s out. While the handshake runs, the core's messages wait (the newest
//! [`MAX_PENDING`]) and each of them (re)sends the `Hello`, so the handshake is retried
//! on the core's own retry schedule (500 ms × 3 by default) and gives up when the core
//! does. When the server stops answering a session (it restarted, or forgot us), the
//! core's retransmission of a request that got no answer at all starts a new handshake:
//! the server never answers a packet it cannot authenticate, so only the client can
//! tell, and it tells by silence.

use std::collections::VecDeque;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::channel::{ClientChannel, ClientEvent, Dropped, HandshakeError, ServerPin};

/// Messages kept while the handshake runs; older ones are dropped (the core retries
/// what matters).
pub const MAX_PENDING: usize = 64;

/// Recent sends remembered to recognise a retransmission.
const RECENT: usize = 32;

/// What the link has to tell its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A session is open with the server holding `server_key`; registration proofs must
    /// now be signed over `binding`. `first_contact`: nothing was pinned, pin this key.
    Ready {
        server_key: [u8; 32],
        binding: [u8; 32],
        first_contact: bool,
    },
    /// The server presented another key than the pinned one: nothing was sent to it
    /// and nothing will be.
    Refused(HandshakeError),
}

/// What the link counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub handshakes: u64,
    /// Datagrams dropped: malformed, forged, replayed, or of another session.
    pub dropped: u64,
    pub restarts: u64,
    /// Sessions dropped because the client moved to another server.
    pub moves: u64,
}

/// One client's channel to its server.
pub struct ClientLink {
    channel: ClientChannel,
    retry: Duration,
    pending: VecDeque<Vec<u8>>,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<LinkEvent>,
    /// When the current `Hello` was last sent.
    hello_sent: Option<Instant>,
    /// When the last authenticated datagram arrived.
    last_rx: Option<Instant>,
    /// Digests of recent sends with when each was first sent.
    recent: VecDeque<(u64, Instant)>,
    refused: bool,
    stats: LinkStats,
    /// The key the last session's server presented.
    key: Option<[u8; 32]>,
}

impl std::fmt::Debug for ClientLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientLink({:?})", self.channel)
    }
}

fn digest(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

impl ClientLink {
    /// A link that accepts only `pin` (any key, as first contact, when `None`); `retry`
    /// is the core's retransmission interval; randomness from `seed`.
    pub fn new(pin: Option<ServerPin>, seed: [u8; 32], retry: Duration) -> ClientLink {
        ClientLink {
            channel: ClientChannel::new(pin, seed),
            retry,
            pending: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            hello_sent: None,
            last_rx: None,
            recent: VecDeque::new(),
            refused: false,
            stats: LinkStats::default(),
            key: None,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.channel.is_ready()
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The server's key, once a session is open.
    pub fn server_key(&self) -> Option<[u8; 32]> {
        self.channel.server_key()
    }

    /// Sends one control message: sealed at once when a session is open, else kept
    /// until the handshake finishes (and the `Hello` sent again).
    pub fn send(&mut self, now: Instant, message: Vec<u8>) {
        if self.refused {
            return;
        }
        if self.channel.is_ready() && self.server_went_silent(now, &message) {
            self.stats.restarts += 1;
            self.channel.restart();
            self.hello_sent = None;
        }
        if self.channel.is_ready() {
            self.seal(message);
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(message);
        if self
            .hello_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= self.retry / 2)
            && let Some(hello) = self.channel.hello()
        {
            self.hello_sent = Some(now);
            self.out.push_back(hello);
        }
    }

    /// Is `message` a retransmission of a request the server did not answer at all
    /// (nothing authenticated arrived since it first went out, and for a retry interval)?
    fn server_went_silent(&mut self, now: Instant, message: &[u8]) -> bool {
        let d = digest(message);
        let first = self.recent.iter().find(|(x, _)| *x == d).map(|(_, t)| *t);
        let Some(first) = first else {
            if self.recent.len() >= RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back((d, now));
            return false;
        };
        let silent_since_first = self.last_rx.is_none_or(|rx| rx < first);
        let long_enough = now.saturating_duration_since(first) >= self.retry;
        let silent_long = self
            .last_rx
            .is_none_or(|rx| now.saturating_duration_since(rx) >= self.retry);
        silent_since_first && long_enough && silent_long
    }

    fn seal(&mut self, message: Vec<u8>) {
        match self.channel.seal(&message) {
            Ok(d) => self.out.push_back(d),
            // Too large: the core never builds such a message. Exhausted: start over.
            Err(crate::channel::SealError::Exhausted) => {
                self.channel.restart();
                self.pending.push_back(message);
                self.hello_sent = None;
            }
            Err(_) => {}
        }
    }

    /// The server moved (see `ClientCore`'s failover): the session with the old one is
    /// dropped with what waited for it, and the next message starts a handshake with the
    /// new address, which must present the key pinned so far.
    pub fn move_to_next(&mut self) {
        if self.refused {
            return;
        }
        self.stats.moves += 1;
        // Another server of the deployment must present the key this one did: the pin
        // is the deployment's, not an address's.
        if let Some(key) = self.key {
            self.channel.pin_key(key);
        }
        self.channel.restart();
        self.pending.clear();
        self.out.clear();
        self.recent.clear();
        self.hello_sent = None;
        self.last_rx = None;
    }

    /// Seals `message` now if a session is open (the goodbye on leaving: there is no
    /// time to wait for a handshake).
    pub fn seal_now(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        self.channel.seal(message).ok()
    }

    /// Handles a datagram from the server's address; returns the control message it
    /// carried, if it authenticated.
    pub fn handle(&mut self, now: Instant, datagram: &[u8]) -> Option<Vec<u8>> {
        match self.channel.handle(datagram) {
            Ok(Ok(ClientEvent::Data(message))) => {
                self.last_rx = Some(now);
                Some(message)
            }
            Ok(Ok(ClientEvent::Ready {
                server_key,
                first_contact,
            })) => {
                self.last_rx = Some(now);
                self.recent.clear();
                self.stats.handshakes += 1;
                // Every later handshake (a restart at the same address, another server
                // of the deployment) must present this key: otherwise a path that drops
                // our datagrams for a moment could answer the new handshake with its own
                // key, taken as a first contact.
                self.channel.pin_key(server_key);
                self.key = Some(server_key);
                let binding = self.channel.handshake_hash().copied().unwrap_or_default();
                self.events.push_back(LinkEvent::Ready {
                    server_key,
                    binding,
                    first_contact,
                });
                // The waiting messages go out in the new session; the core re-signs a
                // registration whose proof named the old one when it is challenged.
                for m in std::mem::take(&mut self.pending) {
                    self.seal(m);
                }
                None
            }
            Ok(Ok(ClientEvent::CookieRetry)) => {
                if let Some(hello) = self.channel.hello() {
                    self.hello_sent = Some(now);
                    self.out.push_back(hello);
                }
                None
            }
            Ok(Err(refused)) => {
                self.refused = true;
                self.pending.clear();
                self.events.push_back(LinkEvent::Refused(refused));
                None
            }
            Err(Dropped::Malformed | Dropped::Forged | Dropped::Replayed)
            | Err(Dropped::UnknownSession | Dropped::Unexpected | Dropped::Busy) => {
                self.stats.dropped += 1;
                None
            }
        }
    }

    /// The next datagram to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
