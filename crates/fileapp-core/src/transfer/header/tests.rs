//! Header codec tests: round trips, hostile bytes and the size limits.

use super::*;
use proptest::prelude::*;

fn arb_request() -> impl Strategy<Value = Request> {
    (
        "[^/]{1,60}",
        "[a-zA-Z0-9]{0,64}",
        any::<u64>(),
        proptest::option::of(any::<[u8; 32]>()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_filter("fits caps", |(f, ..)| f.len() <= MAX_FILE_NAME_LEN)
        .prop_map(
            |(file, requester, offset, expected_hash, if_match, owner_hashes)| {
                // Owner hashing goes with whole-file requests only.
                let whole = owner_hashes && expected_hash.is_none();
                Request {
                    file,
                    requester,
                    offset: if whole { 0 } else { offset },
                    expected_hash,
                    if_match,
                    owner_hashes: whole,
                }
            },
        )
}

fn arb_response() -> impl Strategy<Value = Response> {
    (
        0u8..5,
        ".{0,100}",
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u64>(),
    )
        .prop_map(|(s, message, size, hash, start)| {
            let status = Status::from_u8(s).unwrap();
            let message = truncate_utf8(&message, MAX_MESSAGE_LEN).to_string();
            let start = if status == Status::Ok {
                start.min(size)
            } else {
                start
            };
            Response {
                status,
                message,
                size,
                hash,
                start,
            }
        })
}

proptest! {
    #[test]
    fn request_round_trips(req in arb_request(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
        let mut bytes = req.encode().unwrap();
        prop_assert!(bytes.len() <= MAX_REQUEST_LEN);
        let len = bytes.len();
        // Every strict prefix is a valid prefix.
        for cut in 0..len {
            prop_assert_eq!(Request::decode(&bytes[..cut]), Ok(Decoded::NeedMore));
        }
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(Request::decode(&bytes), Ok(Decoded::Done(req, len)));
    }

    #[test]
    fn response_round_trips(resp in arb_response(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
        let mut bytes = resp.encode().unwrap();
        prop_assert!(bytes.len() <= MAX_RESPONSE_LEN);
        let len = bytes.len();
        for cut in 0..len {
            prop_assert_eq!(Response::decode(&bytes[..cut]), Ok(Decoded::NeedMore));
        }
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(Response::decode(&bytes), Ok(Decoded::Done(resp, len)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = Request::decode(&bytes);
        let _ = Response::decode(&bytes);
    }

    #[test]
    fn mutated_headers_never_panic(req in arb_request(), idx in any::<usize>(), val in any::<u8>()) {
        let mut bytes = req.encode().unwrap();
        let i = idx % bytes.len();
        bytes[i] = val;
        if let Ok(Decoded::Done(_, n)) = Request::decode(&bytes) {
            prop_assert!(n <= bytes.len());
        }
    }

    #[test]
    fn arbitrary_bytes_after_magic_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let mut q = REQUEST_MAGIC.to_vec();
        q.push(VERSION);
        q.extend_from_slice(&bytes);
        if let Ok(Decoded::Done(_, n)) = Request::decode(&q) {
            prop_assert!(n <= q.len());
        }
        let mut r = RESPONSE_MAGIC.to_vec();
        r.push(VERSION);
        r.extend_from_slice(&bytes);
        if let Ok(Decoded::Done(_, n)) = Response::decode(&r) {
            prop_assert!(n <= r.len());
        }
    }
}

#[test]
fn sizes_above_4_gib_frame_correctly() {
    let size = 5 * (1u64 << 30) + 12345;
    let resp = Response {
        status: Status::Ok,
        message: String::new(),
        size,
        hash: [7; 32],
        start: (1u64 << 32) + 1,
    };
    let bytes = resp.encode().unwrap();
    assert_eq!(
        Response::decode(&bytes),
        Ok(Decoded::Done(resp, bytes.len()))
    );
    let req = Request {
        file: "big.iso".into(),
        requester: "B".into(),
        offset: u64::MAX - 1,
        expected_hash: Some([1; 32]),
        if_match: false,
        owner_hashes: false,
    };
    let bytes = req.encode().unwrap();
    assert_eq!(Request::decode(&bytes), Ok(Decoded::Done(req, bytes.len())));
}

#[test]
fn hostile_lengths_rejected_early() {
    assert_eq!(
        Request::decode(b"GET / HTTP/1.1"),
        Err(HeaderError::BadMagic)
    );
    assert_eq!(Request::decode(b"FAX"), Ok(Decoded::NeedMore));
    assert_eq!(Request::decode(b"FAXZ"), Err(HeaderError::BadMagic));
    assert_eq!(Request::decode(b"FAXQ\x02"), Err(HeaderError::Version(2)));
    assert_eq!(
        Request::decode(b"FAXQ\x01\x80"),
        Err(HeaderError::Flags(0x80))
    );
    assert_eq!(
        Request::decode(b"FAXQ\x01\x00\x00"),
        Err(HeaderError::Length("file name", 0))
    );
    assert_eq!(
        Request::decode(b"FAXQ\x01\x00\x01a\xff"),
        Err(HeaderError::Length("requester name", 255))
    );
    assert_eq!(
        Request::decode(b"FAXQ\x01\x00\x01\xff"),
        Err(HeaderError::Utf8("file name"))
    );
    assert_eq!(
        Response::decode(b"FAXR\x01\x00\xff\xff"),
        Err(HeaderError::Length("message", 0xffff))
    );
    assert_eq!(
        Response::decode(b"FAXR\x01\x09"),
        Err(HeaderError::Status(9))
    );
    let mut bad = Response::refuse(Status::Ok, "").encode().unwrap();
    let n = bad.len();
    bad[n - 8..].copy_from_slice(&1u64.to_le_bytes());
    assert_eq!(
        Response::decode(&bad),
        Err(HeaderError::Offset { start: 1, size: 0 })
    );
}

#[test]
fn owner_hashing_is_for_whole_files_only() {
    let whole = Request {
        file: "a.bin".into(),
        requester: "B".into(),
        offset: 0,
        expected_hash: None,
        if_match: false,
        owner_hashes: true,
    };
    let bytes = whole.encode().unwrap();
    assert_eq!(bytes[5], FLAG_OWNER_HASHES);
    assert_eq!(
        Request::decode(&bytes),
        Ok(Decoded::Done(whole.clone(), bytes.len()))
    );
    // A resume cannot ask for it, in either direction of the codec.
    let resume = Request {
        offset: 10,
        expected_hash: Some([3; 32]),
        ..whole.clone()
    };
    assert_eq!(resume.encode(), Err(HeaderError::OwnerHashesPartial));
    let mut wire = Request {
        owner_hashes: false,
        ..resume
    }
    .encode()
    .unwrap();
    wire[5] |= FLAG_OWNER_HASHES;
    assert_eq!(Request::decode(&wire), Err(HeaderError::OwnerHashesPartial));
    let mut wire = Request { offset: 1, ..whole };
    wire.owner_hashes = false;
    let mut wire = wire.encode().unwrap();
    wire[5] |= FLAG_OWNER_HASHES;
    assert_eq!(Request::decode(&wire), Err(HeaderError::OwnerHashesPartial));
}

#[test]
fn encode_enforces_caps() {
    let long = "x".repeat(256);
    let req = Request {
        file: long,
        requester: String::new(),
        offset: 0,
        expected_hash: None,
        if_match: false,
        owner_hashes: false,
    };
    assert!(req.encode().is_err());
    let msg = "é".repeat(400);
    let r = Response::refuse(Status::Error, &msg);
    assert!(r.message.len() <= MAX_MESSAGE_LEN);
    assert!(r.encode().is_ok());
}
