//! Prints every control message with its exact bytes: the examples in docs/PROTOCOL.md.
//! Run: `cargo run --example wire_examples`.

use fileapp::proto::*;
use std::net::IpAddr;
fn main() {
    let msgs = vec![
        Message::Register {
            req: 1,
            name: "B".into(),
            instance: 300,
            tcp_port: 1401,
            keep_offers: false,
            advertise: None,
        },
        Message::Register {
            req: 1,
            name: "B".into(),
            instance: 300,
            tcp_port: 1401,
            keep_offers: true,
            advertise: Some("10.0.0.1".parse().unwrap()),
        },
        Message::Offer {
            req: 2,
            token: 5,
            files: vec!["foo".into()],
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
                    ip: "127.0.0.1".parse::<IpAddr>().unwrap(),
                    tcp_port: 1401,
                    online: true,
                },
                Item::File {
                    owner: "B".into(),
                    file: "foo".into(),
                },
            ],
        },
        Message::Table {
            from: 0,
            to: 8,
            part: 0,
            parts: 1,
            items: vec![Item::Owner {
                name: "B".into(),
                ip: "::1".parse::<IpAddr>().unwrap(),
                tcp_port: 1401,
                online: false,
            }],
        },
    ];
    for m in msgs {
        let b = m.encode().unwrap();
        println!(
            "{:?}\n  {}",
            m,
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}
