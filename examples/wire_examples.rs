//! Prints every control message with its exact bytes: the examples in docs/PROTOCOL.md.
//! Run: `cargo run --example wire_examples`. Each example's label is the one PROTOCOL.md
//! shows it under; the integration test `wire` includes this file and checks that the
//! document's hex is what the codec produces for every documented label.

use std::net::IpAddr;

use fileapp::proto::*;

/// (label in PROTOCOL.md, message): the documented ones in the document's order, then
/// the ones only printed here.
pub fn examples() -> Vec<(&'static str, Message)> {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    vec![
        (
            r#"Register{req 1, "B", instance 300, tcp 1401, keep false, no advertise, no key, no proof, evict false}"#,
            Message::Register {
                req: 1,
                name: "B".into(),
                instance: 300,
                tcp_port: 1401,
                keep_offers: false,
                advertise: None,
                key: None,
                proof: None,
                evict: false,
            },
        ),
        ("Dereg{req 3, token 5}", Message::Dereg { req: 3, token: 5 }),
        (
            "Heartbeat{req 4, token 5, version 7}",
            Message::Heartbeat {
                req: 4,
                token: 5,
                table_version: 7,
            },
        ),
        (
            "TableAck{token 5, to 7, part 0}",
            Message::TableAck {
                token: 5,
                to: 7,
                part: 0,
            },
        ),
        (
            "Welcome{req 1, token 5, 10000 ms, v 7}",
            Message::Welcome {
                req: 1,
                token: 5,
                heartbeat_ms: 10000,
                version: 7,
            },
        ),
        (
            "Rejected{req 1, NameInUse}",
            Message::Rejected {
                req: 1,
                reason: Reject::NameInUse,
            },
        ),
        ("Ack{req 2, version 8}", Message::Ack { req: 2, version: 8 }),
        (
            "Challenge{req 1, nonce 11×16}",
            Message::Challenge {
                req: 1,
                nonce: [0x11; 16],
            },
        ),
        (
            "Record{req 2, token 5, seq 9, sig 22×64}",
            Message::Record {
                req: 2,
                token: 5,
                seq: 9,
                sig: vec![0x22; 64],
            },
        ),
        (
            r#"Register{req 1, "B", instance 300, tcp 1401, keep true, advertise 10.0.0.1, key aa×32, proof, evict true}"#,
            Message::Register {
                req: 1,
                name: "B".into(),
                instance: 300,
                tcp_port: 1401,
                keep_offers: true,
                advertise: Some(ip("10.0.0.1")),
                key: Some([0xaa; 32]),
                proof: Some(Proof {
                    nonce: [0x11; 16],
                    sig: vec![0x55; 64],
                }),
                evict: true,
            },
        ),
        (
            r#"Offer{req 2, token 5, "foo" 3 bytes, hash bb×32}"#,
            Message::Offer {
                req: 2,
                token: 5,
                files: vec![FileEntry {
                    name: "foo".into(),
                    size: 3,
                    hash: [0xbb; 32],
                    files: 0,
                }],
            },
        ),
        (
            r#"Table{0 -> 8, part 0 of 1, owner B 127.0.0.1:1401 online, file B/foo}"#,
            Message::Table {
                from: 0,
                to: 8,
                part: 0,
                parts: 1,
                items: vec![
                    Item::Owner {
                        name: "B".into(),
                        ip: ip("127.0.0.1"),
                        tcp_port: 1401,
                        online: true,
                        key: None,
                    },
                    Item::File {
                        owner: "B".into(),
                        file: "foo".into(),
                        size: 3,
                        hash: [0xbb; 32],
                        files: 0,
                    },
                ],
            },
        ),
    ]
}

// Also compiled into the integration tests (for `examples`), where nothing calls it.
#[cfg_attr(test, allow(dead_code))]
fn main() {
    for (label, m) in examples() {
        let b = m.encode().unwrap();
        let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
        println!("{label}\n  {m:?}\n  {}", hex.join(" "));
    }
}
