//! The control channel: every datagram between a client and the index server, in both
//! directions, encrypted and authenticated with keys of one Noise session.
//!
//! Sans-io like the rest of the core: datagrams, `now` and the caller's randomness in;
//! datagrams to send and decrypted payloads out. `docs/PROTOCOL.md` §"Control channel"
//! is the normative description; in short:
//!
//! - **Handshake**: `Noise_NX_25519_ChaChaPoly_BLAKE2s` with prologue
//!   `"fileapp control v1"`. The client sends its ephemeral key in a `Hello` padded to
//!   [`HELLO_LEN`] bytes; the server answers with a `HelloReply` carrying its ephemeral
//!   and its static key (encrypted) and proving it holds that static key. The client
//!   compares the static key with the one it pinned for this server ([`client`]). The
//!   client proves its own identity inside the channel: its first message (a
//!   registration) is signed with its Ed25519 key over the [`handshake
//!   hash`](client::ClientChannel::handshake_hash), which is unique to the session, so a
//!   proof can neither be moved to another session nor accepted twice.
//! - **Data**: `type | receiver index | counter | ciphertext`, with the counter as the
//!   AEAD nonce (explicit nonces, as WireGuard: UDP reorders and loses) and a sliding
//!   [`replay`] window on the receiving side.
//! - **No amplification**: a `HelloReply` (105 bytes) and a `Cookie` (21 bytes) are
//!   smaller than the `Hello` (160 bytes) they answer; nothing else is ever sent to an
//!   unauthenticated datagram. Under a flood of handshakes the server answers a `Hello`
//!   without a valid [`cookie`] with a `Cookie` only, before any public-key work.

pub mod client;
pub mod cookie;
pub mod crypto;
mod keys;
pub mod replay;
pub mod server;

#[cfg(test)]
mod tests;

pub use client::{ClientChannel, ClientEvent, HandshakeError, ServerPin};
pub use server::{Inbound, ServerChannel, ServerConfig};

use cookie::{COOKIE_LEN, Cookie};

/// Packet types: the first byte of every control datagram.
pub const TYPE_HELLO: u8 = 1;
pub const TYPE_COOKIE: u8 = 2;
pub const TYPE_HELLO_REPLY: u8 = 3;
pub const TYPE_DATA: u8 = 4;

/// Length of a `Hello`, padding included: larger than any answer to it.
pub const HELLO_LEN: usize = 160;
/// Noise's first message in NX: the client's ephemeral key.
pub const NOISE_MSG1_LEN: usize = 32;
/// Noise's second message in NX with an empty payload: ephemeral key, encrypted static
/// key and tag, payload tag.
pub const NOISE_MSG2_LEN: usize = 32 + 32 + 16 + 16;
/// `type | receiver index | sender index | msg2`.
pub const HELLO_REPLY_LEN: usize = 1 + 4 + 4 + NOISE_MSG2_LEN;
/// `type | receiver index | cookie`.
pub const COOKIE_PACKET_LEN: usize = 1 + 4 + COOKIE_LEN;
/// `type | receiver index | counter`.
pub const DATA_HEADER_LEN: usize = 1 + 4 + 8;
/// The AEAD tag closing every data packet.
pub const TAG_LEN: usize = 16;
/// The largest control datagram (the seed's limit, kept on the wire).
pub const MAX_DATAGRAM: usize = 1200;
/// The largest payload one data packet carries.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - DATA_HEADER_LEN - TAG_LEN;
/// A session seals at most this many packets; then both sides must handshake again
/// (far beyond any real session; it keeps the nonce space from ever wrapping).
pub const MAX_COUNTER: u64 = 1 << 60;

/// Why a datagram was dropped. Nothing is sent back for any of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("not a control-channel packet")]
    Malformed,
    #[error("no session with that index")]
    UnknownSession,
    #[error("failed authentication")]
    Forged,
    #[error("a replay, or older than the replay window")]
    Replayed,
    #[error("too many handshakes in progress")]
    Busy,
    #[error("a packet this side does not expect now")]
    Unexpected,
}

/// What the channel counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub hellos: u64,
    pub cookies_sent: u64,
    pub handshakes: u64,
    pub data_in: u64,
    pub data_out: u64,
    pub malformed: u64,
    pub unknown_session: u64,
    pub forged: u64,
    pub replayed: u64,
    pub busy: u64,
    pub unexpected: u64,
}

impl ChannelStats {
    /// Counts a drop under its reason.
    pub fn count(&mut self, why: Dropped) {
        let n = match why {
            Dropped::Malformed => &mut self.malformed,
            Dropped::UnknownSession => &mut self.unknown_session,
            Dropped::Forged => &mut self.forged,
            Dropped::Replayed => &mut self.replayed,
            Dropped::Busy => &mut self.busy,
            Dropped::Unexpected => &mut self.unexpected,
        };
        *n += 1;
    }
}

/// A control datagram split into its fields; nothing is verified yet.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Hello {
        sender: u32,
        msg1: &'a [u8; NOISE_MSG1_LEN],
        cookie: Option<Cookie>,
    },
    Cookie {
        receiver: u32,
        cookie: Cookie,
    },
    HelloReply {
        receiver: u32,
        sender: u32,
        msg2: &'a [u8],
    },
    Data {
        receiver: u32,
        counter: u64,
        sealed: &'a [u8],
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

impl<'a> Packet<'a> {
    /// Splits a datagram; checks lengths only.
    pub fn parse(b: &'a [u8]) -> Result<Packet<'a>, Dropped> {
        if b.len() > MAX_DATAGRAM {
            return Err(Dropped::Malformed);
        }
        match b.first() {
            Some(&TYPE_HELLO) if b.len() == HELLO_LEN => {
                let msg1 = b[5..5 + NOISE_MSG1_LEN]
                    .try_into()
                    .map_err(|_| Dropped::Malformed)?;
                let mut cookie = [0u8; COOKIE_LEN];
                cookie.copy_from_slice(&b[37..37 + COOKIE_LEN]);
                Ok(Packet::Hello {
                    sender: u32_at(b, 1),
                    msg1,
                    cookie: (cookie != [0; COOKIE_LEN]).then_some(cookie),
                })
            }
            Some(&TYPE_COOKIE) if b.len() == COOKIE_PACKET_LEN => {
                let mut cookie = [0u8; COOKIE_LEN];
                cookie.copy_from_slice(&b[5..]);
                Ok(Packet::Cookie {
                    receiver: u32_at(b, 1),
                    cookie,
                })
            }
            Some(&TYPE_HELLO_REPLY) if b.len() == HELLO_REPLY_LEN => Ok(Packet::HelloReply {
                receiver: u32_at(b, 1),
                sender: u32_at(b, 5),
                msg2: &b[9..],
            }),
            Some(&TYPE_DATA) if b.len() >= DATA_HEADER_LEN + TAG_LEN => {
                let mut counter = [0u8; 8];
                counter.copy_from_slice(&b[5..13]);
                Ok(Packet::Data {
                    receiver: u32_at(b, 1),
                    counter: u64::from_le_bytes(counter),
                    sealed: &b[DATA_HEADER_LEN..],
                })
            }
            _ => Err(Dropped::Malformed),
        }
    }
}

/// Builds a `Hello` around Noise's first message.
pub fn hello(sender: u32, msg1: &[u8; NOISE_MSG1_LEN], cookie: Option<&Cookie>) -> Vec<u8> {
    let mut out = vec![0u8; HELLO_LEN];
    out[0] = TYPE_HELLO;
    out[1..5].copy_from_slice(&sender.to_le_bytes());
    out[5..37].copy_from_slice(msg1);
    if let Some(c) = cookie {
        out[37..37 + COOKIE_LEN].copy_from_slice(c);
    }
    out
}

/// Builds a `Cookie` packet.
pub fn cookie_packet(receiver: u32, cookie: &Cookie) -> Vec<u8> {
    let mut out = Vec::with_capacity(COOKIE_PACKET_LEN);
    out.push(TYPE_COOKIE);
    out.extend_from_slice(&receiver.to_le_bytes());
    out.extend_from_slice(cookie);
    out
}

/// The header of a data packet; the sealed payload follows.
fn data_header(receiver: u32, counter: u64, payload_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(DATA_HEADER_LEN + payload_len + TAG_LEN);
    out.push(TYPE_DATA);
    out.extend_from_slice(&receiver.to_le_bytes());
    out.extend_from_slice(&counter.to_le_bytes());
    out
}

/// Seals `payload` as data packet `counter` for `receiver`.
fn seal(
    transport: &impl keys::Transport,
    receiver: u32,
    counter: u64,
    payload: &[u8],
) -> Result<Vec<u8>, SealError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(SealError::TooLarge(payload.len()));
    }
    if counter >= MAX_COUNTER {
        return Err(SealError::Exhausted);
    }
    let mut out = data_header(receiver, counter, payload.len());
    out.resize(DATA_HEADER_LEN + payload.len() + TAG_LEN, 0);
    transport
        .write(counter, payload, &mut out[DATA_HEADER_LEN..])
        .map_err(|()| SealError::Exhausted)?;
    Ok(out)
}

/// Opens a data packet's sealed part, if it authenticates under `transport`.
fn open(transport: &impl keys::Transport, counter: u64, sealed: &[u8]) -> Result<Vec<u8>, Dropped> {
    let mut out = vec![0u8; sealed.len()];
    let n = transport
        .read(counter, sealed, &mut out)
        .map_err(|()| Dropped::Forged)?;
    out.truncate(n);
    Ok(out)
}

/// Why a payload could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a payload of {0} bytes does not fit one control datagram")]
    TooLarge(usize),
    #[error("the session has sealed all the packets it may; a new handshake is needed")]
    Exhausted,
    #[error("no session to seal with")]
    NoSession,
}
