//! Replays the fuzz targets' committed inputs through the same checks the fuzzers run
//! (`fileapp_core::fuzzing`): every file under `fuzz/corpus/<target>/` (the seed
//! corpus) and `fuzz/regressions/<target>/` (inputs that once found a bug). A finding
//! becomes a regression test by dropping its input into `fuzz/regressions/<target>/`.
//!
//! The crate's dev-dependency on itself turns on the `fuzzing` feature, so this runs in
//! the plain `cargo test`. `cargo test -p fileapp-core --test fuzz_corpus -- --ignored
//! write_seed_corpus` writes the seed corpus anew (see `fuzz/README.md`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use fileapp_core::fuzzing::{self, FUZZ_SEED, FUZZ_TOKEN};
use fileapp_core::proto::{self, FileEntry, Item, MAX_DATAGRAM, Message, Proof, Reject};
use fileapp_core::transfer::header::{Request, Response, Status};
use fileapp_core::transfer::record::{CLOSE_NOTIFY, KEY_UPDATE};

type Check = fn(&[u8]);

const TARGETS: &[(&str, Check)] = &[
    ("datagram", fuzzing::datagram),
    ("request_header", fuzzing::request_header),
    ("response_header", fuzzing::response_header),
    ("record", fuzzing::record),
    ("cert", fuzzing::cert),
    ("client", fuzzing::client),
    ("unpack", fuzzing::unpack),
    ("channel", fuzzing::channel),
    ("tree_stream", fuzzing::tree_stream),
    ("relay_ticket", fuzzing::relay_ticket),
    ("punch", fuzzing::punch),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs `check` on every corpus and regression file of `target`; fails naming each
/// input that panics.
fn replay(target: &str) {
    let check = TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, c)| *c)
        .expect("a known target");
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "no seed corpus for {target} in fuzz/corpus/{target}"
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).expect("readable input");
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: inputs that fail: {failed:#?}");
}

#[test]
fn datagram() {
    replay("datagram");
}

#[test]
fn request_header() {
    replay("request_header");
}

#[test]
fn response_header() {
    replay("response_header");
}

#[test]
fn record() {
    replay("record");
}

#[test]
fn cert() {
    replay("cert");
}

#[test]
fn client() {
    replay("client");
}

#[test]
fn channel() {
    replay("channel");
}

/// Its seeds are written by hand (the script is a few bytes per record); see
/// `fuzzing::unpack` for the layout.
#[test]
fn unpack() {
    replay("unpack");
}

/// Its seeds are written by `write_seed_corpus` (`tree_seeds`).
#[test]
fn tree_stream() {
    replay("tree_stream");
}

/// Its seeds are written by `write_seed_corpus` (`relay_seeds`).
#[test]
fn relay_ticket() {
    replay("relay_ticket");
}

/// Its seeds are written by `write_seed_corpus` (`punch_seeds`).
#[test]
fn punch() {
    replay("punch");
}

// ---- the seed corpus -------------------------------------------------------------------

/// Writes the seed corpus of every target into `fuzz/corpus/` (replacing files of the
/// same name). Ignored: run it by hand when a codec changes, then commit the result.
#[test]
#[ignore]
fn write_seed_corpus() {
    for (target, seeds) in [
        ("datagram", datagram_seeds()),
        ("request_header", request_seeds()),
        ("response_header", response_seeds()),
        ("record", record_seeds()),
        ("cert", cert_seeds()),
        ("client", client_seeds()),
        ("channel", channel_seeds()),
        ("tree_stream", tree_seeds()),
        ("relay_ticket", relay_seeds()),
        ("punch", punch_seeds()),
    ] {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

type Seeds = Vec<(String, Vec<u8>)>;

/// A ticket sealed by the fuzz server, alone and as raw hellos; scripts of sealed hellos
/// that pair, wait out the pair timeout, reuse a ticket, come expired, fill the relay.
fn relay_seeds() -> Seeds {
    use fileapp_core::reach::relay::hello_bytes;
    use fileapp_core::reach::ticket::{Role, Ticket};
    let server = fuzzing::fuzz_server();
    let sealed = Ticket {
        id: [5; 16],
        role: Role::Owner,
        expires_ms: fuzzing::FUZZ_NOW_MS + 30_000,
    }
    .seal(&server);
    let raw = |conn: u8, bytes: &[u8]| {
        let mut v = vec![conn << 2];
        v.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        v.extend_from_slice(bytes);
        v
    };
    let hello = |conn: u8, id: u8, role: u8, life: u8| vec![(conn << 2) | 1, id, role, life];
    let wait = |steps: u8| vec![(steps << 2) | 2];
    let mut bad_magic = hello_bytes(&sealed);
    bad_magic[0] = b'X';
    let mut flipped = hello_bytes(&sealed);
    flipped[50] ^= 1;
    named(vec![
        ("ticket", sealed.to_vec()),
        ("raw-hello", raw(0, &hello_bytes(&sealed))),
        ("raw-bad-magic", raw(0, &bad_magic)),
        ("raw-flipped", raw(0, &flipped)),
        ("raw-short", raw(0, &hello_bytes(&sealed)[..60])),
        ("pair", [hello(0, 5, 0, 200), hello(1, 5, 1, 200)].concat()),
        (
            "pair-end",
            [hello(0, 5, 0, 200), hello(1, 5, 1, 200), vec![(1 << 2) | 3]].concat(),
        ),
        (
            "timeout",
            [hello(0, 5, 0, 200), wait(10), hello(1, 5, 1, 200)].concat(),
        ),
        (
            "leave",
            [hello(2, 5, 0, 200), vec![(2 << 2) | 3], hello(1, 5, 1, 200)].concat(),
        ),
        ("reuse", [hello(0, 5, 0, 200), hello(1, 5, 0, 200)].concat()),
        (
            "expired",
            [hello(0, 5, 0, 0), hello(1, 5, 1, 1), wait(1)].concat(),
        ),
        (
            "full",
            (0..6)
                .flat_map(|i| hello(i, i, 0, 200))
                .collect::<Vec<u8>>(),
        ),
        (
            "forget",
            [hello(0, 5, 0, 4), wait(30), hello(1, 5, 0, 4)].concat(),
        ),
        ("empty", vec![]),
    ])
}

/// Steps of the channel script: a selector byte and a 16-bit-length piece.
fn channel_seeds() -> Seeds {
    let step = |sel: u8, piece: &[u8]| {
        let mut v = vec![sel];
        v.extend_from_slice(&(piece.len() as u16).to_le_bytes());
        v.extend_from_slice(piece);
        v
    };
    let mut hello = vec![0u8; fileapp_core::channel::HELLO_LEN];
    hello[0] = fileapp_core::channel::TYPE_HELLO;
    hello[5..37].copy_from_slice(&[9; 32]);
    let mut data = vec![fileapp_core::channel::TYPE_DATA];
    data.extend_from_slice(&[0; 4 + 8 + 20]);
    let mut reply = vec![fileapp_core::channel::TYPE_HELLO_REPLY];
    reply.extend_from_slice(&[0; 104]);
    let mut cookie = vec![fileapp_core::channel::TYPE_COOKIE];
    cookie.extend_from_slice(&[0; 20]);
    named(vec![
        ("hello-from-a-stranger", step(2, &hello)),
        ("hello-from-the-session", step(0, &hello)),
        ("data-no-session", [step(0, &data), step(2, &data)].concat()),
        (
            "to-the-client",
            [step(1, &data), step(1, &reply), step(1, &cookie)].concat(),
        ),
        (
            "plaintext-message",
            step(0, &enc(&Message::Dereg { req: 1, token: 9 })),
        ),
        ("empty", step(0, &[])),
    ])
}

fn named(list: Vec<(&str, Vec<u8>)>) -> Seeds {
    list.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
}

fn enc(m: &Message) -> Vec<u8> {
    m.encode().expect("seed fits")
}

fn register(key: bool, proof: bool, advertise: Option<IpAddr>) -> Message {
    Message::Register {
        req: 77,
        name: "carol".into(),
        instance: u64::MAX,
        tcp_port: 4242,
        keep_offers: true,
        advertise,
        key: key.then_some([9; 32]),
        proof: proof.then(|| Proof {
            nonce: [5; 16],
            sig: vec![6; 64],
        }),
        evict: proof,
    }
}

fn datagram_seeds() -> Seeds {
    let files = |n: usize| -> Vec<FileEntry> {
        (0..n)
            .map(|i| FileEntry {
                name: format!("file-{i}.bin"),
                size: i as u64 * 1000,
                hash: [i as u8; 32],
                files: 0,
            })
            .collect()
    };
    let mut v = vec![
        ("register", enc(&register(false, false, None))),
        (
            "register-key-proof-v4",
            enc(&register(
                true,
                true,
                Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            )),
        ),
        (
            "register-key-v6",
            enc(&register(
                true,
                false,
                Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            )),
        ),
        (
            "offer-empty",
            enc(&Message::Offer {
                req: 1,
                token: 2,
                files: vec![],
            }),
        ),
        (
            "offer-three",
            enc(&Message::Offer {
                req: 1,
                token: u128::MAX,
                files: files(3),
            }),
        ),
        (
            "dereg",
            enc(&Message::Dereg {
                req: 3,
                token: 1 << 100,
            }),
        ),
        (
            "heartbeat",
            enc(&Message::Heartbeat {
                req: 4,
                token: 5,
                table_version: 6,
            }),
        ),
        (
            "table-ack",
            enc(&Message::TableAck {
                token: 5,
                to: 9,
                part: 2,
            }),
        ),
        (
            "welcome",
            enc(&Message::Welcome {
                req: 1,
                token: FUZZ_TOKEN,
                heartbeat_ms: 1000,
                version: 3,
            }),
        ),
        ("ack", enc(&Message::Ack { req: 2, version: 4 })),
        (
            "challenge",
            enc(&Message::Challenge {
                req: 1,
                nonce: [0xaa; 16],
            }),
        ),
    ];
    let reasons = [
        Reject::NameInUse,
        Reject::InvalidName,
        Reject::NotRegistered,
        Reject::LimitExceeded,
        Reject::RateLimited,
        Reject::BadProof,
    ];
    let rejected: Vec<(String, Vec<u8>)> = reasons
        .iter()
        .map(|&reason| {
            (
                format!("rejected-{reason:?}"),
                enc(&Message::Rejected { req: 9, reason }),
            )
        })
        .collect();
    let table = proto::pack_table(0, 3, fuzzing::fuzz_table()).unwrap();
    v.push(("table-snapshot", table[0].clone()));
    // A big offer: one datagram's worth.
    let mut big = files(20);
    while (Message::Offer {
        req: 1,
        token: 1,
        files: big.clone(),
    })
    .encode()
    .is_err()
    {
        big.pop();
    }
    v.push((
        "offer-full",
        enc(&Message::Offer {
            req: 1,
            token: 1,
            files: big,
        }),
    ));
    // Edge cases around the framing.
    let hb = enc(&Message::Heartbeat {
        req: 4,
        token: 5,
        table_version: 6,
    });
    let mut trailing = hb.clone();
    trailing.push(0);
    let mut version2 = hb.clone();
    version2[2] = 2;
    let mut overlong = vec![b'F', b'A', 1, 0x89, 0x80, 0x00];
    overlong.extend_from_slice(&[0x80, 0x00, 0, 0]);
    v.extend([
        ("empty", vec![]),
        ("magic-only", b"FA\x01".to_vec()),
        ("bad-magic", b"XA\x01\x00".to_vec()),
        ("version-2", version2),
        ("trailing-byte", trailing),
        ("truncated", hb[..hb.len() - 1].to_vec()),
        ("too-long", vec![b'F'; MAX_DATAGRAM + 1]),
        ("unknown-variant", b"FA\x01\x0b".to_vec()),
        ("overlong-varint", overlong),
    ]);
    let mut out = named(v);
    out.extend(rejected);
    out
}

fn request(file: &str, who: &str, offset: u64, hash: Option<[u8; 32]>, flags: u8) -> Request {
    Request {
        file: file.into(),
        requester: who.into(),
        offset,
        expected_hash: hash,
        if_match: flags & 1 != 0,
        owner_hashes: flags & 2 != 0,
    }
}

fn request_seeds() -> Seeds {
    let ok = |r: Request| r.encode().expect("seed encodes");
    let whole = ok(request("a.txt", "bob", 0, None, 0));
    let mut trailing = whole.clone();
    trailing.extend_from_slice(b"extra");
    let with_flag = |i: usize, b: u8| {
        let mut w = whole.clone();
        w[i] = b;
        w
    };
    named(vec![
        ("whole", whole.clone()),
        ("owner-hashes", ok(request("a.txt", "bob", 0, None, 2))),
        (
            "resume",
            ok(request("movie.mkv", "bob", 1 << 33, Some([4; 32]), 0)),
        ),
        (
            "if-match",
            ok(request("movie.mkv", "", 0, Some([4; 32]), 1)),
        ),
        ("anonymous", ok(request("x", "", u64::MAX, None, 0))),
        (
            "longest",
            ok(request(
                &"f".repeat(255),
                &"r".repeat(64),
                u64::MAX,
                Some([0xff; 32]),
                1,
            )),
        ),
        ("utf8", ok(request("résumé-ñ-日本.txt", "zoë", 7, None, 0))),
        ("trailing-data", trailing),
        ("magic-only", b"FAXQ".to_vec()),
        ("prefix", whole[..whole.len() - 3].to_vec()),
        ("bad-magic", b"GET / HTTP/1.1\r\n".to_vec()),
        ("version-2", with_flag(4, 2)),
        ("unknown-flag", with_flag(5, 0x80)),
        ("empty-name", b"FAXQ\x01\x00\x00".to_vec()),
        ("requester-too-long", b"FAXQ\x01\x00\x01a\x41".to_vec()),
        ("bad-utf8", b"FAXQ\x01\x00\x02\xc3\x28\x00".to_vec()),
        ("owner-hashes-resume", {
            let mut w = ok(request("a.txt", "bob", 5, None, 0));
            w[5] |= 0x04;
            w
        }),
        ("response-magic", b"FAXR\x01\x00".to_vec()),
    ])
}

fn response(status: Status, message: &str, size: u64, start: u64) -> Vec<u8> {
    Response {
        status,
        message: message.into(),
        size,
        hash: [0x5a; 32],
        start,
    }
    .encode()
    .expect("seed encodes")
}

fn response_seeds() -> Seeds {
    let ok = response(Status::Ok, "", 1 << 40, 0);
    let mut with_data = ok.clone();
    with_data.extend_from_slice(&[0xee; 64]);
    let mut start_beyond = response(Status::Ok, "", 10, 10);
    let n = start_beyond.len();
    start_beyond[n - 8..].copy_from_slice(&11u64.to_le_bytes());
    let mut long_msg = b"FAXR\x01\x04".to_vec();
    long_msg.extend_from_slice(&513u16.to_le_bytes());
    named(vec![
        ("ok", ok.clone()),
        ("ok-with-data", with_data),
        ("ok-resume", response(Status::Ok, "", 1000, 400)),
        ("ok-at-end", response(Status::Ok, "", 1000, 1000)),
        (
            "not-offered",
            response(Status::NotOffered, "no such file", 0, 0),
        ),
        ("changed", response(Status::Changed, "changed", 99, 0)),
        ("busy", response(Status::Busy, "busy", 0, 0)),
        (
            "error-longest",
            response(Status::Error, &"é".repeat(256), 0, u64::MAX),
        ),
        ("magic-only", b"FAXR".to_vec()),
        ("prefix", ok[..ok.len() - 1].to_vec()),
        ("version-0", b"FAXR\x00".to_vec()),
        ("unknown-status", b"FAXR\x01\x05".to_vec()),
        ("message-too-long", long_msg),
        ("bad-utf8", b"FAXR\x01\x04\x01\x00\xff".to_vec()),
        ("start-beyond-size", start_beyond),
        ("request-magic", b"FAXQ\x01".to_vec()),
    ])
}

/// Record script pieces (layout in `fileapp_core::fuzzing::record`).
fn sealed(body: &[u8], rep: u8, pad: u16) -> Vec<u8> {
    let mut v = vec![1, rep];
    v.extend_from_slice(&pad.to_le_bytes());
    v.extend_from_slice(&(body.len() as u16).to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn with_type(payload: &[u8], typ: u8) -> Vec<u8> {
    let mut v = payload.to_vec();
    v.push(typ);
    v
}

fn script(setup: u8, ops: Vec<Vec<u8>>) -> Vec<u8> {
    let mut v = vec![setup];
    for op in ops {
        v.extend_from_slice(&op);
    }
    v
}

fn record_seeds() -> Seeds {
    let data = |p: &[u8]| sealed(&with_type(p, 23), 0, 0);
    let hello = data(b"hello");
    let mut tampered = vec![2];
    tampered.extend_from_slice(&9u16.to_le_bytes());
    tampered.push(0x40);
    tampered.extend_from_slice(&hello[1..]);
    let mut tampered_header = vec![2, 3, 0, 0x01];
    tampered_header.extend_from_slice(&hello[1..]);
    let mut offset = vec![3, 17];
    offset.extend_from_slice(&hello[1..]);
    let mut raw = vec![0];
    let garbage = [
        23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
        22, 23, 24, 25,
    ];
    raw.extend_from_slice(&(garbage.len() as u16).to_le_bytes());
    raw.extend_from_slice(&garbage);
    let mut raw_alert = vec![0, 7, 0];
    raw_alert.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
    let key_update = |req: u8| sealed(&with_type(&[24, 0, 0, 1, req], 22), 0, 0);
    let ticket = [4, 0, 0, 4, 0, 0, 0, 1];
    let mut ticket_then_update = ticket.to_vec();
    ticket_then_update.extend_from_slice(&KEY_UPDATE);
    let mut two_updates = KEY_UPDATE.to_vec();
    two_updates.extend_from_slice(&KEY_UPDATE);
    // Payload of exactly 2^14 bytes: 145 bytes ("abcd" + type, 29 times), 113 times.
    let full = sealed(&b"abcd\x17".repeat(29), 112, 0);
    named(vec![
        ("data-aes", script(0, vec![hello.clone()])),
        ("data-chacha", script(1, vec![hello.clone()])),
        ("data-twice", script(0, vec![hello.clone(), data(b"world")])),
        ("data-empty", script(0, vec![data(b"")])),
        ("data-padded", script(0, vec![sealed(b"pad\x17", 0, 100)])),
        ("data-full", script(0, vec![full.clone()])),
        // One payload byte, or one padding byte, past 2^14 + 1: record_overflow.
        (
            "data-over-full",
            script(0, vec![sealed(&b"abcd\x17".repeat(29), 113, 0)]),
        ),
        (
            "padding-over-full",
            script(1, vec![sealed(b"x\x17", 0, 16384)]),
        ),
        ("data-repeated", script(1, vec![sealed(b"xy\x17", 9, 3)])),
        ("all-zero", script(0, vec![sealed(&[0, 0, 0], 0, 0)])),
        ("unknown-type", script(0, vec![sealed(b"ab\x14", 0, 0)])),
        ("only-padding", script(0, vec![sealed(b"", 0, 40)])),
        (
            "close-notify",
            script(0, vec![sealed(&with_type(&CLOSE_NOTIFY, 21), 0, 0)]),
        ),
        (
            "alert-fatal",
            script(0, vec![sealed(&with_type(&[2, 40], 21), 0, 0)]),
        ),
        (
            "alert-short",
            script(0, vec![sealed(&with_type(&[2], 21), 0, 0)]),
        ),
        ("key-update", script(0, vec![key_update(0), hello.clone()])),
        (
            "key-update-requested-chacha",
            script(
                1,
                vec![key_update(1), hello.clone(), key_update(0), data(b"3rd")],
            ),
        ),
        (
            "ticket",
            script(
                0,
                vec![sealed(&with_type(&ticket, 22), 0, 0), hello.clone()],
            ),
        ),
        (
            "ticket-then-update",
            script(
                0,
                vec![
                    sealed(&with_type(&ticket_then_update, 22), 0, 0),
                    hello.clone(),
                ],
            ),
        ),
        (
            "two-updates",
            script(0, vec![sealed(&with_type(&two_updates, 22), 0, 0)]),
        ),
        (
            "handshake-garbage",
            script(0, vec![sealed(&with_type(&[1, 0, 0, 9, 1], 22), 0, 0)]),
        ),
        (
            "sequence-runs-out",
            script(2, vec![hello.clone(), hello.clone(), hello.clone()]),
        ),
        ("tampered", script(0, vec![hello.clone(), tampered])),
        ("tampered-header", script(1, vec![tampered_header])),
        ("offset", script(0, vec![offset, hello.clone()])),
        ("raw-garbage", script(0, vec![raw])),
        ("raw-plaintext-alert", script(0, vec![raw_alert])),
        ("empty", vec![]),
    ])
}

fn cert_seeds() -> Seeds {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SerialNumber,
    };
    let ed = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let peer = CertificateParams::new(vec!["fileapp-peer".to_string()])
        .unwrap()
        .self_signed(&ed)
        .unwrap()
        .der()
        .to_vec();
    let mut many = CertificateParams::new(vec![
        "a.example".to_string(),
        "b.example".to_string(),
        "192.0.2.7".to_string(),
    ])
    .unwrap();
    many.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca = many.self_signed(&ed).unwrap().der().to_vec();
    let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let p256 = CertificateParams::new(vec!["fileapp-peer".to_string()])
        .unwrap()
        .self_signed(&ec)
        .unwrap()
        .der()
        .to_vec();
    let mut trailing = peer.clone();
    trailing.push(0);
    let mut wrong_oid = peer.clone();
    if let Some(at) = wrong_oid.windows(3).position(|w| w == [0x2b, 0x65, 0x70]) {
        wrong_oid[at + 2] = 0x71; // Ed448's OID
    }
    let ed25519 = |f: &dyn Fn(&mut CertificateParams)| {
        let mut params = CertificateParams::new(vec!["fileapp-peer".to_string()]).unwrap();
        f(&mut params);
        params.self_signed(&ed).unwrap().der().to_vec()
    };
    let mut variants = vec![
        (
            "ed25519-no-names",
            ed25519(&|p| p.subject_alt_names.clear()),
        ),
        (
            "ed25519-distinguished-name",
            ed25519(&|p| {
                p.distinguished_name
                    .push(DnType::CommonName, "ünïcode peer");
                p.distinguished_name
                    .push(DnType::OrganizationName, "fileapp");
            }),
        ),
        (
            "ed25519-key-usage",
            ed25519(&|p| {
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                p.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
            }),
        ),
        (
            "ed25519-expired",
            ed25519(&|p| {
                p.not_before = rcgen::date_time_ymd(1990, 1, 1);
                p.not_after = rcgen::date_time_ymd(1991, 1, 1);
            }),
        ),
        (
            "ed25519-far-future",
            ed25519(&|p| p.not_after = rcgen::date_time_ymd(9999, 12, 31)),
        ),
        (
            "ed25519-big-serial",
            ed25519(&|p| p.serial_number = Some(SerialNumber::from_slice(&[0x7f; 20]))),
        ),
    ];
    // The SPKI's BIT STRING one byte shorter (key of 31 bytes), lengths kept consistent
    // only locally: the outer lengths then no longer add up.
    let mut short_key = peer.clone();
    if let Some(at) = short_key
        .windows(12)
        .position(|w| w == fileapp_core::transfer::cert::ED25519_SPKI_PREFIX)
    {
        short_key[at + 1] = 0x29;
        short_key[at + 10] = 0x20;
        short_key.remove(at + 12);
    }
    variants.push(("short-key", short_key));
    let mut unused_bits = peer.clone();
    if let Some(at) = unused_bits
        .windows(12)
        .position(|w| w == fileapp_core::transfer::cert::ED25519_SPKI_PREFIX)
    {
        unused_bits[at + 11] = 1;
    }
    variants.push(("bit-string-unused-bits", unused_bits));
    let mut indefinite = peer.clone();
    indefinite[1] = 0x80;
    variants.push(("indefinite-length", indefinite));
    variants.push(("p256-in-ed25519-spki", {
        let mut v = p256.clone();
        if let Some(at) = v
            .windows(7)
            .position(|w| w == [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01])
        {
            v[at..at + 3].copy_from_slice(&[0x2b, 0x65, 0x70]);
        }
        v
    }));
    let mut seeds = named(vec![
        ("ed25519-peer", peer.clone()),
        ("ed25519-ca-sans", ca),
        ("p256", p256),
        ("truncated", peer[..peer.len() / 2].to_vec()),
        ("trailing-byte", trailing),
        ("wrong-oid", wrong_oid),
        ("empty", vec![]),
        ("sequence-garbage", vec![0x30; 100]),
        ("short-sequence", vec![0x30, 0x03, 0x02, 0x01, 0x00]),
    ]);
    seeds.extend(named(variants));
    seeds
}

/// Client script pieces (layout in `fileapp_core::fuzzing::client`).
fn step(wait: u8, datagram: &[u8]) -> Vec<u8> {
    let mut v = vec![wait];
    v.extend_from_slice(&(datagram.len() as u16).to_le_bytes());
    v.extend_from_slice(datagram);
    v
}

fn client_seeds() -> Seeds {
    let first = FUZZ_SEED; // the registration's request id
    let heartbeat = FUZZ_SEED + 1; // the heartbeat after the welcome
    let welcome = enc(&Message::Welcome {
        req: first,
        token: FUZZ_TOKEN,
        heartbeat_ms: 500,
        version: 3,
    });
    let challenge = enc(&Message::Challenge {
        req: first,
        nonce: [3; 16],
    });
    let rejected = |req, reason| enc(&Message::Rejected { req, reason });
    let snapshot = proto::pack_table(0, 3, fuzzing::fuzz_table()).unwrap();
    let delta = proto::pack_table(
        3,
        4,
        vec![
            Item::Owner {
                name: "alice".into(),
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                tcp_port: 4000,
                online: false,
                key: None,
            },
            Item::File {
                owner: "bob".into(),
                file: "new.txt".into(),
                size: 1,
                hash: [8; 32],
                files: 0,
            },
        ],
    )
    .unwrap();
    let two_parts = |part| {
        enc(&Message::Table {
            from: 3,
            to: 5,
            part,
            parts: 2,
            items: vec![Item::File {
                owner: "bob".into(),
                file: format!("part{part}"),
                size: 2,
                hash: [part as u8; 32],
                files: 0,
            }],
        })
    };
    let gap = enc(&Message::Table {
        from: 7,
        to: 9,
        part: 0,
        parts: 1,
        items: vec![],
    });
    let mut truncated = delta[0].clone();
    truncated.pop();
    let inert = enc(&register(true, false, None));
    let hb_ack = enc(&Message::Ack {
        req: heartbeat,
        version: 4,
    });
    let s = |state: u8, steps: Vec<Vec<u8>>| {
        let mut v = vec![state];
        for st in steps {
            v.extend_from_slice(&st);
        }
        v
    };
    named(vec![
        ("fresh-welcome-unasked", s(0, vec![step(0, &welcome)])),
        ("fresh-garbage", s(0, vec![step(0, b"FA\x01\xff\xff")])),
        (
            "registering-welcome",
            s(1, vec![step(0, &welcome), step(0, &snapshot[0])]),
        ),
        (
            "registering-rejected",
            s(1, vec![step(0, &rejected(first, Reject::NameInUse))]),
        ),
        ("registering-table", s(1, vec![step(0, &snapshot[0])])),
        (
            "registering-timeout",
            s(1, vec![step(255, &welcome), step(255, &[])]),
        ),
        (
            "keyed-challenge",
            s(
                2,
                vec![
                    step(0, &challenge),
                    step(
                        0,
                        &enc(&Message::Welcome {
                            req: first + 1,
                            token: FUZZ_TOKEN,
                            heartbeat_ms: 0,
                            version: 0,
                        }),
                    ),
                ],
            ),
        ),
        (
            "keyed-bad-proof",
            s(
                2,
                vec![
                    step(0, &challenge),
                    step(0, &rejected(first + 1, Reject::BadProof)),
                ],
            ),
        ),
        ("online-delta", s(3, vec![step(0, &delta[0])])),
        (
            "online-two-parts",
            s(3, vec![step(0, &two_parts(1)), step(0, &two_parts(0))]),
        ),
        ("online-gap", s(3, vec![step(0, &gap)])),
        ("online-truncated", s(3, vec![step(0, &truncated)])),
        ("online-inert", s(3, vec![step(0, &inert)])),
        ("online-heartbeat-ack", s(3, vec![step(10, &hb_ack)])),
        (
            "online-not-registered",
            s(
                4,
                vec![
                    step(0, &rejected(heartbeat, Reject::NotRegistered)),
                    step(0, &welcome),
                ],
            ),
        ),
        (
            "online-resnapshot",
            s(4, vec![step(0, &snapshot[0]), step(0, &delta[0])]),
        ),
        ("online-welcome-again", s(3, vec![step(0, &welcome)])),
        (
            "online-too-long",
            s(3, vec![step(0, &vec![b'F'; MAX_DATAGRAM + 1])]),
        ),
        (
            "offline-table",
            s(5, vec![step(0, &delta[0]), step(50, &welcome)]),
        ),
        (
            "reconnecting-ack",
            s(6, vec![step(0, &hb_ack), step(0, &delta[0])]),
        ),
        (
            "reconnecting-rejected",
            s(
                6,
                vec![
                    step(0, &rejected(heartbeat + 1, Reject::NameInUse)),
                    step(200, &[]),
                ],
            ),
        ),
        ("empty", vec![]),
    ])
}

/// A folder of two folders and three files, as an owner streams it: fresh (piece size
/// 1 and 64), resumed at entry 1 byte 3, and an owner's abort.
/// A probe, the punch that opens the fuzzed machine, its own (owner) punch, and a punch
/// with another id.
fn punch_seeds() -> Seeds {
    use fileapp_core::reach::punch::{Side, probe_datagram, punch_datagram};
    vec![
        ("probe".into(), probe_datagram(&[1; 16])),
        (
            "punch_requester".into(),
            punch_datagram(&[7; 16], Side::Requester),
        ),
        ("punch_owner".into(), punch_datagram(&[7; 16], Side::Owner)),
        (
            "punch_other_id".into(),
            punch_datagram(&[8; 16], Side::Requester),
        ),
    ]
}

fn tree_seeds() -> Seeds {
    use fileapp_core::tree::manifest::summarize;
    use fileapp_core::tree::stream::{put_abort, put_end, put_entry, start_of};
    use fileapp_core::tree::{Entry, TreeStart};
    let data: [&[u8]; 3] = [b"", b"hello, folder", b"x"];
    let entries = vec![
        Entry::dir("a", 0o755),
        Entry::file(
            "a/f",
            0o644,
            13,
            (1_700_000_000, 1),
            *blake3::hash(data[1]).as_bytes(),
        ),
        Entry::dir("a/g h", 0o700),
        Entry::file("empty", 0o600, 0, (0, 0), *blake3::hash(data[0]).as_bytes()),
        Entry::file("-z", 0o644, 1, (5, 0), *blake3::hash(data[2]).as_bytes()),
    ];
    let mut entries = entries;
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let body = |e: &Entry| match e.path.as_str() {
        "a/f" => data[1],
        "-z" => data[2],
        _ => data[0],
    };
    let make = |first: u8, resume: Option<TreeStart>| {
        let mut out = vec![first];
        out.extend_from_slice(&summarize(&entries).0.encode());
        for (i, e) in entries.iter().enumerate() {
            put_entry(e, &mut out);
            if e.is_file() {
                out.extend_from_slice(&body(e)[start_of(resume, i as u64, e.size) as usize..]);
            }
        }
        put_end(&mut out);
        out
    };
    let mut abort = vec![63u8];
    abort.extend_from_slice(&summarize(&entries).0.encode());
    put_abort("'a/f' changed since it was offered", &mut abort);
    named(vec![
        ("fresh_by_1", make(0, None)),
        ("fresh_by_64", make(63, None)),
        (
            "resumed",
            make(
                0x80 | 10,
                Some(TreeStart {
                    index: 1,
                    offset: 3,
                }),
            ),
        ),
        ("abort", abort),
    ])
}
