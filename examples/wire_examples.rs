//! Prints every control message with its exact bytes: the examples in docs/PROTOCOL.md.
//! Run: `cargo run --example wire_examples`.

use std::net::IpAddr;

use fileapp::proto::*;

fn main() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let msgs = vec![
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
        Message::Challenge {
            req: 1,
            nonce: [0x11; 16],
        },
        Message::Offer {
            req: 2,
            token: 5,
            files: vec![FileEntry {
                name: "foo".into(),
                size: 3,
                hash: [0xbb; 32],
            }],
        },
        Message::Dereg { req: 3, token: 5 },
        Message::Heartbeat {
            req: 4,
            token: 5,
            table_version: 7,
        },
        Message::TableAck {
            token: 5,
            to: 7,
            part: 0,
        },
        Message::Welcome {
            req: 1,
            token: 5,
            heartbeat_ms: 10000,
            version: 7,
        },
        Message::Rejected {
            req: 1,
            reason: Reject::NameInUse,
        },
        Message::Ack { req: 2, version: 8 },
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
                },
            ],
        },
    ];
    for m in msgs {
        let b = m.encode().unwrap();
        let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
        println!("{m:?}\n  {}", hex.join(" "));
    }
}
