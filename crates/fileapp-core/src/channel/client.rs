//! The client's end of the control channel: one session with one server.
//!
//! `start` builds a `Hello`; the driver sends it (and resends [`ClientChannel::hello`]
//! on its retry schedule) until [`ClientChannel::handle`] returns
//! [`ClientEvent::Ready`]. From then on `seal` and `handle` carry the control
//! messages. A server whose static key differs from the pinned one is refused and the
//! channel stays closed: nothing is sealed for it.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use snow::{HandshakeState, StatelessTransportState};

use super::cookie::Cookie;
use super::crypto::{PROLOGUE, SeededResolver, params};
use super::replay::ReplayWindow;
use super::{Dropped, HELLO_REPLY_LEN, NOISE_MSG1_LEN, Packet, SealError, hello, open, seal};

/// What a datagram from the server meant.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The handshake finished: the server holds `server_key`. `first_contact` when no
    /// key was pinned, so the caller pins this one now.
    Ready {
        server_key: [u8; 32],
        first_contact: bool,
    },
    /// The server is under load and wants its cookie echoed: send [`ClientChannel::hello`]
    /// again (it now carries the cookie).
    CookieRetry,
    /// A control message from the server.
    Data(Vec<u8>),
}

/// The server key a client accepts: the whole key (as pinned in `known_servers`), or
/// its fingerprint (as the operator reads it off the server's start-up line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerPin {
    Key([u8; 32]),
    /// The first 16 bytes of the key's BLAKE3 ([`crate::identity::fingerprint`]).
    Fingerprint([u8; 16]),
}

impl ServerPin {
    pub fn accepts(&self, key: &[u8; 32]) -> bool {
        match self {
            ServerPin::Key(k) => k == key,
            ServerPin::Fingerprint(f) => blake3::hash(key).as_bytes()[..16] == f[..],
        }
    }

    /// The pin as the user reads it: a fingerprint.
    pub fn fingerprint(&self) -> String {
        match self {
            ServerPin::Key(k) => crate::identity::fingerprint(k),
            ServerPin::Fingerprint(f) => f.chunks(2).map(hex::encode).collect::<Vec<_>>().join(":"),
        }
    }

    /// Parses a fingerprint (`xxxx:…`, 8 groups of 4 hex digits) or a whole key (64 hex
    /// digits).
    pub fn parse(s: &str) -> Option<ServerPin> {
        let s = s.trim();
        if s.len() == 64 {
            let mut k = [0u8; 32];
            hex::decode_to_slice(s, &mut k).ok()?;
            return Some(ServerPin::Key(k));
        }
        let digits: String = s.split(':').collect();
        if s.split(':').count() != 8 || digits.len() != 32 {
            return None;
        }
        let mut f = [0u8; 16];
        hex::decode_to_slice(&digits, &mut f).ok()?;
        Some(ServerPin::Fingerprint(f))
    }
}

/// Why the handshake was refused for good (the caller reports it and stops).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "the server presented key {}, not the expected {}",
        crate::identity::fingerprint(presented),
        expected.fingerprint()
    )]
    WrongServerKey {
        expected: ServerPin,
        presented: [u8; 32],
    },
}

enum State {
    /// Waiting for the `HelloReply` to this handshake.
    Hello {
        /// Seed of this handshake's randomness: the same seed rebuilds the same state.
        seed: [u8; 32],
        hs: Box<HandshakeState>,
        msg1: [u8; NOISE_MSG1_LEN],
        cookie: Option<Cookie>,
    },
    Ready {
        transport: Box<StatelessTransportState>,
        server_index: u32,
        handshake_hash: [u8; 32],
        server_key: [u8; 32],
        next_counter: u64,
        window: ReplayWindow,
    },
    /// Refused (wrong server key): nothing more is sent or accepted.
    Closed,
}

/// One session with the server.
pub struct ClientChannel {
    pin: Option<ServerPin>,
    rng: StdRng,
    /// Our index: the server puts it on everything it sends us.
    index: u32,
    state: State,
}

impl std::fmt::Debug for ClientChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Hello { .. } => "hello",
            State::Ready { .. } => "ready",
            State::Closed => "closed",
        };
        write!(f, "ClientChannel({state}, index {})", self.index)
    }
}

impl ClientChannel {
    /// A channel that will accept only `pin` as the server's key (any key, reported as
    /// first contact, when `None`), with randomness from `seed`.
    pub fn new(pin: Option<ServerPin>, seed: [u8; 32]) -> ClientChannel {
        let mut rng = StdRng::from_seed(seed);
        let index = rng.random();
        let state = Self::fresh_hello(&mut rng);
        ClientChannel {
            pin,
            rng,
            index,
            state,
        }
    }

    fn fresh_hello(rng: &mut StdRng) -> State {
        let seed: [u8; 32] = rng.random();
        match initiator(seed) {
            Ok((hs, msg1)) => State::Hello {
                seed,
                hs: Box::new(hs),
                msg1,
                cookie: None,
            },
            // Only a broken build of snow fails here; the channel then never opens.
            Err(_) => State::Closed,
        }
    }

    /// Starts over with a new handshake (after the server lost our session).
    pub fn restart(&mut self) {
        if !matches!(self.state, State::Closed) {
            self.index = self.rng.random();
            self.state = Self::fresh_hello(&mut self.rng);
        }
    }

    /// From now on only `key` is accepted (a later handshake, after a restart or with
    /// another server of the same deployment, must present it).
    pub fn pin_key(&mut self, key: [u8; 32]) {
        self.pin = Some(ServerPin::Key(key));
    }

    /// The `Hello` to (re)send while the handshake is in progress.
    pub fn hello(&self) -> Option<Vec<u8>> {
        match &self.state {
            State::Hello { msg1, cookie, .. } => Some(hello(self.index, msg1, cookie.as_ref())),
            _ => None,
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    /// The Noise handshake hash: what the client signs to bind its identity to this
    /// session.
    pub fn handshake_hash(&self) -> Option<&[u8; 32]> {
        match &self.state {
            State::Ready { handshake_hash, .. } => Some(handshake_hash),
            _ => None,
        }
    }

    /// The server's static key, once the handshake is done.
    pub fn server_key(&self) -> Option<[u8; 32]> {
        match &self.state {
            State::Ready { server_key, .. } => Some(*server_key),
            _ => None,
        }
    }

    /// Seals one control message for the server.
    pub fn seal(&mut self, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        let State::Ready {
            transport,
            server_index,
            next_counter,
            ..
        } = &mut self.state
        else {
            return Err(SealError::NoSession);
        };
        let out = seal(&**transport, *server_index, *next_counter, payload)?;
        *next_counter += 1;
        Ok(out)
    }

    /// Handles one datagram that came from the server's address. `Err(Dropped)` means
    /// ignore it (count it); `Err` never changes the session.
    pub fn handle(
        &mut self,
        datagram: &[u8],
    ) -> Result<Result<ClientEvent, HandshakeError>, Dropped> {
        match Packet::parse(datagram)? {
            Packet::Cookie { receiver, cookie } if receiver == self.index => {
                match &mut self.state {
                    State::Hello { cookie: c, .. } => {
                        *c = Some(cookie);
                        Ok(Ok(ClientEvent::CookieRetry))
                    }
                    _ => Err(Dropped::Unexpected),
                }
            }
            Packet::HelloReply {
                receiver,
                sender,
                msg2,
            } if receiver == self.index => self.on_reply(sender, msg2),
            Packet::Data {
                receiver,
                counter,
                sealed,
            } if receiver == self.index => self
                .on_data(counter, sealed)
                .map(|d| Ok(ClientEvent::Data(d))),
            Packet::Hello { .. } => Err(Dropped::Unexpected),
            _ => Err(Dropped::UnknownSession),
        }
    }

    fn on_reply(
        &mut self,
        server_index: u32,
        msg2: &[u8],
    ) -> Result<Result<ClientEvent, HandshakeError>, Dropped> {
        let State::Hello { seed, hs, .. } = &mut self.state else {
            return Err(Dropped::Unexpected);
        };
        debug_assert_eq!(msg2.len(), HELLO_REPLY_LEN - 9);
        let mut payload = [0u8; 64];
        if hs.read_message(msg2, &mut payload).is_err() {
            // A failed read leaves the handshake spoiled, and a forged reply must not
            // spoil the real one that may follow: rebuild the identical state (same
            // seed, so the same ephemeral key and the same Hello) and drop the packet.
            match initiator(*seed) {
                Ok((fresh, _)) => **hs = fresh,
                Err(_) => self.state = State::Closed,
            }
            return Err(Dropped::Forged);
        }
        let State::Hello { hs, .. } = std::mem::replace(&mut self.state, State::Closed) else {
            return Err(Dropped::Unexpected);
        };
        let trial = *hs;
        // NX always sends the responder's static key; a reply without one cannot
        // authenticate (the state stays closed, as for a wrong key).
        let presented: [u8; 32] = trial
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or(Dropped::Forged)?;
        if let Some(expected) = self.pin
            && !expected.accepts(&presented)
        {
            return Ok(Err(HandshakeError::WrongServerKey {
                expected,
                presented,
            }));
        }
        let mut handshake_hash = [0u8; 32];
        handshake_hash.copy_from_slice(trial.get_handshake_hash());
        let transport = trial
            .into_stateless_transport_mode()
            .map_err(|_| Dropped::Forged)?;
        self.state = State::Ready {
            transport: Box::new(transport),
            server_index,
            handshake_hash,
            server_key: presented,
            next_counter: 0,
            window: ReplayWindow::default(),
        };
        Ok(Ok(ClientEvent::Ready {
            server_key: presented,
            first_contact: self.pin.is_none(),
        }))
    }

    fn on_data(&mut self, counter: u64, sealed: &[u8]) -> Result<Vec<u8>, Dropped> {
        let State::Ready {
            transport, window, ..
        } = &mut self.state
        else {
            return Err(Dropped::Unexpected);
        };
        if !window.check(counter) {
            return Err(Dropped::Replayed);
        }
        let plain = open(&**transport, counter, sealed)?;
        window.mark(counter);
        Ok(plain)
    }
}

/// A fresh initiator whose randomness comes from `seed`, with its first message written.
fn initiator(seed: [u8; 32]) -> Result<(HandshakeState, [u8; NOISE_MSG1_LEN]), snow::Error> {
    let mut hs = snow::Builder::with_resolver(params(), SeededResolver::new(seed))
        .prologue(PROLOGUE)?
        .build_initiator()?;
    // snow wants room for a tag even where the payload goes out unencrypted.
    let mut buf = [0u8; NOISE_MSG1_LEN + 16];
    let n = hs.write_message(&[], &mut buf)?;
    let msg1: [u8; NOISE_MSG1_LEN] = buf[..n].try_into().map_err(|_| snow::Error::Input)?;
    Ok((hs, msg1))
}
