use proptest::prelude::*;
use rustls::ConnectionTrafficSecrets;
use rustls::crypto::cipher::{AeadKey, Iv};

use super::*;

fn secrets(kind: u8, seed: u8) -> ConnectionTrafficSecrets {
    let key = AeadKey::from([seed; 32]);
    let iv = Iv::from([seed.wrapping_add(1); 12]);
    match kind {
        0 => ConnectionTrafficSecrets::Aes256Gcm { key, iv },
        _ => ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv },
    }
}

fn pair(kind: u8) -> (Sealer, Opener) {
    (
        Sealer::new(&secrets(kind, 7), 0, u64::MAX).unwrap(),
        Opener::new(&secrets(kind, 7), 0).unwrap(),
    )
}

/// Opens every record in `wire`, returning (content, payload) of each.
fn open_all(opener: &mut Opener, wire: &mut [u8]) -> Result<Vec<(Content, Vec<u8>)>, RecordError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let n = Opener::record_len(&wire[at..])?.expect("whole record");
        let o = opener.open_in_place(&mut wire[at..at + n])?;
        out.push((o.content, wire[at..at + n][o.payload].to_vec()));
        at += n;
    }
    Ok(out)
}

#[test]
fn records_round_trip_and_split_at_the_maximum_payload() {
    for kind in [0, 1] {
        let (mut s, mut o) = pair(kind);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        s.seal_to(&data, Content::ApplicationData, &mut wire)
            .unwrap();
        assert_eq!(wire.len(), sealed_len(data.len()));
        let got = open_all(&mut o, &mut wire).unwrap();
        assert_eq!(got.len(), data.len().div_ceil(MAX_PAYLOAD));
        assert!(
            got.iter()
                .all(|(c, p)| *c == Content::ApplicationData && p.len() <= MAX_PAYLOAD)
        );
        assert_eq!(got.concat_payloads(), data);
    }
}

trait Concat {
    fn concat_payloads(&self) -> Vec<u8>;
}
impl Concat for Vec<(Content, Vec<u8>)> {
    fn concat_payloads(&self) -> Vec<u8> {
        self.iter().flat_map(|(_, p)| p.clone()).collect()
    }
}

#[test]
fn alerts_and_key_updates_are_typed() {
    let (mut s, mut o) = pair(0);
    let mut wire = Vec::new();
    s.seal_to(&CLOSE_NOTIFY, Content::Alert, &mut wire).unwrap();
    s.seal_to(&KEY_UPDATE, Content::Handshake, &mut wire)
        .unwrap();
    let got = open_all(&mut o, &mut wire).unwrap();
    assert_eq!(got[0], (Content::Alert, CLOSE_NOTIFY.to_vec()));
    assert_eq!(alert(&got[0].1), Ok(Control::Closed));
    assert_eq!(got[1], (Content::Handshake, KEY_UPDATE.to_vec()));
    assert_eq!(
        handshake(&got[1].1, Side::Client),
        Ok(Control::KeyUpdate { requested: false })
    );
}

#[test]
fn control_payloads_are_parsed_strictly() {
    assert_eq!(alert(&[2, 40]), Err(RecordError::Alert(40)));
    assert_eq!(alert(&[1]), Err(RecordError::BadHandshake));
    let c = Side::Client;
    assert_eq!(
        handshake(&[24, 0, 0, 1, 1], c),
        Ok(Control::KeyUpdate { requested: true })
    );
    // A NewSessionTicket (type 4) is ignored by a client.
    assert_eq!(handshake(&[4, 0, 0, 2, 9, 9], c), Ok(Control::Nothing));
    assert_eq!(
        handshake(&[24, 0, 0, 1, 2], c),
        Err(RecordError::BadHandshake)
    );
    assert_eq!(
        handshake(&[24, 0, 0, 2, 0], c),
        Err(RecordError::BadHandshake)
    ); // short
    assert_eq!(handshake(&[24, 0], c), Err(RecordError::BadHandshake));
    assert_eq!(
        handshake(&[1, 0, 0, 0], c), // ClientHello
        Err(RecordError::UnexpectedMessage(1))
    );
    // A key update must end its record.
    assert_eq!(
        handshake(&[24, 0, 0, 1, 0, 4, 0, 0, 0], c),
        Err(RecordError::BadHandshake)
    );
    // Coalesced tickets are fine for a client.
    assert_eq!(
        handshake(&[4, 0, 0, 1, 7, 4, 0, 0, 0, 24, 0, 0, 1, 0], c),
        Ok(Control::KeyUpdate { requested: false })
    );
}

/// A server never receives tickets: one is an unexpected_message, alone or coalesced.
#[test]
fn a_ticket_is_refused_by_a_server() {
    let s = Side::Server;
    let err = RecordError::UnexpectedMessage(4);
    let e = Err(err.clone());
    assert_eq!(handshake(&[4, 0, 0, 2, 9, 9], s), e);
    assert_eq!(
        handshake(&[24, 0, 0, 1, 0], s),
        Ok(Control::KeyUpdate { requested: false })
    );
    assert_eq!(err.alert(), Some(alert::UNEXPECTED_MESSAGE));
}

/// rustls' limits: 32 empty records (or tickets) and 32 key updates in a row without
/// data are accepted, the 33rd of a kind is not, and data starts both counts again.
#[test]
fn records_without_data_are_capped() {
    let ku = Control::KeyUpdate { requested: false };
    let mut q = Quiet::default();
    for _ in 0..2 {
        for _ in 0..MAX_WITHOUT_DATA {
            q.record(0).unwrap();
            q.handshake(ku).unwrap();
        }
        q.record(1).unwrap();
    }
    for _ in 0..MAX_WITHOUT_DATA {
        q.handshake(Control::Nothing).unwrap();
    }
    assert_eq!(q.record(0), Err(RecordError::TooManyWithoutData));
    for _ in 0..MAX_WITHOUT_DATA {
        q.key_update().unwrap();
    }
    assert_eq!(q.handshake(ku), Err(RecordError::TooManyWithoutData));
    assert_eq!(MAX_WITHOUT_DATA, 32);
}

#[test]
fn errors_map_to_their_alerts() {
    assert_eq!(RecordError::BadRecordMac.alert(), Some(20));
    assert_eq!(RecordError::TooLong(20000).alert(), Some(22));
    assert_eq!(RecordError::BadHeader.alert(), Some(50));
    assert_eq!(RecordError::NoContentType.alert(), Some(10));
    assert_eq!(RecordError::TooManyWithoutData.alert(), Some(10));
    assert_eq!(RecordError::Alert(40).alert(), None);
    assert_eq!(fatal_alert(20), [2, 20]);
}

#[test]
fn any_changed_byte_fails_authentication() {
    let (mut s, _) = pair(1);
    let mut wire = Vec::new();
    s.seal_to(b"secret file contents", Content::ApplicationData, &mut wire)
        .unwrap();
    for i in 0..wire.len() {
        let mut bad = wire.clone();
        bad[i] ^= 0x40;
        let (_, mut o) = pair(1);
        let r = Opener::record_len(&bad).and_then(|n| match n {
            Some(n) if n == bad.len() => o.open_in_place(&mut bad).map(|_| ()),
            _ => Err(RecordError::BadHeader),
        });
        assert!(r.is_err(), "byte {i} changed but the record opened");
    }
}

#[test]
fn replayed_or_reordered_records_fail() {
    let (mut s, mut o) = pair(0);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    s.seal_to(b"first", Content::ApplicationData, &mut a)
        .unwrap();
    s.seal_to(b"second", Content::ApplicationData, &mut b)
        .unwrap();
    // Out of order: the second record first. (Any failure ends the connection.)
    assert_eq!(
        o.open_in_place(&mut b.clone()),
        Err(RecordError::BadRecordMac)
    );
    let (_, mut o) = pair(0);
    assert!(o.open_in_place(&mut a.clone()).is_ok());
    // Replayed: the first record again.
    assert_eq!(
        o.open_in_place(&mut a.clone()),
        Err(RecordError::BadRecordMac)
    );
    let (_, mut o) = pair(0);
    assert!(o.open_in_place(&mut a).is_ok());
    assert!(o.open_in_place(&mut b).is_ok());
}

#[test]
fn headers_are_checked_before_decrypting() {
    assert_eq!(Opener::record_len(&[23, 3, 3, 0]), Ok(None));
    assert_eq!(Opener::record_len(&[23, 3, 3, 0, 17]), Ok(None));
    assert_eq!(
        Opener::record_len(&[22, 3, 3, 0, 17]),
        Err(RecordError::BadHeader)
    );
    assert_eq!(
        Opener::record_len(&[23, 3, 1, 0, 17]),
        Err(RecordError::BadHeader)
    );
    assert_eq!(
        Opener::record_len(&[23, 3, 3, 0, 16]),
        Err(RecordError::BadHeader)
    );
    let too_long = (MAX_CIPHERTEXT + 1) as u16;
    let [h, l] = too_long.to_be_bytes();
    assert_eq!(
        Opener::record_len(&[23, 3, 3, h, l]),
        Err(RecordError::TooLong(MAX_CIPHERTEXT + 1))
    );
    // A plaintext alert (a peer that failed before encrypting) names its description.
    assert_eq!(
        Opener::record_len(&[21, 3, 3, 0, 2, 2, 42]),
        Err(RecordError::Alert(42))
    );
}

#[test]
fn padding_is_stripped_and_an_all_zero_record_is_refused() {
    // Seal by hand: payload | type | zero padding, as another implementation may.
    let sealed = |inner: &[u8]| {
        let mut s = Sealer::new(&secrets(0, 3), 0, u64::MAX).unwrap();
        let mut rec = vec![0u8; inner.len() + HEADER_LEN + TAG_LEN];
        rec[HEADER_LEN..HEADER_LEN + inner.len()].copy_from_slice(inner);
        let hdr = header(inner.len() + TAG_LEN);
        rec[..HEADER_LEN].copy_from_slice(&hdr);
        let nonce = s.cipher.next_nonce().unwrap();
        let tag = s
            .cipher
            .key
            .seal_in_place_separate_tag(
                nonce,
                Aad::from(hdr),
                &mut rec[HEADER_LEN..HEADER_LEN + inner.len()],
            )
            .unwrap();
        let end = rec.len() - TAG_LEN;
        rec[end..].copy_from_slice(tag.as_ref());
        rec
    };
    let mut o = Opener::new(&secrets(0, 3), 0).unwrap();
    let mut rec = sealed(b"abc\x17\0\0\0\0");
    let got = o.open_in_place(&mut rec).unwrap();
    assert_eq!(got.content, Content::ApplicationData);
    assert_eq!(&rec[got.payload], b"abc");
    let mut o = Opener::new(&secrets(0, 3), 0).unwrap();
    assert_eq!(
        o.open_in_place(&mut sealed(&[0, 0, 0])),
        Err(RecordError::NoContentType)
    );
    let mut o = Opener::new(&secrets(0, 3), 0).unwrap();
    assert_eq!(
        o.open_in_place(&mut sealed(&[1, 2, 20])),
        Err(RecordError::UnexpectedType(20))
    );
}

#[test]
fn key_update_is_due_at_the_limit_and_rekeying_changes_the_key() {
    let mut s = Sealer::new(&secrets(0, 1), 0, 3).unwrap();
    let mut o = Opener::new(&secrets(0, 1), 0).unwrap();
    assert!(!s.wants_key_update(3));
    assert!(s.wants_key_update(4));
    let mut wire = Vec::new();
    s.seal_to(&[1; 3 * MAX_PAYLOAD], Content::ApplicationData, &mut wire)
        .unwrap();
    assert!(s.wants_key_update(1));
    s.rekey(&secrets(0, 2), 0).unwrap();
    assert!(!s.wants_key_update(1));
    let mut next = Vec::new();
    s.seal_to(b"after", Content::ApplicationData, &mut next)
        .unwrap();
    open_all(&mut o, &mut wire).unwrap();
    // The old key cannot open it; the new one can.
    assert_eq!(
        o.open_in_place(&mut next.clone()),
        Err(RecordError::BadRecordMac)
    );
    let mut o = Opener::new(&secrets(0, 2), 0).unwrap();
    assert!(o.open_in_place(&mut next).is_ok());
}

#[test]
fn oversized_payloads_are_refused_by_the_in_place_sealer() {
    let (mut s, _) = pair(0);
    let mut rec = vec![0u8; MAX_PAYLOAD + 1 + OVERHEAD];
    assert_eq!(
        s.seal_in_place(&mut rec, MAX_PAYLOAD + 1, Content::ApplicationData),
        Err(RecordError::PayloadTooLong)
    );
    let mut rec = vec![0u8; 10];
    assert_eq!(
        s.seal_in_place(&mut rec, 5, Content::ApplicationData),
        Err(RecordError::PayloadTooLong)
    );
}

proptest! {
    #[test]
    fn any_data_in_any_pieces_round_trips(
        data in proptest::collection::vec(any::<u8>(), 0..40_000),
        cuts in proptest::collection::vec(0usize..40_000, 0..6),
        kind in 0u8..2,
    ) {
        let (mut s, mut o) = pair(kind);
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < data.len()).collect();
        cuts.sort_unstable();
        let mut wire = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            if c > prev {
                s.seal_to(&data[prev..c], Content::ApplicationData, &mut wire).unwrap();
                prev = c;
            }
        }
        prop_assert_eq!(open_all(&mut o, &mut wire).unwrap().concat_payloads(), data);
    }

    #[test]
    fn garbage_never_panics_the_opener(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (_, mut o) = pair(0);
        let mut b = bytes;
        if let Ok(Some(n)) = Opener::record_len(&b) {
            let _ = o.open_in_place(&mut b[..n]);
        }
        let _ = alert(&b);
        let _ = handshake(&b, Side::Client);
        let _ = handshake(&b, Side::Server);
    }
}

/// Handshake messages split over records are joined; a key update completed so still
/// ends its record; nothing else may come between the fragments.
#[test]
fn split_handshake_messages_are_joined() {
    let c = Side::Client;
    let mut j = Joiner::default();
    // A ticket in three pieces, the last one followed by a key update in the same record.
    assert_eq!(j.record(&[4, 0], c), Ok(Control::Nothing));
    assert!(j.pending());
    assert_eq!(
        j.check(Content::ApplicationData),
        Err(RecordError::Interleaved)
    );
    assert_eq!(j.check(Content::Handshake), Ok(()));
    assert_eq!(j.record(&[0, 3, 1], c), Ok(Control::Nothing));
    assert_eq!(
        j.record(&[2, 3, 24, 0, 0, 1, 1], c),
        Ok(Control::KeyUpdate { requested: true })
    );
    assert!(!j.pending());
    // A key update split over two records.
    assert_eq!(j.record(&[24, 0, 0], c), Ok(Control::Nothing));
    assert_eq!(
        j.record(&[1, 0], c),
        Ok(Control::KeyUpdate { requested: false })
    );
    // A key update may not be followed by the start of another message.
    let mut j = Joiner::default();
    assert_eq!(
        j.record(&[24, 0, 0, 1, 0, 4], c),
        Err(RecordError::BadHandshake)
    );
    // A server still refuses a ticket, whole or split.
    let mut j = Joiner::default();
    assert_eq!(
        j.record(&[4, 0, 0, 2, 9], Side::Server),
        Ok(Control::Nothing)
    );
    assert_eq!(
        j.record(&[9], Side::Server),
        Err(RecordError::UnexpectedMessage(4))
    );
    // A message longer than rustls joins is refused from its header on.
    let mut j = Joiner::default();
    assert_eq!(j.record(&[4, 1, 0, 0], c), Err(RecordError::BadHandshake));
    assert_eq!(
        RecordError::Interleaved.alert(),
        Some(alert::UNEXPECTED_MESSAGE)
    );
}
