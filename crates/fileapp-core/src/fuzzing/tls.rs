//! The TLS record checks: the opener against an independent model of RFC 8446 §5, and
//! the bulk receive path's unpacker on scripted streams.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;
use rustls::crypto::cipher::{AeadKey, Iv};

use crate::transfer::record::{
    self, Content, Control, HEADER_LEN, MAX_CIPHERTEXT, MAX_PAYLOAD, MAX_WITHOUT_DATA, Opener,
    RecordError, Sealer, Side, TAG_LEN,
};

use super::Script;
use crate::transfer::record::MAX_RECORD;
use crate::transfer::unpack::{Cursor, NextKey, UnpackError, Unpacker};

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
fn control(content: Content, payload: &[u8], side: Side) -> Option<Control> {
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
            let got = record::handshake(payload, side);
            if side == Side::Server && payload.first() == Some(&4) {
                assert_eq!(
                    got,
                    Err(RecordError::UnexpectedMessage(4)),
                    "a server took a ticket"
                );
            }
            if let Err(e) = &got {
                assert!(e.alert().is_some(), "no alert for {e:?}");
            }
            let got = got.ok()?;
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
/// two records before the sequence number runs out; bit 2: we are the TLS server, which
/// refuses session tickets), then operations, each `op u8`:
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
    let side = if setup & 4 != 0 {
        Side::Server
    } else {
        Side::Client
    };
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
        match control(content, &payload, side) {
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

// ---- 6. the bulk receive path's unpacker -----------------------------------------------

/// `transfer::unpack::Unpacker` on a scripted stream, fed in pieces as a socket would
/// deliver it. Script: `setup u8` (bit 0: ChaCha20-Poly1305; the other bits choose the
/// read size), `want u16` (bytes of data expected), `trailer u8` (bytes of trailer, at
/// most 63), then records, each `op u8`:
/// - `op % 6 == 0`: `len u16, bytes`: raw bytes (the stream is no longer clean);
/// - `1`: a data record with a piece as payload (at most 2^14 bytes);
/// - `2`: a key update (`requested` from the op's bit 3); the peer moves to the next key;
/// - `3`: an empty data record;
/// - `4`: a session ticket (ignored by the receiver), split over two records if the op's
///   bit 3 is set;
/// - `5`: close_notify (ends the stream).
///
/// Nothing panics. For a clean stream (no raw bytes) the result is exactly the model's:
/// the first `want` bytes of the records' data packed, then the trailer, or `TooMuch`
/// when the data outgrew both, or `TooManyWithoutData` at the first run of more than
/// [`MAX_WITHOUT_DATA`] records without data (whichever comes first); a stream that ends
/// early is simply unfinished.
pub fn unpack(data: &[u8]) {
    let mut s = Script(data);
    let Some(setup) = s.u8() else { return };
    let chacha = setup & 1 != 0;
    let read = 1 + (setup as usize >> 1) * 131;
    let want = s.u16().unwrap_or(0) as u64;
    let trailer = (s.u8().unwrap_or(0) % 64) as usize;
    let (wire, model, clean, failure) = scripted_stream(&mut s, chacha, want + trailer as u64);

    let opener = Opener::new(&traffic(chacha, 0), 0).expect("usable secret");
    let mut u = Unpacker::new(opener, want, trailer);
    let mut generation = 0u8;
    let mut next_key = || {
        generation = generation.wrapping_add(1);
        Ok((0, traffic(chacha, generation)))
    };
    let got = feed(&mut u, &wire, read, &mut next_key);
    if !clean {
        return;
    }
    if let Err(e) = &got {
        assert!(e.alert().is_some(), "no alert for {e:?}");
    }
    let too_much = failure == Some(UnpackError::TooMuch);
    match got {
        Err(e) if Some(&e) == failure.as_ref() => {}
        Err(e) => panic!("a clean stream failed: {e} (model: {failure:?})"),
        Ok(packed) => {
            assert!(
                failure.is_none() || too_much,
                "no error, model: {failure:?}"
            );
            assert!(
                !too_much,
                "{} bytes of data taken for {want} + {trailer}",
                model.len()
            );
            let data_len = (model.len() as u64).min(want) as usize;
            assert_eq!(packed, model[..data_len], "the packed data differs");
            assert_eq!(u.trailer(), &model[data_len..], "the trailer differs");
            assert_eq!(u.received(), data_len as u64);
        }
    }
}

/// The wire bytes of a scripted stream, the data its records carry, whether it holds
/// only well-formed records, and the error that receiving it must end with when at most
/// `room` bytes of data and trailer are expected (if it is clean).
fn scripted_stream(
    s: &mut Script<'_>,
    chacha: bool,
    room: u64,
) -> (Vec<u8>, Vec<u8>, bool, Option<UnpackError>) {
    let mut peer = Peer::new(chacha, 0, 0);
    let mut generation = 0u8;
    let (mut wire, mut model, mut clean) = (Vec::new(), Vec::new(), true);
    // Records in a row without data: empty ones and tickets, and key updates.
    let (mut empty, mut updates, mut failure) = (0u8, 0u8, None);
    while let Some(op) = s.u8() {
        let inner = match op % 6 {
            0 => {
                wire.extend_from_slice(s.piece());
                clean = false;
                continue;
            }
            1 => {
                let piece = s.piece();
                let body = &piece[..piece.len().min(MAX_PAYLOAD)];
                model.extend_from_slice(body);
                [body, &[23]].concat()
            }
            2 => vec![24, 0, 0, 1, (op >> 3) & 1, 22],
            3 => vec![23],
            // With the op's bit 3, split over two records (the first sealed here).
            4 if (op >> 3) & 1 == 1 => {
                if failure.is_none() {
                    if empty == MAX_WITHOUT_DATA {
                        failure = Some(UnpackError::Record(RecordError::TooManyWithoutData));
                    }
                    empty += 1;
                }
                wire.extend_from_slice(&peer.seal(&[4, 0, 0, 4, 0, 0, 22]));
                peer.seq += 1;
                vec![0, 0, 22]
            }
            4 => vec![4, 0, 0, 4, 0, 0, 0, 0, 22],
            _ => vec![1, 0, 21],
        };
        if failure.is_none() {
            match op % 6 {
                1 if inner.len() > 1 => {
                    (empty, updates) = (0, 0);
                    if model.len() as u64 > room {
                        failure = Some(UnpackError::TooMuch);
                    }
                }
                5 => {}
                kind => {
                    let count = if kind == 2 { &mut updates } else { &mut empty };
                    if *count == MAX_WITHOUT_DATA {
                        failure = Some(UnpackError::Record(RecordError::TooManyWithoutData));
                    }
                    *count += 1;
                }
            }
        }
        wire.extend_from_slice(&peer.seal(&inner));
        peer.seq += 1;
        match op % 6 {
            2 => {
                generation = generation.wrapping_add(1);
                peer = Peer::new(chacha, generation, 0);
            }
            5 => break,
            _ => {}
        }
    }
    (wire, model, clean, failure)
}

/// Feeds `wire` to `u` in reads of `read` bytes into a buffer that holds at least two
/// records, carrying an incomplete record over to the next buffer, as the receiver does.
/// Returns the packed data.
fn feed(
    u: &mut Unpacker,
    wire: &[u8],
    read: usize,
    next_key: &mut NextKey<'_>,
) -> Result<Vec<u8>, UnpackError> {
    let capacity = 2 * MAX_RECORD + read;
    let (mut out, mut buf, mut rest) = (Vec::new(), Vec::new(), wire);
    let mut at = Cursor::default();
    loop {
        at = u.unpack(&mut buf, at, next_key)?;
        if u.is_closed() || rest.is_empty() {
            out.extend_from_slice(&buf[..at.data]);
            return Ok(out);
        }
        if buf.len() + read > capacity {
            out.extend_from_slice(&buf[..at.data]);
            buf.drain(..at.records);
            at = Cursor::default();
        }
        let n = read.min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}
