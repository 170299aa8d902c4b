//! The client core's datagram handler, driven through its states.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::client::core::{ClientCore, Config, State};
use crate::identity::Identity;
use crate::proto::{FileEntry, Item, MAX_DATAGRAM, Message, pack_table};
use crate::reliable::RetryPolicy;

use super::Script;

// ---- 5. the client's datagram handler --------------------------------------------------

/// Everything of a client core that a datagram could change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    state: State,
    table: String,
    version: u64,
    timeout: Option<Instant>,
    behind: bool,
    offered: BTreeMap<String, FileEntry>,
}

impl Seen {
    fn of(core: &ClientCore) -> Seen {
        Seen {
            state: core.state(),
            table: format!("{:?}", core.table()),
            version: core.table().version(),
            timeout: core.poll_timeout(),
            behind: core.behind_own_writes(),
            offered: core.offered().clone(),
        }
    }
}

/// The token the scripted server hands out.
pub const FUZZ_TOKEN: u128 = 0x0f0f_1234;
/// The first request id of the fuzzed client (ids then count up from it).
pub const FUZZ_SEED: u64 = 1;

fn identity() -> Arc<Identity> {
    static ID: OnceLock<Arc<Identity>> = OnceLock::new();
    ID.get_or_init(|| {
        // PKCS#8 v1 of the Ed25519 key with a fixed seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&[7; 32]);
        Arc::new(Identity::from_pkcs8(&der).expect("a valid PKCS#8 key"))
    })
    .clone()
}

/// The table the scripted server sends a client that comes online, at version 3.
pub fn fuzz_table() -> Vec<Item> {
    vec![
        Item::Owner {
            name: "alice".into(),
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            tcp_port: 4000,
            online: true,
            key: Some([1; 32]),
        },
        Item::Owner {
            name: "bob".into(),
            ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
            tcp_port: 4001,
            online: true,
            key: None,
        },
        Item::File {
            owner: "alice".into(),
            file: "a.txt".into(),
            size: 12,
            hash: [2; 32],
            files: 0,
        },
        Item::File {
            owner: "bob".into(),
            file: "b.iso".into(),
            size: 5 << 30,
            hash: [3; 32],
            files: 0,
        },
    ]
}

/// Sends what the client has to send nowhere, checking that it is well formed.
fn drain(core: &mut ClientCore) -> Vec<Message> {
    while core.poll_event().is_some() {}
    let mut sent = Vec::new();
    while let Some(d) = core.poll_transmit() {
        assert!(d.len() <= MAX_DATAGRAM);
        sent.push(Message::decode(&d).expect("the client sends only valid datagrams"));
    }
    sent
}

/// The request id of the last request among `sent`.
fn last_req(sent: &[Message]) -> u64 {
    sent.iter()
        .rev()
        .find_map(Message::req_id)
        .expect("a request was sent")
}

fn feed(core: &mut ClientCore, now: Instant, msg: &Message) {
    core.handle_datagram(now, &msg.encode().expect("fits"));
}

/// A client core in the state the script's first byte names (modulo 7): fresh,
/// registering, registering with a key, online, online with a key (table at version 3
/// with two owners), offline after dereg, reconnecting after lost heartbeats.
fn client_in(state: u8, now: &mut Instant) -> ClientCore {
    let keyed = matches!(state, 2 | 4);
    let cfg = Config {
        name: "fuzzer".into(),
        tcp_port: 7000,
        retry: RetryPolicy::default(),
        heartbeat: Duration::from_secs(2),
        advertise: None,
        identity: keyed.then(identity),
        evict: false,
    };
    let mut core = ClientCore::new(cfg, FUZZ_SEED);
    if state == 0 {
        return core;
    }
    core.register(*now);
    let req = last_req(&drain(&mut core));
    if matches!(state, 1 | 2) {
        return core;
    }
    let welcome = Message::Welcome {
        req,
        token: FUZZ_TOKEN,
        heartbeat_ms: 1000,
        version: 3,
    };
    feed(&mut core, *now, &welcome);
    drain(&mut core);
    for part in pack_table(0, 3, fuzz_table()).expect("the fuzz table packs") {
        core.handle_datagram(*now, &part);
    }
    drain(&mut core);
    assert_eq!((core.state(), core.table().version()), (State::Online, 3));
    match state {
        5 => {
            core.dereg(*now);
            let req = last_req(&drain(&mut core));
            feed(&mut core, *now, &Message::Ack { req, version: 3 });
            drain(&mut core);
            assert_eq!(core.state(), State::Offline);
        }
        6 => {
            while core.state() == State::Online {
                *now += Duration::from_millis(500);
                core.handle_timeout(*now);
                drain(&mut core);
            }
            assert_eq!(core.state(), State::Reconnecting);
        }
        _ => {}
    }
    core
}

/// `client::core::ClientCore::handle_datagram` on datagrams from the server's address.
/// Script: `state u8` (see [`client_in`]), then steps of `wait u8, len u16, datagram`:
/// after `wait * 20` ms (and the client's timers, if `wait > 0`), the datagram arrives.
/// Nothing panics; what the client sends is well formed; a datagram that does not
/// decode, or that only a server receives, changes nothing at all (state, table, timers,
/// offers, nothing sent or told); a table part changes the table only when online; the
/// table version never goes back but on a new session (Welcome); every row of the
/// table belongs to an owner it lists.
pub fn client(data: &[u8]) {
    let mut s = Script(data);
    let Some(state) = s.u8() else { return };
    let mut now = Instant::now();
    let mut core = client_in(state % 7, &mut now);
    while let Some(wait) = s.u8() {
        if wait > 0 {
            now += Duration::from_millis(20 * wait as u64);
            core.handle_timeout(now);
            drain(&mut core);
        }
        let bytes = s.piece();
        let before = Seen::of(&core);
        core.handle_datagram(now, bytes);
        let after = Seen::of(&core);
        let inert = match Message::decode(bytes) {
            Err(_) => true,
            Ok(msg) => {
                if !matches!(msg, Message::Welcome { .. }) {
                    assert!(after.version >= before.version, "the table went back");
                }
                if matches!(msg, Message::Table { .. }) && before.state != State::Online {
                    assert_eq!(after.table, before.table, "a table part applied offline");
                }
                matches!(
                    msg,
                    Message::Register { .. }
                        | Message::Offer { .. }
                        | Message::Dereg { .. }
                        | Message::Heartbeat { .. }
                        | Message::TableAck { .. }
                )
            }
        };
        if inert {
            assert_eq!(after, before, "an inert datagram changed the client");
            assert!(core.poll_transmit().is_none() && core.poll_event().is_none());
        }
        for row in core.table().rows() {
            let owner = core
                .table()
                .owner(&row.owner)
                .expect("a row's owner is listed");
            assert!(owner.files.contains_key(&row.file));
        }
        drain(&mut core);
    }
}
