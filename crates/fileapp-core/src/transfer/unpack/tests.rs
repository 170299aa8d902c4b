//! The unpacker on its own: records sealed here, cut up as a socket might deliver them,
//! and bytes no peer of ours would send.

use proptest::prelude::*;
use rustls::ConnectionTrafficSecrets;
use rustls::crypto::cipher::{AeadKey, Iv};

use super::*;
use crate::transfer::record::{CLOSE_NOTIFY, KEY_UPDATE, MAX_PAYLOAD, MAX_RECORD, Sealer};

fn secrets(seed: u8) -> ConnectionTrafficSecrets {
    ConnectionTrafficSecrets::Aes256Gcm {
        key: AeadKey::from([seed; 32]),
        iv: Iv::from([seed ^ 0x5a; 12]),
    }
}

fn sealer() -> Sealer {
    Sealer::new(&secrets(1), 0, u64::MAX).unwrap()
}

fn unpacker(want: u64, trailer: usize) -> Unpacker {
    Unpacker::new(Opener::new(&secrets(1), 0).unwrap(), want, trailer)
}

/// Key updates are not expected: asking for the next key is an error.
fn no_key() -> Result<(u64, ConnectionTrafficSecrets), RecordError> {
    Err(RecordError::KeyUpdate("no key update expected".into()))
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// Feeds `wire` to `u` the way the receiver does: pieces of the given `sizes` (cycled)
/// appended to a buffer of `capacity` bytes (at least two records), the incomplete record at its end carried
/// into the next one. Returns the data and how many buffers held some.
fn feed(
    u: &mut Unpacker,
    wire: &[u8],
    sizes: &[usize],
    capacity: usize,
    next_key: &mut NextKey<'_>,
) -> Result<(Vec<u8>, usize), UnpackError> {
    let mut data = Vec::new();
    let mut buffers = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut rest = wire;
    let mut size = sizes.iter().copied().cycle();
    while !u.is_closed() && (!rest.is_empty() || !carry.is_empty()) {
        let mut buf = carry.clone();
        let mut at = Cursor::default();
        loop {
            at = u.unpack(&mut buf, at, next_key)?;
            if rest.is_empty() || buf.len() + MAX_RECORD > capacity {
                break;
            }
            // As a read into the rest of the buffer would: never past its end.
            let n = size
                .next()
                .unwrap()
                .min(capacity - buf.len())
                .clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        if at.data > 0 {
            buffers += 1;
        }
        data.extend_from_slice(&buf[..at.data]);
        if rest.is_empty() && buf[at.records..] == carry[..] {
            break; // an incomplete record that can no longer grow
        }
        carry = buf[at.records..].to_vec();
    }
    Ok((data, buffers))
}

#[test]
fn records_split_across_reads_and_buffers_come_out_whole() {
    let data = bytes(300_000, 1);
    let mut wire = Vec::new();
    sealer()
        .seal_to(&data, Content::ApplicationData, &mut wire)
        .unwrap();
    for sizes in [
        &[1usize, 7, 4096][..],
        &[5][..],
        &[16_405, 3][..],
        &[1 << 20][..],
    ] {
        let mut u = unpacker(data.len() as u64, 0);
        let (got, buffers) = feed(&mut u, &wire, sizes, 64 << 10, &mut no_key).unwrap();
        assert!(got == data, "data differs with pieces {sizes:?}");
        assert!(buffers > 1, "the records did not span buffers");
        assert!(u.is_done());
        assert_eq!(u.received(), data.len() as u64);
    }
}

#[test]
fn a_trailer_inside_the_last_record_is_kept_apart() {
    let data = bytes(20_000, 2);
    let hash = bytes(32, 3);
    let mut plain = data.clone();
    plain.extend_from_slice(&hash);
    let mut wire = Vec::new();
    sealer()
        .seal_to(&plain, Content::ApplicationData, &mut wire)
        .unwrap();
    let mut u = unpacker(data.len() as u64, 32);
    let at = u.unpack(&mut wire, Cursor::default(), &mut no_key).unwrap();
    assert_eq!(at.records, wire.len());
    assert!(wire[..at.data] == data[..], "data differs");
    assert!(u.is_done());
    assert_eq!(u.trailer(), &hash[..]);
    assert_eq!(u.into_trailer(), hash);
}

#[test]
fn a_trailer_split_between_records_and_early_plaintext() {
    let data = bytes(1000, 4);
    let mut u = unpacker(data.len() as u64, 8);
    // 990 bytes opened before the bulk path, then 10 + 8 in one record.
    assert_eq!(u.take_plaintext(&data[..990]).unwrap(), 990);
    let mut rest = data[990..].to_vec();
    rest.extend_from_slice(b"TRAILER!");
    let mut wire = Vec::new();
    let mut s = sealer();
    s.seal_to(&rest[..14], Content::ApplicationData, &mut wire)
        .unwrap();
    s.seal_to(&rest[14..], Content::ApplicationData, &mut wire)
        .unwrap();
    let at = u.unpack(&mut wire, Cursor::default(), &mut no_key).unwrap();
    assert_eq!(&wire[..at.data], &data[990..]);
    assert!(u.is_done());
    assert_eq!(u.trailer(), b"TRAILER!");
}

#[test]
fn a_buffer_of_only_a_key_update_yields_no_data_and_switches_keys() {
    let data = bytes(50_000, 5);
    let mut s = sealer();
    let mut update = Vec::new();
    s.seal_to(&KEY_UPDATE, Content::Handshake, &mut update)
        .unwrap();
    s.rekey(&secrets(2), 0).unwrap();
    let mut after = Vec::new();
    s.seal_to(&data, Content::ApplicationData, &mut after)
        .unwrap();

    let mut u = unpacker(data.len() as u64, 0);
    let mut asked = 0;
    let mut next_key = || {
        asked += 1;
        Ok((0, secrets(2)))
    };
    let at = u
        .unpack(&mut update, Cursor::default(), &mut next_key)
        .unwrap();
    assert_eq!(
        at,
        Cursor {
            data: 0,
            records: update.len()
        }
    );
    let at = u
        .unpack(&mut after, Cursor::default(), &mut next_key)
        .unwrap();
    assert!(
        after[..at.data] == data[..],
        "data under the new key differs"
    );
    assert!(u.is_done());
    assert_eq!(asked, 1);
}

#[test]
fn a_failed_key_update_is_its_own_error() {
    let mut wire = Vec::new();
    sealer()
        .seal_to(&[24, 0, 0, 1, 1], Content::Handshake, &mut wire)
        .unwrap();
    let mut u = unpacker(10, 0);
    let e = u
        .unpack(&mut wire, Cursor::default(), &mut no_key)
        .unwrap_err();
    assert!(matches!(e, UnpackError::KeyUpdate(_)), "{e:?}");
}

#[test]
fn tickets_and_empty_records_yield_no_data() {
    let mut ticket = vec![4u8, 0, 0x3f, 0xfc];
    ticket.resize(MAX_PAYLOAD, 0xab);
    let mut s = sealer();
    let mut wire = Vec::new();
    s.seal_to(&ticket, Content::Handshake, &mut wire).unwrap();
    s.seal_to(&[], Content::ApplicationData, &mut wire).unwrap();
    s.seal_to(&ticket, Content::Handshake, &mut wire).unwrap();
    let mut u = unpacker(3, 0);
    let at = u.unpack(&mut wire, Cursor::default(), &mut no_key).unwrap();
    assert_eq!(
        at,
        Cursor {
            data: 0,
            records: wire.len()
        }
    );
    assert_eq!(u.received(), 0);
    assert!(!u.is_done() && !u.is_closed());
    // The data still comes after them, under the same key.
    let mut more = Vec::new();
    s.seal_to(b"abc", Content::ApplicationData, &mut more)
        .unwrap();
    let at = u.unpack(&mut more, Cursor::default(), &mut no_key).unwrap();
    assert_eq!(&more[..at.data], b"abc");
    assert!(u.is_done());
}

#[test]
fn close_notify_stops_unpacking_and_fatal_alerts_are_errors() {
    let mut s = sealer();
    let mut wire = Vec::new();
    s.seal_to(b"hello", Content::ApplicationData, &mut wire)
        .unwrap();
    s.seal_to(&CLOSE_NOTIFY, Content::Alert, &mut wire).unwrap();
    let closed_at = wire.len();
    wire.extend_from_slice(b"after the end");
    let mut u = unpacker(100, 0);
    let at = u.unpack(&mut wire, Cursor::default(), &mut no_key).unwrap();
    assert_eq!(&wire[..at.data], b"hello");
    assert_eq!(at.records, closed_at, "read past close_notify");
    assert!(u.is_closed() && !u.is_done());
    // Once closed, nothing more is opened.
    assert_eq!(u.unpack(&mut wire, at, &mut no_key).unwrap(), at);

    let mut wire = Vec::new();
    sealer()
        .seal_to(&[2, 40], Content::Alert, &mut wire)
        .unwrap();
    let e = unpacker(1, 0)
        .unpack(&mut wire, Cursor::default(), &mut no_key)
        .unwrap_err();
    assert_eq!(e, UnpackError::Record(RecordError::Alert(40)));
}

#[test]
fn more_than_announced_is_refused() {
    let mut wire = Vec::new();
    sealer()
        .seal_to(&bytes(100, 6), Content::ApplicationData, &mut wire)
        .unwrap();
    let e = unpacker(60, 32)
        .unpack(&mut wire, Cursor::default(), &mut no_key)
        .unwrap_err();
    assert_eq!(e, UnpackError::TooMuch);
    assert_eq!(
        unpacker(4, 0).take_plaintext(b"12345"),
        Err(UnpackError::TooMuch)
    );
}

#[test]
fn garbage_is_an_error() {
    let mut u = unpacker(10, 0);
    let mut junk = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    assert_eq!(
        u.unpack(&mut junk, Cursor::default(), &mut no_key),
        Err(UnpackError::Record(RecordError::BadHeader))
    );
    // A well-formed header over bytes that were never sealed.
    let mut forged = vec![23, 3, 3, 0, 40];
    forged.extend_from_slice(&[0x11; 40]);
    assert_eq!(
        unpacker(10, 0).unpack(&mut forged, Cursor::default(), &mut no_key),
        Err(UnpackError::Record(RecordError::BadRecordMac))
    );
    // A record flipped in flight.
    let mut wire = Vec::new();
    sealer()
        .seal_to(b"data", Content::ApplicationData, &mut wire)
        .unwrap();
    wire[7] ^= 1;
    assert_eq!(
        unpacker(4, 0).unpack(&mut wire, Cursor::default(), &mut no_key),
        Err(UnpackError::Record(RecordError::BadRecordMac))
    );
}

proptest! {
    /// Arbitrary bytes, after a valid record or not, at any cursor: an answer, never a
    /// panic, and the cursor stays in the buffer.
    #[test]
    fn arbitrary_bytes_never_panic(
        junk in proptest::collection::vec(any::<u8>(), 0..2048),
        header in any::<bool>(),
        valid_first in any::<bool>(),
    ) {
        let mut buf = Vec::new();
        if valid_first {
            sealer().seal_to(b"ok", Content::ApplicationData, &mut buf).unwrap();
        }
        let start = buf.len();
        if header {
            // Make the junk look like a record so the cipher sees it.
            let len = junk.len().min(u16::MAX as usize) as u16;
            buf.extend_from_slice(&[23, 3, 3]);
            buf.extend_from_slice(&len.to_be_bytes());
        }
        buf.extend_from_slice(&junk);
        let mut u = unpacker(1 << 20, 32);
        let mut key = || Ok((0, secrets(9)));
        if let Ok(at) = u.unpack(&mut buf, Cursor::default(), &mut key) {
            prop_assert!(at.data <= at.records && at.records <= buf.len());
            prop_assert!(at.records >= start || !valid_first);
        }
    }
}

/// rustls' limit on records without data: 32 empty data records and tickets in a row
/// are accepted, the 33rd is refused; data in between resets the count.
#[test]
fn records_without_data_are_capped() {
    let ticket = [4, 0, 0, 4, 0, 0, 0, 0];
    let max = u32::from(record::MAX_WITHOUT_DATA);
    let quiet = |s: &mut Sealer, wire: &mut Vec<u8>, n: u32| {
        for i in 0..n {
            match i % 2 {
                0 => s.seal_to(&[], Content::ApplicationData, wire).unwrap(),
                _ => s.seal_to(&ticket, Content::Handshake, wire).unwrap(),
            }
        }
    };
    let mut s = sealer();
    let mut wire = Vec::new();
    quiet(&mut s, &mut wire, max);
    s.seal_to(b"x", Content::ApplicationData, &mut wire)
        .unwrap();
    quiet(&mut s, &mut wire, max);
    s.seal_to(b"y", Content::ApplicationData, &mut wire)
        .unwrap();
    let mut u = unpacker(2, 0);
    let (data, _) = feed(&mut u, &wire, &[1000], 4 * MAX_RECORD, &mut no_key).unwrap();
    assert_eq!(data, b"xy");

    quiet(&mut s, &mut wire, max + 1);
    s.seal_to(b"z", Content::ApplicationData, &mut wire)
        .unwrap();
    let mut u = unpacker(3, 0);
    let e = feed(&mut u, &wire, &[1000], 4 * MAX_RECORD, &mut no_key).unwrap_err();
    assert_eq!(e, UnpackError::Record(RecordError::TooManyWithoutData));
    assert_eq!(e.alert(), Some(record::alert::UNEXPECTED_MESSAGE));
}

/// Key updates without data are capped on their own count (rustls:
/// `TooManyKeyUpdateRequests`): 32 of them and 32 empty records pass, one more fails.
#[test]
fn key_updates_without_data_are_capped() {
    let max = record::MAX_WITHOUT_DATA;
    let wire = |updates: u8| {
        let mut s = sealer();
        let mut wire = Vec::new();
        for _ in 0..max {
            s.seal_to(&[], Content::ApplicationData, &mut wire).unwrap();
        }
        for _ in 0..updates {
            s.seal_to(&KEY_UPDATE, Content::Handshake, &mut wire)
                .unwrap();
            s.rekey(&secrets(1), 0).unwrap();
        }
        s.seal_to(b"d", Content::ApplicationData, &mut wire)
            .unwrap();
        wire
    };
    let mut same_key = || Ok((0, secrets(1)));
    let mut u = unpacker(1, 0);
    let (data, _) = feed(&mut u, &wire(max), &[1000], 4 * MAX_RECORD, &mut same_key).unwrap();
    assert_eq!(data, b"d");
    let mut u = unpacker(1, 0);
    let e = feed(
        &mut u,
        &wire(max + 1),
        &[1000],
        4 * MAX_RECORD,
        &mut same_key,
    )
    .unwrap_err();
    assert_eq!(e, UnpackError::Record(RecordError::TooManyWithoutData));
}
