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

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::pki_types::CertificateDer;

use crate::client::core::{ClientCore, Config, State};
use crate::identity::Identity;
use crate::proto::{FileEntry, Item, MAX_DATAGRAM, Message, pack_table};
use crate::reliable::RetryPolicy;
use crate::transfer::cert::{ED25519_SPKI_PREFIX, ed25519_key_of};
use crate::transfer::header::{self, Decoded, MAX_REQUEST_LEN, MAX_RESPONSE_LEN};
use crate::transfer::record::{
    self, Content, Control, HEADER_LEN, MAX_CIPHERTEXT, MAX_PAYLOAD, Opener, RecordError, Sealer,
    TAG_LEN,
};

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

// ---- 3. TLS records --------------------------------------------------------------------

/// The traffic secret of key generation `generation` (each key update makes the next).
fn traffic(chacha: bool, generation: u8) -> ConnectionTrafficSecrets {
    let (key, iv) = traffic_bytes(generation);
    let (key, iv) = (AeadKey::from(key), Iv::from(iv));
    if chacha {
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }
    } else {
        ConnectionTrafficSecrets::Aes256Gcm { key, iv }
    }
}

fn traffic_bytes(generation: u8) -> ([u8; 32], [u8; 12]) {
    let mut key = *b"fileapp-fuzzing-fixed-secret-256";
    let mut iv = *b"fuzzing-iv-!";
    key[31] ^= generation;
    iv[11] ^= generation;
    (key, iv)
}

/// An independent sealer and a model of what the opener must make of a record: the
/// peer's side of the connection, written from RFC 8446 §5 rather than from `record`.
struct Peer {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Peer {
    fn new(chacha: bool, generation: u8, seq: u64) -> Peer {
        let (key, iv) = traffic_bytes(generation);
        let alg = if chacha {
            &aead::CHACHA20_POLY1305
        } else {
            &aead::AES_256_GCM
        };
        let key = UnboundKey::new(alg, &key).expect("a 32-byte key");
        Peer {
            key: LessSafeKey::new(key),
            iv,
            seq,
        }
    }

    /// The protected record of `inner` (payload, content type, padding) at sequence
    /// number `seq`; `inner` is at most `u16::MAX - TAG_LEN` bytes.
    fn seal(&self, inner: &[u8]) -> Vec<u8> {
        let len = (inner.len() + TAG_LEN) as u16;
        let hdr = [23, 3, 3, (len >> 8) as u8, len as u8];
        let mut nonce = self.iv;
        for (b, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        let mut out = hdr.to_vec();
        out.extend_from_slice(inner);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(hdr),
                &mut out[HEADER_LEN..],
            )
            .expect("sealing cannot fail");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// What opening that record must give: its content type and payload length, or the
    /// error that ends the connection.
    fn expect(&self, inner: &[u8]) -> Result<(Content, usize), RecordError> {
        let len = inner.len() + TAG_LEN;
        if len > MAX_CIPHERTEXT {
            return Err(RecordError::TooLong(len));
        }
        if inner.is_empty() {
            return Err(RecordError::BadHeader);
        }
        if self.seq == u64::MAX {
            return Err(RecordError::SequenceExhausted);
        }
        // §5.4: the inner plaintext (payload, type, padding) is at most 2^14 + 1 bytes.
        if inner.len() > MAX_PAYLOAD + 1 {
            return Err(RecordError::TooLong(inner.len()));
        }
        let Some(at) = inner.iter().rposition(|&b| b != 0) else {
            return Err(RecordError::NoContentType);
        };
        let content = match inner[at] {
            21 => Content::Alert,
            22 => Content::Handshake,
            23 => Content::ApplicationData,
            t => return Err(RecordError::UnexpectedType(t)),
        };
        Ok((content, at))
    }
}

/// An inner plaintext from the script: `rep u8, pad u16, len u16, body`: the body
/// `rep + 1` times, then `pad` zero bytes, cut to what a record header can say.
fn inner_plaintext(s: &mut Script<'_>) -> Vec<u8> {
    let cap = u16::MAX as usize - TAG_LEN;
    let rep = s.u8().unwrap_or(0) as usize + 1;
    let pad = s.u16().unwrap_or(0) as usize;
    let body = s.piece();
    let mut inner: Vec<u8> = body
        .iter()
        .copied()
        .cycle()
        .take((body.len() * rep).min(cap))
        .collect();
    let pad = pad.min(cap - inner.len());
    inner.resize(inner.len() + pad, 0);
    inner
}

/// Checks what the control helpers make of an opened non-data payload; `None` when
/// the receiver would end the connection.
fn control(content: Content, payload: &[u8]) -> Option<Control> {
    match content {
        Content::Alert => match record::alert(payload) {
            Ok(Control::Closed) => {
                assert!(payload.len() == 2 && payload[1] == 0, "not a close_notify");
                Some(Control::Closed)
            }
            Ok(other) => panic!("an alert read as {other:?}"),
            Err(_) => None,
        },
        Content::Handshake => {
            let got = record::handshake(payload).ok()?;
            if let Control::KeyUpdate { requested } = got {
                assert!(
                    payload.ends_with(&[24, 0, 0, 1, requested as u8]),
                    "a key update that is not the record's last message"
                );
            }
            Some(got)
        }
        Content::ApplicationData => Some(Control::Nothing),
    }
}

/// `transfer::record::Opener` on records the fuzzer scripts, under keys from a fixed
/// secret. Script: `setup u8` (bit 0: ChaCha20-Poly1305, else AES-256-GCM; bit 1: start
/// two records before the sequence number runs out), then operations, each `op u8`:
/// - `op % 4 == 0`: `len u16, bytes`: raw bytes opened as a record;
/// - `1`: an inner plaintext (see [`inner_plaintext`]) sealed properly and opened;
/// - `2`: `pos u16, xor u8`, an inner plaintext sealed then one byte changed: it must
///   not open;
/// - `3`: `skip u8` and an inner plaintext: sealed and opened from `skip` bytes into a
///   buffer ([`Opener::open_within`]).
///
/// A properly sealed record opens exactly as the model says (content type, payload,
/// padding stripped, the errors for all-zero, unknown type, oversized, sequence
/// exhausted); what opens and has no padding re-seals with a [`Sealer`] at the same
/// sequence number to the same bytes; a key update rekeys both sides; any error, or a
/// close_notify, ends the script as it ends a connection.
pub fn record(data: &[u8]) {
    let mut s = Script(data);
    let Some(setup) = s.u8() else { return };
    let chacha = setup & 1 != 0;
    let first_seq = if setup & 2 != 0 { u64::MAX - 2 } else { 0 };
    let mut generation = 0u8;
    let mut opener = Opener::new(&traffic(chacha, 0), first_seq).expect("usable secret");
    let mut peer = Peer::new(chacha, 0, first_seq);
    while let Some(op) = s.u8() {
        let (content, payload) = match op % 4 {
            0 => {
                let mut buf = s.piece().to_vec();
                let _ = Opener::record_len(&buf);
                let Ok(opened) = opener.open_within(&mut buf, 0) else {
                    return;
                };
                assert!(opened.payload.start == 0 && opened.payload.end < buf.len());
                peer.seq += 1;
                (opened.content, buf[opened.payload].to_vec())
            }
            2 => {
                let pos = s.u16().unwrap_or(0) as usize;
                let xor = s.u8().unwrap_or(0) | 1;
                let mut rec = peer.seal(&inner_plaintext(&mut s));
                let at = pos % rec.len();
                rec[at] ^= xor;
                let got = opener.open_within(&mut rec, 0);
                assert!(
                    got.is_err(),
                    "a record changed at byte {at} opened: {got:?}"
                );
                return;
            }
            kind => {
                let skip = if kind == 3 { s.u8().unwrap_or(0) } else { 0 } as usize;
                let inner = inner_plaintext(&mut s);
                let rec = peer.seal(&inner);
                let want = peer.expect(&inner);
                for cut in [0, 1, HEADER_LEN - 1] {
                    assert_eq!(Opener::record_len(&rec[..cut]), Ok(None));
                }
                if !inner.is_empty() && inner.len() + TAG_LEN <= MAX_CIPHERTEXT {
                    assert_eq!(Opener::record_len(&rec[..rec.len() - 1]), Ok(None));
                    assert_eq!(Opener::record_len(&rec), Ok(Some(rec.len())));
                }
                let mut buf = vec![0xa5; skip];
                buf.extend_from_slice(&rec);
                let got = opener.open_within(&mut buf, skip);
                assert_eq!(
                    got.as_ref().map(|o| (o.content, o.payload.clone())),
                    want.as_ref().map(|&(c, at)| (c, 0..at)),
                    "the opener disagrees with the model on a {}-byte inner plaintext",
                    inner.len()
                );
                let Ok((content, at)) = want else { return };
                assert_eq!(&buf[..at], &inner[..at], "wrong plaintext");
                if inner.len() == at + 1 {
                    let mut sealer =
                        Sealer::new(&traffic(chacha, generation), peer.seq, u64::MAX).unwrap();
                    let mut again = Vec::new();
                    sealer
                        .seal_to(&inner[..at], content, &mut again)
                        .expect("what opened re-seals");
                    assert_eq!(again, rec, "re-sealing gave other bytes");
                }
                peer.seq += 1;
                (content, inner[..at].to_vec())
            }
        };
        match control(content, &payload) {
            None | Some(Control::Closed) => return,
            Some(Control::KeyUpdate { .. }) => {
                generation = generation.wrapping_add(1);
                opener
                    .rekey(&traffic(chacha, generation), 0)
                    .expect("usable secret");
                peer = Peer::new(chacha, generation, 0);
            }
            Some(Control::Nothing) => {}
        }
    }
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

// ---- 5. the client's datagram handler --------------------------------------------------

/// Everything of a client core that a datagram could change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    state: State,
    table: String,
    version: u64,
    timeout: Option<Instant>,
    behind: bool,
    offered: BTreeMap<String, FileEntry>,
}

impl Seen {
    fn of(core: &ClientCore) -> Seen {
        Seen {
            state: core.state(),
            table: format!("{:?}", core.table()),
            version: core.table().version(),
            timeout: core.poll_timeout(),
            behind: core.behind_own_writes(),
            offered: core.offered().clone(),
        }
    }
}

/// The token the scripted server hands out.
pub const FUZZ_TOKEN: u128 = 0x0f0f_1234;
/// The first request id of the fuzzed client (ids then count up from it).
pub const FUZZ_SEED: u64 = 1;

fn identity() -> Arc<Identity> {
    static ID: OnceLock<Arc<Identity>> = OnceLock::new();
    ID.get_or_init(|| {
        // PKCS#8 v1 of the Ed25519 key with a fixed seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&[7; 32]);
        Arc::new(Identity::from_pkcs8(&der).expect("a valid PKCS#8 key"))
    })
    .clone()
}

/// The table the scripted server sends a client that comes online, at version 3.
pub fn fuzz_table() -> Vec<Item> {
    vec![
        Item::Owner {
            name: "alice".into(),
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            tcp_port: 4000,
            online: true,
            key: Some([1; 32]),
        },
        Item::Owner {
            name: "bob".into(),
            ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
            tcp_port: 4001,
            online: true,
            key: None,
        },
        Item::File {
            owner: "alice".into(),
            file: "a.txt".into(),
            size: 12,
            hash: [2; 32],
        },
        Item::File {
            owner: "bob".into(),
            file: "b.iso".into(),
            size: 5 << 30,
            hash: [3; 32],
        },
    ]
}

/// Sends what the client has to send nowhere, checking that it is well formed.
fn drain(core: &mut ClientCore) -> Vec<Message> {
    while core.poll_event().is_some() {}
    let mut sent = Vec::new();
    while let Some(d) = core.poll_transmit() {
        assert!(d.len() <= MAX_DATAGRAM);
        sent.push(Message::decode(&d).expect("the client sends only valid datagrams"));
    }
    sent
}

/// The request id of the last request among `sent`.
fn last_req(sent: &[Message]) -> u64 {
    sent.iter()
        .rev()
        .find_map(Message::req_id)
        .expect("a request was sent")
}

fn feed(core: &mut ClientCore, now: Instant, msg: &Message) {
    core.handle_datagram(now, &msg.encode().expect("fits"));
}

/// A client core in the state the script's first byte names (modulo 7): fresh,
/// registering, registering with a key, online, online with a key (table at version 3
/// with two owners), offline after dereg, reconnecting after lost heartbeats.
fn client_in(state: u8, now: &mut Instant) -> ClientCore {
    let keyed = matches!(state, 2 | 4);
    let cfg = Config {
        name: "fuzzer".into(),
        tcp_port: 7000,
        retry: RetryPolicy::default(),
        heartbeat: Duration::from_secs(2),
        advertise: None,
        identity: keyed.then(identity),
        evict: false,
    };
    let mut core = ClientCore::new(cfg, FUZZ_SEED);
    if state == 0 {
        return core;
    }
    core.register(*now);
    let req = last_req(&drain(&mut core));
    if matches!(state, 1 | 2) {
        return core;
    }
    let welcome = Message::Welcome {
        req,
        token: FUZZ_TOKEN,
        heartbeat_ms: 1000,
        version: 3,
    };
    feed(&mut core, *now, &welcome);
    drain(&mut core);
    for part in pack_table(0, 3, fuzz_table()) {
        core.handle_datagram(*now, &part);
    }
    drain(&mut core);
    assert_eq!((core.state(), core.table().version()), (State::Online, 3));
    match state {
        5 => {
            core.dereg(*now);
            let req = last_req(&drain(&mut core));
            feed(&mut core, *now, &Message::Ack { req, version: 3 });
            drain(&mut core);
            assert_eq!(core.state(), State::Offline);
        }
        6 => {
            while core.state() == State::Online {
                *now += Duration::from_millis(500);
                core.handle_timeout(*now);
                drain(&mut core);
            }
            assert_eq!(core.state(), State::Reconnecting);
        }
        _ => {}
    }
    core
}

/// `client::core::ClientCore::handle_datagram` on datagrams from the server's address.
/// Script: `state u8` (see [`client_in`]), then steps of `wait u8, len u16, datagram`:
/// after `wait * 20` ms (and the client's timers, if `wait > 0`), the datagram arrives.
/// Nothing panics; what the client sends is well formed; a datagram that does not
/// decode, or that only a server receives, changes nothing at all (state, table, timers,
/// offers, nothing sent or told); a table part changes the table only when online; the
/// table version never goes back but on a new session (Welcome); every row of the
/// table belongs to an owner it lists.
pub fn client(data: &[u8]) {
    let mut s = Script(data);
    let Some(state) = s.u8() else { return };
    let mut now = Instant::now();
    let mut core = client_in(state % 7, &mut now);
    while let Some(wait) = s.u8() {
        if wait > 0 {
            now += Duration::from_millis(20 * wait as u64);
            core.handle_timeout(now);
            drain(&mut core);
        }
        let bytes = s.piece();
        let before = Seen::of(&core);
        core.handle_datagram(now, bytes);
        let after = Seen::of(&core);
        let inert = match Message::decode(bytes) {
            Err(_) => true,
            Ok(msg) => {
                if !matches!(msg, Message::Welcome { .. }) {
                    assert!(after.version >= before.version, "the table went back");
                }
                if matches!(msg, Message::Table { .. }) && before.state != State::Online {
                    assert_eq!(after.table, before.table, "a table part applied offline");
                }
                matches!(
                    msg,
                    Message::Register { .. }
                        | Message::Offer { .. }
                        | Message::Dereg { .. }
                        | Message::Heartbeat { .. }
                        | Message::TableAck { .. }
                )
            }
        };
        if inert {
            assert_eq!(after, before, "an inert datagram changed the client");
            assert!(core.poll_transmit().is_none() && core.poll_event().is_none());
        }
        for row in core.table().rows() {
            let owner = core
                .table()
                .owner(&row.owner)
                .expect("a row's owner is listed");
            assert!(owner.files.contains_key(&row.file));
        }
        drain(&mut core);
    }
}
