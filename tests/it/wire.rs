//! The control protocol as documented: the hex examples of docs/PROTOCOL.md are what the
//! codec produces, and the server's answers to unauthenticated or malformed datagrams
//! are no larger than what it received (no amplification).

use std::net::UdpSocket;

use fileapp::proto::{Message, Proof, Reject};

use crate::util::{Server, WAIT};

#[path = "../../examples/wire_examples.rs"]
mod wire_examples;

/// One documented example: its label and its bytes, with `…` standing for a run of the
/// byte before it whose total length, if the line says `(N bytes of 0xXX)`, is N.
struct DocExample {
    label: String,
    hex: String,
}

/// Every `Label{...}  hex` line (or `Label{...}` with the hex on the next line) in the
/// fenced blocks of PROTOCOL.md.
fn doc_examples() -> Vec<DocExample> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md"))
        .expect("docs/PROTOCOL.md");
    let mut out = Vec::new();
    let mut in_block = false;
    let mut lines = doc.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        let starts_label = line.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && line
                .split('{')
                .next()
                .is_some_and(|n| n.chars().all(char::is_alphanumeric));
        if !in_block || !starts_label || !line.contains('{') {
            continue;
        }
        let Some(close) = line.find('}') else {
            continue;
        };
        let label = line[..=close].to_string();
        let mut hex = line[close + 1..].trim().to_string();
        if hex.is_empty() {
            hex = lines.next().unwrap_or("").trim().to_string();
        }
        if hex.starts_with("46 41") {
            out.push(DocExample { label, hex });
        }
    }
    out
}

/// Checks `bytes` against a documented hex line; returns a reason when they differ.
fn matches_doc(hex: &str, bytes: &[u8]) -> Result<(), String> {
    let (body, note) = match hex.find('(') {
        Some(i) => (&hex[..i], Some(hex[i..].trim())),
        None => (hex, None),
    };
    let tokens: Vec<&str> = body.split_whitespace().collect();
    let parse = |t: &[&str]| -> Vec<u8> {
        t.iter()
            .map(|x| u8::from_str_radix(x, 16).unwrap_or_else(|_| panic!("hex byte {x:?}")))
            .collect()
    };
    let Some(gap) = tokens.iter().position(|t| *t == "…") else {
        let want = parse(&tokens);
        return if want == bytes {
            Ok(())
        } else {
            Err(format!("documented {want:02x?}"))
        };
    };
    let (pre, post) = (parse(&tokens[..gap]), parse(&tokens[gap + 1..]));
    let fill = *pre.last().ok_or("… with nothing before it")?;
    if bytes.len() < pre.len() + post.len()
        || !bytes.starts_with(&pre)
        || !bytes.ends_with(&post)
        || bytes[pre.len()..bytes.len() - post.len()]
            .iter()
            .any(|b| *b != fill)
    {
        return Err(format!("documented {pre:02x?} … {post:02x?}"));
    }
    if let Some(note) = note {
        // "(16 bytes of 0x11)": the whole run of that byte around the gap.
        let words: Vec<&str> = note.trim_matches(['(', ')']).split_whitespace().collect();
        let n: usize = words[0].parse().map_err(|_| format!("note {note:?}"))?;
        let b = u8::from_str_radix(words[3].trim_start_matches("0x"), 16)
            .map_err(|_| format!("note {note:?}"))?;
        let start = pre.iter().rposition(|x| *x != b).map_or(0, |i| i + 1);
        let end =
            bytes.len() - post.len() + post.iter().position(|x| *x != b).unwrap_or(post.len());
        if b != fill || end - start != n {
            return Err(format!("{note}: run of {} bytes", end - start));
        }
    }
    Ok(())
}

#[test]
fn protocol_md_hex_examples_are_what_the_codec_produces() {
    let examples = wire_examples::examples();
    let doc = doc_examples();
    // The block of §1.3 has eight examples; all of them must be found and checked.
    assert!(doc.len() >= 8, "found only {} examples", doc.len());
    for d in &doc {
        let (_, m) = examples
            .iter()
            .find(|(label, _)| *label == d.label)
            .unwrap_or_else(|| {
                panic!(
                    "PROTOCOL.md example {:?} is not in examples/wire_examples.rs",
                    d.label
                )
            });
        let bytes = m.encode().unwrap();
        if let Err(why) = matches_doc(&d.hex, &bytes) {
            panic!("{}: codec gives {bytes:02x?}, {why} ({})", d.label, d.hex);
        }
        assert_eq!(&Message::decode(&bytes).unwrap(), m, "{}", d.label);
    }
}

#[test]
fn the_doc_parser_notices_a_wrong_byte() {
    // The check above could pass by parsing nothing: make sure a difference fails it.
    assert!(matches_doc("46 41 01 07 02 08", &[0x46, 0x41, 1, 7, 2, 8]).is_ok());
    assert!(matches_doc("46 41 01 07 02 08", &[0x46, 0x41, 1, 7, 2, 9]).is_err());
    let mut ch = vec![0x46, 0x41, 1, 9, 1];
    ch.extend([0x11; 16]);
    let doc = "46 41 01 09 01 11 11 … 11   (16 bytes of 0x11)";
    assert!(matches_doc(doc, &ch).is_ok());
    ch.push(0x11);
    assert!(matches_doc(doc, &ch).is_err(), "17 bytes of 0x11");
}

/// Sends `bytes` to the server and returns its answer, if one comes before the answer
/// to a probe sent right after (the server answers one socket's datagrams in order, so
/// the probe's answer marks the end of any answer to `bytes`; no silence is guessed).
fn exchange(sock: &UdpSocket, bytes: &[u8]) -> Option<Vec<u8>> {
    let probe = Message::Heartbeat {
        req: 0x7777,
        token: 1,
        table_version: 0,
    }
    .encode()
    .unwrap();
    sock.send(bytes).unwrap();
    sock.send(&probe).unwrap();
    let mut buf = [0u8; 2048];
    let mut answer = None;
    loop {
        let n = sock.recv(&mut buf).expect("the probe is always answered");
        let got = &buf[..n];
        if Message::decode(got).is_ok_and(|m| m.req_id() == Some(0x7777)) {
            return answer;
        }
        assert!(answer.is_none(), "two answers to one datagram");
        answer = Some(got.to_vec());
    }
}

/// Whether an answer is the expected one.
type IsAnswer = fn(&Message) -> bool;

#[test]
fn refusals_are_no_larger_than_the_request_and_garbage_gets_nothing() {
    let srv = Server::start(&["--db", ":memory:"]);
    // A real client binds the name "B" to its key.
    let dir = tempfile::tempdir().unwrap();
    let _b = srv.client("B", dir.path());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(srv.addr()).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();

    let big_token = u128::MAX - 12345;
    let refused: Vec<(&str, Message, IsAnswer)> = vec![
        (
            "heartbeat, unknown token",
            Message::Heartbeat {
                req: 1,
                token: 5,
                table_version: 0,
            },
            |m| {
                matches!(
                    m,
                    Message::Rejected {
                        reason: Reject::NotRegistered,
                        ..
                    }
                )
            },
        ),
        (
            "offer, unknown token, nothing offered",
            Message::Offer {
                req: 2,
                token: 5,
                files: vec![],
            },
            |m| {
                matches!(
                    m,
                    Message::Rejected {
                        reason: Reject::NotRegistered,
                        ..
                    }
                )
            },
        ),
        (
            "dereg, unknown token",
            Message::Dereg { req: 3, token: 5 },
            |m| {
                matches!(
                    m,
                    Message::Rejected {
                        reason: Reject::NotRegistered,
                        ..
                    }
                )
            },
        ),
        (
            "dereg, large request id and token",
            Message::Dereg {
                req: u64::MAX,
                token: big_token,
            },
            |m| {
                matches!(
                    m,
                    Message::Rejected {
                        reason: Reject::NotRegistered,
                        ..
                    }
                )
            },
        ),
        (
            "register a name bound to another key, without a key",
            Message::Register {
                req: 4,
                name: "B".into(),
                instance: 1,
                tcp_port: 1,
                keep_offers: false,
                advertise: None,
                key: None,
                proof: None,
                evict: false,
            },
            |m| {
                matches!(
                    m,
                    Message::Rejected {
                        reason: Reject::NameInUse,
                        ..
                    }
                )
            },
        ),
        (
            "register with a key, no proof: the challenge",
            Message::Register {
                req: 5,
                name: "Z".into(),
                instance: 1,
                tcp_port: 1,
                keep_offers: false,
                advertise: None,
                key: Some([7; 32]),
                proof: None,
                evict: false,
            },
            |m| matches!(m, Message::Challenge { .. }),
        ),
        (
            "register with a forged proof",
            Message::Register {
                req: 6,
                name: "Z".into(),
                instance: 1,
                tcp_port: 1,
                keep_offers: false,
                advertise: None,
                key: Some([7; 32]),
                proof: Some(Proof {
                    nonce: [0; 16],
                    sig: vec![0; 64],
                }),
                evict: false,
            },
            |m| {
                matches!(
                    m,
                    Message::Rejected {
                        reason: Reject::BadProof,
                        ..
                    }
                )
            },
        ),
    ];
    for (what, msg, ok) in refused {
        let request = msg.encode().unwrap();
        let answer = exchange(&sock, &request).unwrap_or_else(|| panic!("{what}: no answer"));
        let decoded = Message::decode(&answer).unwrap();
        assert!(ok(&decoded), "{what}: answered {decoded:?}");
        assert_eq!(decoded.req_id(), msg.req_id(), "{what}");
        assert!(
            answer.len() <= request.len(),
            "{what}: {} byte answer to a {} byte request",
            answer.len(),
            request.len()
        );
    }

    // Unauthenticated table acknowledgements and anything malformed: no answer at all.
    let ack = Message::TableAck {
        token: 5,
        to: 1,
        part: 0,
    }
    .encode()
    .unwrap();
    let valid = Message::Dereg { req: 9, token: 5 }.encode().unwrap();
    let mut trailing = valid.clone();
    trailing.push(0);
    let mut bad_magic = valid.clone();
    bad_magic[0] = b'X';
    let mut bad_version = valid.clone();
    bad_version[2] = 2;
    let server_bound = Message::Ack { req: 1, version: 1 }.encode().unwrap();
    let mut oversized = valid.clone();
    oversized.resize(1201, 0);
    let garbage = crate::util::random_bytes(900, 3);
    for (what, bytes) in [
        ("table ack, unknown token", ack),
        ("trailing byte", trailing),
        ("other magic", bad_magic),
        ("other version", bad_version),
        ("a server's message", server_bound),
        ("over 1200 bytes", oversized),
        ("random bytes", garbage),
        ("magic only", b"FA".to_vec()),
        ("empty", Vec::new()),
    ] {
        assert_eq!(exchange(&sock, &bytes), None, "{what}: answered");
    }
    // The server is still fine.
    let mut c = srv.client("C", dir.path());
    c.send("whoami");
    c.expect(">>> [You are C (online)");
}
