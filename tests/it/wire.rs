//! The control protocol as documented: the hex examples of docs/PROTOCOL.md are what the
//! codec produces; the server answers nothing in clear but a handshake, and that with
//! fewer bytes than it received (no amplification); inside a session its refusals name
//! their request and reason.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use fileapp::client::link::ClientLink;
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

/// A control-channel session of the test's own with the server, over a socket of its
/// own: what a compatible client does, step by step.
struct Session {
    sock: UdpSocket,
    link: ClientLink,
}

impl Session {
    fn open(srv: &Server) -> Session {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(srv.addr()).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut link = ClientLink::new(None, rand_seed(), Duration::from_millis(500));
        // The first message waits for the handshake; its answer proves the session.
        link.send(Instant::now(), probe().encode().unwrap());
        let hello = link.poll_transmit().unwrap();
        assert_eq!(hello.len(), fileapp::channel::HELLO_LEN);
        sock.send(&hello).unwrap();
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf).expect("a handshake reply");
        assert!(
            n < hello.len(),
            "a {n} byte reply to a {} byte Hello",
            hello.len()
        );
        assert_eq!(link.handle(Instant::now(), &buf[..n]), None);
        let mut s = Session { sock, link };
        s.flush();
        let answer = s.recv().expect("the probe is answered");
        assert_eq!(answer.req_id(), Some(PROBE));
        s
    }

    fn flush(&mut self) {
        while let Some(d) = self.link.poll_transmit() {
            self.sock.send(&d).unwrap();
        }
    }

    fn recv(&mut self) -> Option<Message> {
        let mut buf = [0u8; 2048];
        loop {
            let n = self.sock.recv(&mut buf).ok()?;
            if let Some(m) = self.link.handle(Instant::now(), &buf[..n]) {
                return Message::decode(&m).ok();
            }
        }
    }

    /// Sends `msg` in the session and returns its answer, if one comes before the
    /// answer to a probe sent right after (the server answers one socket's datagrams in
    /// order, so the probe's answer marks the end of any answer; no silence is guessed).
    fn ask(&mut self, msg: &Message) -> Option<Message> {
        self.link.send(Instant::now(), msg.encode().unwrap());
        self.link.send(Instant::now(), probe().encode().unwrap());
        self.flush();
        let mut answer = None;
        loop {
            let m = self.recv().expect("the probe is always answered");
            if m.req_id() == Some(PROBE) {
                return answer;
            }
            assert!(answer.is_none(), "two answers to one message");
            answer = Some(m);
        }
    }

    /// Sends `bytes` in the clear from this session's socket: returns what came back
    /// before the answer to a probe in the session.
    fn raw(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.sock.send(bytes).unwrap();
        self.link.send(Instant::now(), probe().encode().unwrap());
        self.flush();
        let mut other = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            let n = self
                .sock
                .recv(&mut buf)
                .expect("the probe is always answered");
            match self.link.handle(Instant::now(), &buf[..n]) {
                Some(m) if Message::decode(&m).is_ok_and(|m| m.req_id() == Some(PROBE)) => {
                    return other;
                }
                _ => other.push(buf[..n].to_vec()),
            }
        }
    }
}

const PROBE: u64 = 0x7777;

fn probe() -> Message {
    Message::Heartbeat {
        req: PROBE,
        token: 1,
        table_version: 0,
    }
}

fn rand_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(
        &(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64)
            .to_le_bytes(),
    );
    s
}

/// Whether an answer is the expected one.
type IsAnswer = fn(&Message) -> bool;

#[test]
fn in_clear_nothing_is_answered_and_in_a_session_refusals_name_their_reason() {
    let srv = Server::start(&["--db", ":memory:"]);
    // A real client binds the name "B" to its key.
    let dir = tempfile::tempdir().unwrap();
    let _b = srv.client("B", dir.path());
    let mut session = Session::open(&srv);

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
            "register without a key (every name is bound to one)",
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
                        reason: Reject::BadProof,
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
        // In clear, the seed's datagrams get nothing back at all.
        let clear = msg.encode().unwrap();
        assert_eq!(
            session.raw(&clear),
            Vec::<Vec<u8>>::new(),
            "{what} in clear"
        );
        // In the session, the refusal names its request and its reason.
        let decoded = session
            .ask(&msg)
            .unwrap_or_else(|| panic!("{what}: no answer"));
        assert!(ok(&decoded), "{what}: answered {decoded:?}");
        assert_eq!(decoded.req_id(), msg.req_id(), "{what}");
    }

    // Unauthenticated table acknowledgements and anything malformed: no answer at all,
    // in clear or in the session.
    let ack = Message::TableAck {
        token: 5,
        to: 1,
        part: 0,
    };
    assert_eq!(session.ask(&ack), None, "table ack, unknown token");
    let valid = Message::Dereg { req: 9, token: 5 }.encode().unwrap();
    let mut data_packet = vec![fileapp::channel::TYPE_DATA];
    data_packet.extend_from_slice(&[0; 40]);
    let mut short_hello = vec![fileapp::channel::TYPE_HELLO];
    short_hello.extend_from_slice(&[1; 100]);
    for (what, bytes) in [
        ("a control message", valid),
        ("a data packet of no session", data_packet),
        ("a short hello", short_hello),
        ("over 1200 bytes", vec![fileapp::channel::TYPE_HELLO; 1201]),
        ("random bytes", crate::util::random_bytes(900, 3)),
        ("empty", Vec::new()),
    ] {
        assert_eq!(
            session.raw(&bytes),
            Vec::<Vec<u8>>::new(),
            "{what}: answered"
        );
    }
    // The server is still fine.
    let mut c = srv.client("C", dir.path());
    c.send("whoami");
    c.expect(">>> [You are C (online)");
}
