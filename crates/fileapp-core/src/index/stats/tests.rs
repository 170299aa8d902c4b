//! What the index cannot send is counted and reported, never dropped silently.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use crate::index::{Config, Index, MAX_QUEUED_ERRORS, SendError};
use crate::proto::{EncodeError, FileEntry, Message, PackError};
use crate::store::{FileRow, OwnerRecord, OwnerRow};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// An `Offer` larger than any datagram.
fn oversized() -> Message {
    Message::Offer {
        req: 1,
        token: 2,
        files: (0..20)
            .map(|i| FileEntry::named(format!("{i:0>200}")))
            .collect(),
    }
}

fn index(records: Vec<OwnerRecord>) -> (Index, Instant) {
    let now = Instant::now();
    (Index::new(Config::default(), records, now, [9; 32]), now)
}

/// Everything the index queued to send, decoded.
fn sent(ix: &mut Index) -> Vec<Message> {
    std::iter::from_fn(|| ix.poll_transmit())
        .map(|(_, b)| Message::decode(&b).unwrap())
        .collect()
}

#[test]
fn a_message_that_cannot_be_encoded_is_counted_and_reported() {
    let (mut ix, _) = index(Vec::new());
    ix.send(addr(1), &oversized());
    assert!(ix.poll_transmit().is_none(), "nothing half-built leaves");
    assert_eq!(ix.stats().encode_errors, 1);
    assert_eq!(
        ix.poll_error(),
        Some(SendError::Encode {
            to: addr(1),
            source: EncodeError::TooLarge
        })
    );
    assert_eq!(ix.poll_error(), None);
}

#[test]
fn a_delta_that_cannot_be_packed_is_counted_and_reported_not_truncated() {
    // A stored file name no offer could carry (a damaged or hand-edited database): its
    // item fits no datagram.
    let row = OwnerRow {
        name: "big".into(),
        addr: addr(2),
        peer_ip: addr(2).ip(),
        tcp_port: 1,
        online: true,
        token: 5,
        instance: 1,
        ver: 1,
        key: None,
        reach: Default::default(),
    };
    let file = FileRow {
        name: "x".repeat(2000),
        ver: 2,
        size: 1,
        hash: [0; 32],
        files: 0,
    };
    let (mut ix, now) = index(vec![OwnerRecord {
        row,
        files: vec![file],
        record: None,
        record_ver: 0,
    }]);
    let reg = Message::Register {
        req: 1,
        name: "c".into(),
        instance: 1,
        tcp_port: 1,
        keep_offers: false,
        advertise: None,
        key: None,
        proof: None,
        evict: false,
    };
    ix.handle_datagram(now, addr(3), &reg.encode().unwrap());
    let Some(Message::Welcome { token, .. }) = sent(&mut ix).pop() else {
        panic!("welcomed")
    };
    let hb = Message::Heartbeat {
        req: 2,
        token,
        table_version: 0,
    }
    .encode()
    .unwrap();
    for round in 1..=2 {
        ix.handle_datagram(now, addr(3), &hb);
        let out = sent(&mut ix);
        assert!(
            matches!(out[..], [Message::Ack { req: 2, .. }]),
            "the heartbeat is answered, no partial table is pushed: {out:?}"
        );
        assert_eq!(ix.stats().pack_errors, round);
        match ix.poll_error() {
            Some(SendError::Pack {
                client,
                addr: a,
                from: 0,
                to,
                source: PackError::ItemTooLarge { index, .. },
            }) => {
                assert_eq!((client.as_str(), a, to), ("c", addr(3), ix.version()));
                assert_eq!(index, 1, "owner big, then its file");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn errors_beyond_the_queue_are_still_counted() {
    let (mut ix, _) = index(Vec::new());
    for _ in 0..MAX_QUEUED_ERRORS + 5 {
        ix.send(addr(1), &oversized());
    }
    assert_eq!(ix.stats().encode_errors, MAX_QUEUED_ERRORS as u64 + 5);
    assert_eq!(ix.stats().errors_unqueued, 5);
    assert_eq!(
        std::iter::from_fn(|| ix.poll_error()).count(),
        MAX_QUEUED_ERRORS
    );
}
