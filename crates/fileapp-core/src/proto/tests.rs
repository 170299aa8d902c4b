//! Codec tests: round trips, hostile bytes, table packing limits and name rules.

use super::*;
use proptest::prelude::*;

fn arb_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,64}"
}

fn arb_item() -> impl Strategy<Value = Item> {
    prop_oneof![
        (arb_name(), any::<[u8; 4]>(), any::<u16>(), any::<bool>()).prop_map(
            |(name, ip, tcp_port, online)| Item::Owner {
                name,
                ip: IpAddr::from(ip),
                tcp_port,
                online,
                key: Some([online as u8; 32]),
            }
        ),
        (
            arb_name(),
            "[^/\\x00-\\x1f]{1,100}",
            any::<u64>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(owner, file, size, hash)| Item::File {
                owner,
                file,
                size,
                hash,
                files: 0,
            }),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            arb_name(),
            any::<u64>(),
            any::<u16>(),
            any::<bool>(),
            any::<Option<[u8; 16]>>()
        )
            .prop_map(|(req, name, instance, tcp_port, keep_offers, adv)| {
                Message::Register {
                    req,
                    name,
                    instance,
                    tcp_port,
                    keep_offers,
                    advertise: adv.map(IpAddr::from),
                    evict: keep_offers,
                    key: adv.map(|_| [7; 32]),
                    proof: adv.map(|a| Proof {
                        nonce: a,
                        sig: vec![1; 64],
                    }),
                }
            }),
        (
            any::<u64>(),
            any::<u128>(),
            prop::collection::vec("[a-z]{1,20}", 0..10)
        )
            .prop_map(|(req, token, files)| Message::Offer {
                req,
                token,
                files: files.into_iter().map(FileEntry::named).collect()
            }),
        (any::<u64>(), any::<u128>()).prop_map(|(req, token)| Message::Dereg { req, token }),
        (any::<u64>(), any::<u128>(), any::<u64>()).prop_map(|(req, token, v)| {
            Message::Heartbeat {
                req,
                token,
                table_version: v,
            }
        }),
        (any::<u128>(), any::<u64>(), any::<u16>())
            .prop_map(|(token, to, part)| Message::TableAck { token, to, part }),
        (any::<u64>(), any::<u128>(), any::<u32>(), any::<u64>()).prop_map(
            |(req, token, heartbeat_ms, version)| Message::Welcome {
                req,
                token,
                heartbeat_ms,
                version,
            }
        ),
        any::<u64>().prop_map(|req| Message::Rejected {
            req,
            reason: Reject::NameInUse
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(req, version)| Message::Ack { req, version }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u16>(),
            any::<u16>(),
            prop::collection::vec(arb_item(), 0..3)
        )
            .prop_map(|(from, to, part, parts, items)| Message::Table {
                from,
                to,
                part,
                parts,
                items
            }),
    ]
}

proptest! {
    #[test]
    fn round_trip(msg in arb_message()) {
        let bytes = msg.encode().unwrap();
        prop_assert!(bytes.len() <= MAX_DATAGRAM);
        prop_assert_eq!(Message::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn valid_prefix_with_garbage_never_panics(tail in prop::collection::vec(any::<u8>(), 0..1300)) {
        let mut bytes = vec![b'F', b'A', VERSION];
        bytes.extend(tail);
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn packing_respects_datagram_limit(items in prop::collection::vec(arb_item(), 0..200)) {
        let parts = pack_table(3, 9, items.clone()).unwrap();
        let mut seen = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            prop_assert!(p.len() <= MAX_DATAGRAM);
            match Message::decode(p).unwrap() {
                Message::Table { from: 3, to: 9, part, parts: n, items } => {
                    prop_assert_eq!(part as usize, i);
                    prop_assert_eq!(n as usize, parts.len());
                    seen.extend(items);
                }
                other => prop_assert!(false, "unexpected {other:?}"),
            }
        }
        prop_assert_eq!(seen, items);
    }
}

#[test]
fn rejects_wrong_magic_version_and_trailing_bytes() {
    let mut ok = Message::Ack { req: 7, version: 3 }.encode().unwrap();
    assert_eq!(
        Message::decode(&ok),
        Ok(Message::Ack { req: 7, version: 3 })
    );
    let mut bad = ok.clone();
    bad[0] = b'X';
    assert_eq!(Message::decode(&bad), Err(DecodeError::BadMagic));
    bad = ok.clone();
    bad[2] = 99;
    assert_eq!(Message::decode(&bad), Err(DecodeError::Version(99)));
    ok.push(0);
    assert_eq!(Message::decode(&ok), Err(DecodeError::Malformed));
    assert_eq!(Message::decode(&[0; 1300]), Err(DecodeError::TooLong));
    assert_eq!(Message::decode(b"FA"), Err(DecodeError::TooShort));
}

#[test]
fn three_hundred_long_names_pack_into_limit() {
    let items: Vec<Item> = (0..300)
        .map(|i| Item::File {
            owner: "B".into(),
            file: format!("{i:0>100}"),
            size: u64::MAX,
            hash: [0xff; 32],
            files: 0,
        })
        .collect();
    let parts = pack_table(0, 1, items).unwrap();
    assert!(parts.len() >= 35, "300*~150 bytes need many parts");
    assert!(parts.iter().all(|p| p.len() <= MAX_DATAGRAM));
}

/// An item of about `len` encoded bytes.
fn file_of(i: usize, len: usize) -> Item {
    Item::File {
        owner: "B".into(),
        file: format!("{i:0>len$}"),
        size: 0,
        hash: [0; 32],
        files: 0,
    }
}

#[test]
fn a_table_too_big_for_the_part_counter_is_refused_not_truncated() {
    // Items over half a part each: one per part, so one more item than the part counter
    // counts needs one part too many.
    let half = (MAX_DATAGRAM - TABLE_OVERHEAD) / 2 + 1;
    assert!(item_size(&file_of(0, half)) > half);
    let items: Vec<Item> = (0..=MAX_TABLE_PARTS).map(|i| file_of(i, half)).collect();
    assert_eq!(
        pack_table(0, 1, items),
        Err(PackError::TooManyParts {
            parts: MAX_TABLE_PARTS + 1
        })
    );
}

#[test]
fn an_item_larger_than_a_datagram_is_refused() {
    let items = vec![file_of(0, 10), file_of(1, MAX_DATAGRAM)];
    assert!(matches!(
        pack_table(0, 1, items),
        Err(PackError::ItemTooLarge { index: 1, size }) if size > MAX_DATAGRAM
    ));
}

#[test]
fn a_message_too_large_for_a_datagram_does_not_encode() {
    let files = (0..20)
        .map(|i| FileEntry::named(format!("{i:0>200}")))
        .collect();
    let msg = Message::Offer {
        req: 1,
        token: 2,
        files,
    };
    assert_eq!(msg.encode(), Err(EncodeError::TooLarge));
    let mut buf = [0u8; MAX_DATAGRAM];
    assert_eq!(msg.encode_into(&mut buf), Err(EncodeError::TooLarge));
}

#[test]
fn name_rules() {
    assert!(valid_client_name("B"));
    assert!(!valid_client_name(""));
    assert!(!valid_client_name("a b"));
    assert!(!valid_client_name(&"x".repeat(65)));
    assert!(valid_file_name("foo.txt"));
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "../etc",
        "/etc/passwd",
        "a\\b",
        "a\nb",
        "a\0b",
    ] {
        assert!(!valid_file_name(bad), "{bad:?}");
    }
}
