//! The server's end of the control channel: one session per client handshake.
//!
//! A `Hello` costs the server one handshake (two X25519 operations) and a session
//! slot, so both are rationed: at most [`ServerConfig::max_half_open`] sessions may wait
//! for their first authenticated packet, and above [`ServerConfig::cookie_above`] of
//! them a `Hello` must echo a cookie (proof of its source address) before any
//! public-key work. A retransmitted `Hello` gets the same reply again, not a second
//! session. Sessions that never authenticate expire after
//! [`ServerConfig::half_open_timeout`]; the index closes the others.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::cookie::{Cookie, Cookies};
use super::crypto::{PROLOGUE, SeededResolver, params, static_public};
use super::keys::SessionKeys;
use super::replay::ReplayWindow;
use super::{
    ChannelStats, Dropped, HELLO_REPLY_LEN, NOISE_MSG1_LEN, NOISE_MSG2_LEN, Packet, SealError,
    TYPE_HELLO_REPLY, cookie_packet, open, seal,
};

/// Limits of the server's handshake work. Counts are sessions; times are wall time.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Sessions in all (authenticated or not); a `Hello` past it is dropped.
    pub max_sessions: usize,
    /// Sessions that have not yet received an authenticated packet.
    pub max_half_open: usize,
    /// Above this many half-open sessions, a `Hello` needs a valid cookie.
    pub cookie_above: usize,
    /// A session with no authenticated packet after this long is forgotten.
    pub half_open_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_sessions: 1 << 20,
            max_half_open: 1 << 16,
            cookie_above: 1 << 10,
            half_open_timeout: Duration::from_secs(5),
        }
    }
}

/// What a datagram from `src` meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Send these bytes back to `src` (a `HelloReply` or a `Cookie`: both smaller than
    /// the `Hello` that asked).
    Reply(Vec<u8>),
    /// An authenticated control message of `session`. `roamed` when it came from
    /// another address than the session's last one (the session now follows it).
    Data {
        session: u32,
        payload: Vec<u8>,
        roamed: bool,
    },
}

struct Session {
    /// The raw keys, not snow's transport state (see `keys`: 1 KB less a session).
    transport: SessionKeys,
    /// The client's index, put on everything we send it.
    client_index: u32,
    /// Where the `Hello` came from (and the `HelloReply` went).
    origin: SocketAddr,
    peer: SocketAddr,
    handshake_hash: [u8; 32],
    next_counter: u64,
    window: ReplayWindow,
    /// Set by the first authenticated packet.
    authenticated: bool,
    created: Instant,
    /// The `HelloReply`, kept while half-open to answer a retransmitted `Hello`.
    reply: Option<Vec<u8>>,
}

/// Every client session of one server.
pub struct ServerChannel {
    secret: [u8; 32],
    public: [u8; 32],
    cfg: ServerConfig,
    rng: StdRng,
    cookies: Cookies,
    sessions: HashMap<u32, Session>,
    /// Half-open sessions by (source, client index), to recognise a retransmission.
    pending: HashMap<(SocketAddr, u32), u32>,
    stats: ChannelStats,
}

impl std::fmt::Debug for ServerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ServerChannel({} sessions, {} half-open)",
            self.sessions.len(),
            self.pending.len()
        )
    }
}

impl ServerChannel {
    /// A server with the X25519 static key `secret`, randomness from `seed`.
    pub fn new(secret: [u8; 32], seed: [u8; 32], now: Instant, cfg: ServerConfig) -> Self {
        let mut rng = StdRng::from_seed(seed);
        let cookies = Cookies::new(rng.random(), now);
        ServerChannel {
            public: static_public(&secret),
            secret,
            cfg,
            rng,
            cookies,
            sessions: HashMap::new(),
            pending: HashMap::new(),
            stats: ChannelStats::default(),
        }
    }

    /// The static public key clients pin.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    pub fn stats(&self) -> &ChannelStats {
        &self.stats
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn half_open(&self) -> usize {
        self.pending.len()
    }

    /// The handshake hash of `session`: what its client signed to prove its identity.
    pub fn handshake_hash(&self, session: u32) -> Option<&[u8; 32]> {
        self.sessions.get(&session).map(|s| &s.handshake_hash)
    }

    /// The address `session`'s handshake came from: its client proved it receives there.
    pub fn origin(&self, session: u32) -> Option<SocketAddr> {
        self.sessions.get(&session).map(|s| s.origin)
    }

    /// The address `session` last sent from.
    pub fn peer(&self, session: u32) -> Option<SocketAddr> {
        self.sessions.get(&session).map(|s| s.peer)
    }

    /// Handles one datagram from `src`. A drop is counted and answered with nothing.
    pub fn handle(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<Inbound, Dropped> {
        let r = match Packet::parse(datagram) {
            Ok(Packet::Hello {
                sender,
                msg1,
                cookie,
            }) => self.on_hello(now, src, sender, msg1, cookie),
            Ok(Packet::Data {
                receiver,
                counter,
                sealed,
            }) => self.on_data(src, receiver, counter, sealed),
            Ok(_) => Err(Dropped::Unexpected),
            Err(e) => Err(e),
        };
        if let Err(why) = r {
            self.stats.count(why);
        }
        r
    }

    fn on_hello(
        &mut self,
        now: Instant,
        src: SocketAddr,
        client_index: u32,
        msg1: &[u8; NOISE_MSG1_LEN],
        cookie: Option<Cookie>,
    ) -> Result<Inbound, Dropped> {
        self.stats.hellos += 1;
        if let Some(id) = self.pending.get(&(src, client_index))
            && let Some(reply) = self.sessions.get(id).and_then(|s| s.reply.clone())
        {
            return Ok(Inbound::Reply(reply));
        }
        if self.pending.len() >= self.cfg.max_half_open
            || self.sessions.len() >= self.cfg.max_sessions
        {
            return Err(Dropped::Busy);
        }
        if self.pending.len() >= self.cfg.cookie_above {
            self.cookies.rotate(now);
            if !cookie.is_some_and(|c| self.cookies.verify(src, &c)) {
                self.stats.cookies_sent += 1;
                let c = self.cookies.make(src);
                return Ok(Inbound::Reply(cookie_packet(client_index, &c)));
            }
        }
        let (transport, handshake_hash, msg2) = self.respond(msg1).ok_or(Dropped::Forged)?;
        let index = self.free_index();
        let mut reply = Vec::with_capacity(HELLO_REPLY_LEN);
        reply.push(TYPE_HELLO_REPLY);
        reply.extend_from_slice(&client_index.to_le_bytes());
        reply.extend_from_slice(&index.to_le_bytes());
        reply.extend_from_slice(&msg2);
        self.sessions.insert(
            index,
            Session {
                transport,
                client_index,
                origin: src,
                peer: src,
                handshake_hash,
                next_counter: 0,
                window: ReplayWindow::default(),
                authenticated: false,
                created: now,
                reply: Some(reply.clone()),
            },
        );
        self.pending.insert((src, client_index), index);
        self.stats.handshakes += 1;
        Ok(Inbound::Reply(reply))
    }

    /// Runs the responder's side of NX: reads `e`, writes `e, ee, s, es`.
    fn respond(
        &mut self,
        msg1: &[u8; NOISE_MSG1_LEN],
    ) -> Option<(SessionKeys, [u8; 32], [u8; NOISE_MSG2_LEN])> {
        let resolver = SeededResolver::new(self.rng.random());
        let mut hs = snow::Builder::with_resolver(params(), resolver)
            .prologue(PROLOGUE)
            .ok()?
            .local_private_key(&self.secret)
            .ok()?
            .build_responder()
            .ok()?;
        let mut scratch = [0u8; 64];
        hs.read_message(msg1, &mut scratch).ok()?;
        let mut msg2 = [0u8; NOISE_MSG2_LEN];
        let n = hs.write_message(&[], &mut msg2).ok()?;
        if n != NOISE_MSG2_LEN {
            return None;
        }
        let mut handshake_hash = [0u8; 32];
        handshake_hash.copy_from_slice(hs.get_handshake_hash());
        if !hs.is_handshake_finished() {
            return None;
        }
        let transport = SessionKeys::responder(hs.dangerously_get_raw_split());
        Some((transport, handshake_hash, msg2))
    }

    fn free_index(&mut self) -> u32 {
        loop {
            let i: u32 = self.rng.random();
            if !self.sessions.contains_key(&i) {
                return i;
            }
        }
    }

    fn on_data(
        &mut self,
        src: SocketAddr,
        index: u32,
        counter: u64,
        sealed: &[u8],
    ) -> Result<Inbound, Dropped> {
        let s = self
            .sessions
            .get_mut(&index)
            .ok_or(Dropped::UnknownSession)?;
        if !s.window.check(counter) {
            return Err(Dropped::Replayed);
        }
        let payload = open(&s.transport, counter, sealed)?;
        s.window.mark(counter);
        if !s.authenticated {
            s.authenticated = true;
            s.reply = None;
            let key = (s.peer, s.client_index);
            self.pending.remove(&key);
        }
        let roamed = s.peer != src;
        s.peer = src;
        self.stats.data_in += 1;
        Ok(Inbound::Data {
            session: index,
            payload,
            roamed,
        })
    }

    /// Seals `payload` for `session`; returns where to send it and the datagram.
    pub fn seal(
        &mut self,
        session: u32,
        payload: &[u8],
    ) -> Result<(SocketAddr, Vec<u8>), SealError> {
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(SealError::NoSession)?;
        let out = seal(&s.transport, s.client_index, s.next_counter, payload)?;
        s.next_counter += 1;
        self.stats.data_out += 1;
        Ok((s.peer, out))
    }

    /// Forgets `session` (its client deregistered, was replaced, or went silent).
    pub fn close(&mut self, session: u32) {
        if let Some(s) = self.sessions.remove(&session)
            && !s.authenticated
        {
            self.pending.remove(&(s.peer, s.client_index));
        }
    }

    /// Expires half-open sessions and rotates the cookie secret.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.cookies.rotate(now);
        let limit = self.cfg.half_open_timeout;
        let expired: Vec<u32> = self
            .pending
            .values()
            .copied()
            .filter(|id| {
                self.sessions
                    .get(id)
                    .is_none_or(|s| now.saturating_duration_since(s.created) >= limit)
            })
            .collect();
        for id in expired {
            self.close(id);
        }
    }

    /// When the oldest half-open session expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .values()
            .filter_map(|id| self.sessions.get(id))
            .map(|s| s.created + self.cfg.half_open_timeout)
            .min()
    }
}
