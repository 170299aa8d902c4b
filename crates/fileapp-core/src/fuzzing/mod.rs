//! The checks behind the fuzz targets in `fuzz/` (feature `fuzzing`).
//!
//! Every decoder that takes bytes from the network has one function here. Each takes
//! arbitrary bytes, must not panic on any of them, and asserts the properties of what
//! the decoder does with them: an assertion that fails is a finding. The fuzz targets
//! are one-line calls of these functions, and `tests/fuzz_corpus.rs` replays the
//! committed corpus and every regression input through the same functions in a plain
//! `cargo test`, so a finding becomes a test by dropping its input into
//! `fuzz/regressions/<target>/`.
//!
//! Inputs that drive more than one call (the record opener, the client core) are read
//! as a small script by [`Script`]; its layout is documented at each function and in
//! `fuzz/README.md`. Running out of input simply ends the script.

use rustls::pki_types::CertificateDer;

use crate::proto::{MAX_DATAGRAM, Message};
use crate::transfer::cert::{ED25519_SPKI_PREFIX, ed25519_key_of};
use crate::transfer::header::{self, Decoded, MAX_REQUEST_LEN, MAX_RESPONSE_LEN};

mod channel;
mod client;
mod relay;
mod tls;

pub use channel::channel;
pub use client::{FUZZ_SEED, FUZZ_TOKEN, client, fuzz_table};
pub use relay::{FUZZ_NOW_MS, fuzz_server, relay_ticket};
pub use tls::{record, unpack};

/// Reads an input as a script: bytes, little-endian integers and length-prefixed pieces.
/// Past the end every read returns `None` (integers) or what is left (pieces).
#[derive(Debug, Clone)]
pub struct Script<'a>(pub &'a [u8]);

impl<'a> Script<'a> {
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    /// Up to `n` bytes (fewer if the input ends).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A piece with a 16-bit length prefix.
    pub fn piece(&mut self) -> &'a [u8] {
        let n = self.u16().unwrap_or(0);
        self.take(n as usize)
    }
}

// ---- 1. control datagrams --------------------------------------------------------------

/// `proto::Message::decode` on arbitrary bytes. Whatever it accepts re-encodes, within
/// `MAX_DATAGRAM`, to a datagram that decodes to the same message, and that encoding is
/// canonical: encoding again gives the same bytes, and `encode_into` agrees with
/// `encode`. Byte identity with the input is not asserted: postcard accepts over-long
/// varints, so two datagrams may carry one message.
pub fn datagram(data: &[u8]) {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let bytes = msg
        .encode()
        .expect("a decoded message must re-encode within MAX_DATAGRAM");
    assert!(bytes.len() <= MAX_DATAGRAM && bytes.len() <= data.len());
    let again = Message::decode(&bytes).expect("a re-encoded message must decode");
    assert_eq!(again, msg, "round trip changed the message");
    assert_eq!(
        again.encode().as_ref(),
        Ok(&bytes),
        "encoding is not canonical"
    );
    let mut buf = [0u8; MAX_DATAGRAM];
    let n = msg.encode_into(&mut buf).expect("encode_into fits too");
    assert_eq!(&buf[..n], &bytes[..], "encode_into and encode disagree");
    let _ = msg.req_id();
}

// ---- 2. transfer headers ---------------------------------------------------------------

/// The properties shared by both header decoders: a header that decodes is re-encoded
/// byte for byte (the format has one encoding of each header), every strict prefix of it
/// is "need more", bytes after it do not matter; "need more" only comes before `max`
/// bytes; an error stays an error whatever bytes follow.
fn header_codec<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    max: usize,
    decode: fn(&[u8]) -> Result<Decoded<T>, header::HeaderError>,
    encode: fn(&T) -> Result<Vec<u8>, header::HeaderError>,
) {
    match decode(data) {
        Ok(Decoded::Done(h, n)) => {
            assert!(
                n <= data.len() && n <= max,
                "used {n} of {} bytes",
                data.len()
            );
            let bytes = encode(&h).expect("a decoded header must re-encode");
            assert_eq!(
                &bytes[..],
                &data[..n],
                "re-encoding changed the header's bytes"
            );
            assert_eq!(decode(&data[..n]), Ok(Decoded::Done(h, n)));
            for cut in 0..n {
                assert_eq!(
                    decode(&data[..cut]),
                    Ok(Decoded::NeedMore),
                    "a strict prefix ({cut} of {n} bytes) is not a valid prefix"
                );
            }
        }
        Ok(Decoded::NeedMore) => {
            assert!(data.len() < max, "need more after {} bytes", data.len());
        }
        Err(e) => {
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[0; 40]);
            longer.extend_from_slice(data);
            assert_eq!(decode(&longer), Err(e), "more bytes changed a verdict");
        }
    }
}

/// `transfer::header::Request::decode` on arbitrary bytes (see [`header_codec`]).
pub fn request_header(data: &[u8]) {
    header_codec(
        data,
        MAX_REQUEST_LEN,
        header::Request::decode,
        header::Request::encode,
    );
}

/// `transfer::header::Response::decode` on arbitrary bytes (see [`header_codec`]).
pub fn response_header(data: &[u8]) {
    header_codec(
        data,
        MAX_RESPONSE_LEN,
        header::Response::decode,
        header::Response::encode,
    );
}

// ---- 4. certificates -------------------------------------------------------------------

/// `transfer::cert::ed25519_key_of` on arbitrary DER. A key it finds is the one the
/// certificate's SubjectPublicKeyInfo carries; the certificate is exactly the input (cut
/// by a byte, or with a byte more, it is not one).
pub fn cert(data: &[u8]) {
    let Some(key) = ed25519_key_of(&CertificateDer::from(data)) else {
        return;
    };
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(&key);
    assert!(
        data.windows(spki.len()).any(|w| w == spki),
        "the key is not in the certificate's SubjectPublicKeyInfo"
    );
    let cut = &data[..data.len() - 1];
    assert_eq!(ed25519_key_of(&CertificateDer::from(cut)), None);
    let mut longer = data.to_vec();
    longer.push(0);
    assert_eq!(ed25519_key_of(&CertificateDer::from(&longer[..])), None);
}

// ---- folders ---------------------------------------------------------------------------

/// `tree::TreeReader` on arbitrary bytes: the first byte picks the piece size the
/// stream is fed in (1..=256) and whether a resume point (entry 1, byte 3) is honoured;
/// the rest is the stream. It must not panic, every entry it yields re-encodes to bytes
/// that decode to the same entry, the data it yields never exceeds the entry's size,
/// and once it is done it accepts nothing more.
pub fn tree_stream(data: &[u8]) {
    use crate::tree::manifest::Decoded as D;
    use crate::tree::{Entry, Event, TreeReader, TreeStart};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = (first & 0x7f) as usize + 1;
    let resume = (first & 0x80 != 0).then_some(TreeStart {
        index: 1,
        offset: 3,
    });
    let mut r = TreeReader::new(resume);
    let mut left = 0u64;
    for piece in rest.chunks(chunk) {
        let mut buf = piece;
        loop {
            let Ok((n, ev)) = r.step(buf) else { return };
            assert!(n <= buf.len());
            buf = &buf[n..];
            match ev {
                None if n == 0 => break,
                Some(Event::Entry { entry, start, .. }) => {
                    let mut b = Vec::new();
                    entry.encode_into(&mut b);
                    assert_eq!(Entry::decode(&b), Ok(D::Done(entry.clone(), b.len())));
                    assert!(start <= entry.size);
                    left = entry.size - start;
                }
                Some(Event::Data(d)) => {
                    assert!(d.len() as u64 <= left);
                    left -= d.len() as u64;
                }
                Some(Event::FileEnd) => assert_eq!(left, 0),
                _ => {}
            }
        }
    }
    if r.done() {
        assert!(r.step(b"x").is_err());
    }
}

// ---- hole punching ---------------------------------------------------------------------

/// `reach::punch` on arbitrary bytes: the probe and punch decoders and a [`Punch`]
/// machine (the owner, punching towards 203.0.113.9:5555) fed the input as a datagram
/// from the peer's endpoint and from a port its NAT could have picked. No panic; a
/// decoded probe or punch re-encodes to exactly the input; the path opens only on the
/// exact punch of the transfer's id from the requester; anything else changes nothing.
///
/// [`Punch`]: crate::reach::punch::Punch
pub fn punch(data: &[u8]) {
    use crate::reach::punch::{
        Punch, PunchConfig, PunchState, Side, parse_probe, parse_punch, probe_datagram,
        punch_datagram,
    };
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    if let Some(secret) = parse_probe(data) {
        assert_eq!(probe_datagram(&secret), data);
    }
    if let Some((id, role)) = parse_punch(data) {
        let side = match role {
            1 => Some(Side::Requester),
            2 => Some(Side::Owner),
            _ => None,
        };
        if let Some(side) = side {
            assert_eq!(punch_datagram(&id, side), data);
        }
    }
    const ID: [u8; 16] = [7; 16];
    let t0 = Instant::now();
    let server = SocketAddr::from(([198, 51, 100, 1], 4000));
    let peer = SocketAddr::from(([203, 0, 113, 9], 5555));
    let valid = data == punch_datagram(&ID, Side::Requester).as_slice();
    for from in [peer, SocketAddr::from(([203, 0, 113, 9], 6000))] {
        let mut p = Punch::new(t0, PunchConfig::default(), Side::Owner, ID, [1; 16], server);
        p.handle_datagram(t0, peer, data);
        assert_eq!(p.state(), PunchState::Learning, "a datagram ended learning");
        p.peer_known(t0, peer);
        while p.poll_transmit().is_some() {}
        let before = p.poll_timeout();
        p.handle_datagram(t0 + Duration::from_millis(1), from, data);
        if valid {
            assert_eq!(p.state(), PunchState::Open { peer: from });
        } else {
            assert_eq!(p.state(), PunchState::Punching);
            assert_eq!(p.poll_transmit(), None, "a stray datagram was answered");
            assert_eq!(p.poll_timeout(), before);
        }
    }
}
