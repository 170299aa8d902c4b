//! Two servers on one shared store, sans-io under a fake clock: what one server commits
//! is applied by the other as remote rows (the driver's follower, played by hand here).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::index::Config;
use crate::proto::{FileEntry, Item, Message, Reject};
use crate::store::{MemoryStore, OwnerRow, Store};

const MS: Duration = Duration::from_millis(1);

fn addr(i: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 30000 + i)
}

fn cfg() -> Config {
    Config {
        offline_after: 100 * MS,
        ..Config::default()
    }
}

/// Registers `name` from `src` (no key); returns its token.
fn register(ix: &mut Index, now: Instant, src: SocketAddr, name: &str) -> u128 {
    let reg = Message::Register {
        req: 1,
        name: name.into(),
        instance: 1,
        tcp_port: 7,
        keep_offers: false,
        advertise: None,
        key: None,
        proof: None,
        evict: false,
    };
    ix.handle_datagram(now, src, &reg.encode().unwrap());
    loop {
        let (_, bytes) = ix.poll_transmit().expect("a welcome");
        if let Ok(Message::Welcome { token, .. }) = Message::decode(&bytes) {
            while ix.poll_transmit().is_some() {}
            return token;
        }
    }
}

/// Sends a heartbeat; returns the reply's rejection, if any.
fn heartbeat(ix: &mut Index, now: Instant, src: SocketAddr, token: u128) -> Option<Reject> {
    let hb = Message::Heartbeat {
        req: 9,
        token,
        table_version: 0,
    };
    ix.handle_datagram(now, src, &hb.encode().unwrap());
    let mut out = None;
    while let Some((_, bytes)) = ix.poll_transmit() {
        if let Ok(Message::Rejected { reason, .. }) = Message::decode(&bytes) {
            out = Some(reason);
        }
    }
    out
}

fn offer(ix: &mut Index, now: Instant, src: SocketAddr, token: u128, file: &str) {
    let m = Message::Offer {
        req: 2,
        token,
        files: vec![FileEntry {
            name: file.into(),
            size: 3,
            hash: [1; 32],
            files: 0,
        }],
    };
    ix.handle_datagram(now, src, &m.encode().unwrap());
    while ix.poll_transmit().is_some() {}
}

/// Commits `from`'s pending ops to the shared store and applies every row they touched
/// to `to`, as the follower does (rows of `home`).
fn replicate(from: &mut Index, store: &mut MemoryStore, to: &mut Index, now: Instant, home: &str) {
    let ops = from.take_store_ops();
    store.commit(&ops).unwrap();
    let touched: std::collections::BTreeSet<String> =
        ops.iter().map(|op| op.owner().to_string()).collect();
    for rec in store.load().unwrap() {
        if touched.contains(&rec.row.name) {
            to.apply_remote(now, rec, home);
        }
    }
}

/// What a client at version 0 would be shown: online owners and their files.
fn view(ix: &Index) -> Vec<String> {
    ix.delta(0)
        .into_iter()
        .filter_map(|i| match i {
            Item::Owner { name, online, .. } => Some(format!("{name}:{online}")),
            Item::File { owner, file, .. } => Some(format!("{owner}/{file}")),
            Item::Record { .. } | Item::Reach { .. } => None,
        })
        .collect()
}

#[test]
fn a_remote_owner_is_shown_and_never_expired_by_local_timers() {
    let t0 = Instant::now();
    let (mut a, mut b) = (
        Index::new(cfg(), vec![], t0, [1; 32]),
        Index::new(cfg(), vec![], t0, [2; 32]),
    );
    let mut db = MemoryStore::default();
    let tok = register(&mut a, t0, addr(1), "X");
    offer(&mut a, t0, addr(1), tok, "f");
    replicate(&mut a, &mut db, &mut b, t0, "A");
    assert_eq!(view(&b), ["X:true", "X/f"]);
    assert_eq!(b.home_of("X"), Some("A"));
    assert_eq!((b.online_count(), b.local_online()), (1, 0));
    // Long past B's offline window: B's sweep leaves X alone; A's own sweep decides.
    let later = t0 + 1000 * MS;
    b.handle_timeout(later);
    assert_eq!(view(&b), ["X:true", "X/f"]);
    assert!(b.take_store_ops().is_empty(), "B persists nothing of X");
    // X's token means nothing at B.
    assert_eq!(
        heartbeat(&mut b, later, addr(1), tok),
        Some(Reject::NotRegistered)
    );
    a.handle_timeout(later);
    replicate(&mut a, &mut db, &mut b, later, "A");
    assert_eq!(view(&b), Vec::<String>::new());
    assert_eq!(b.owner_files("X"), Some((false, vec!["f".into()])));
}

#[test]
fn reapplying_the_same_row_takes_no_version() {
    let t0 = Instant::now();
    let (mut a, mut b) = (
        Index::new(cfg(), vec![], t0, [1; 32]),
        Index::new(cfg(), vec![], t0, [2; 32]),
    );
    let mut db = MemoryStore::default();
    register(&mut a, t0, addr(1), "X");
    replicate(&mut a, &mut db, &mut b, t0, "A");
    let v = b.version();
    for rec in db.load().unwrap() {
        b.apply_remote(t0, rec, "A");
    }
    assert_eq!(b.version(), v);
}

#[test]
fn a_client_that_moved_ends_its_old_session_and_a_stale_row_is_answered() {
    let t0 = Instant::now();
    let (mut a, mut b) = (
        Index::new(cfg(), vec![], t0, [1; 32]),
        Index::new(cfg(), vec![], t0, [2; 32]),
    );
    let mut db = MemoryStore::default();
    let old = register(&mut a, t0, addr(1), "X");
    a.take_store_ops();
    // X registers at B (its session at A went quiet); B's row reaches A.
    let new = register(&mut b, t0 + MS, addr(2), "X");
    replicate(&mut b, &mut db, &mut a, t0 + MS, "B");
    assert_eq!(a.home_of("X"), Some("B"));
    assert_eq!(
        heartbeat(&mut a, t0 + MS, addr(1), old),
        Some(Reject::NotRegistered)
    );
    assert_eq!(heartbeat(&mut b, t0 + MS, addr(2), new), None);
    // A stale offline row from A (a sweep that raced the move) does not take X down at
    // B: B writes its own row again.
    let stale = OwnerRecord {
        row: OwnerRow {
            online: false,
            ..db.load().unwrap()[0].row.clone()
        },
        files: vec![],
        record: None,
        record_ver: 0,
    };
    b.take_store_ops();
    b.apply_remote(t0 + 2 * MS, stale, "A");
    assert_eq!(b.owner_files("X"), Some((true, vec![])));
    let ops = b.take_store_ops();
    assert!(
        matches!(&ops[0], StoreOp::Owner(r) if r.online && r.token == super::super::token_at_rest(new)),
        "{ops:?}"
    );
}

#[test]
fn the_clients_of_a_dead_server_go_offline_unless_they_moved() {
    let t0 = Instant::now();
    let (mut a, mut b) = (
        Index::new(cfg(), vec![], t0, [1; 32]),
        Index::new(cfg(), vec![], t0, [2; 32]),
    );
    let mut db = MemoryStore::default();
    register(&mut a, t0, addr(1), "X");
    register(&mut a, t0, addr(2), "Y");
    replicate(&mut a, &mut db, &mut b, t0, "A");
    // A dies; Y reappears through a third server, C, before B notices.
    let mut moved = db.load().unwrap().remove(1);
    assert_eq!(moved.row.name, "Y");
    moved.row.token ^= 1;
    moved.row.addr = addr(3);
    b.apply_remote(t0 + MS, moved, "C");
    assert!(b.take_store_ops().is_empty());
    assert_eq!(b.home_down(t0 + 2 * MS, "A"), 1);
    assert_eq!(view(&b), ["Y:true"]);
    let ops = b.take_store_ops();
    assert!(
        matches!(&ops[..], [StoreOp::Owner(r)] if r.name == "X" && !r.online),
        "B persists X offline: {ops:?}"
    );
    assert_eq!(b.home_down(t0 + 3 * MS, "A"), 0, "once");
}

#[test]
fn operators_release_names_and_drop_clients_while_running() {
    let t0 = Instant::now();
    let (mut a, mut b) = (
        Index::new(cfg(), vec![], t0, [1; 32]),
        Index::new(cfg(), vec![], t0, [2; 32]),
    );
    let mut db = MemoryStore::default();
    let tx = register(&mut a, t0, addr(1), "X");
    offer(&mut a, t0, addr(1), tx, "f");
    register(&mut a, t0, addr(2), "Y");
    replicate(&mut a, &mut db, &mut b, t0, "A");
    assert!(!b.drop_client(t0, "X"), "not B's session");
    assert!(a.drop_client(t0, "X"));
    assert_eq!(
        heartbeat(&mut a, t0, addr(1), tx),
        Some(Reject::NotRegistered)
    );
    assert_eq!(
        a.owner_files("X"),
        Some((false, vec!["f".into()])),
        "offers kept"
    );
    assert!(a.release_name(t0, "Y"));
    assert!(!a.release_name(t0, "nobody"));
    replicate(&mut a, &mut db, &mut b, t0, "A");
    assert_eq!(view(&b), Vec::<String>::new());
    // Deleted elsewhere: released here too, and the name is free.
    b.released_elsewhere(t0, "X");
    assert_eq!(b.owner_files("X"), Some((false, vec![])));
    register(&mut b, t0 + MS, addr(9), "X");
    assert_eq!(b.home_of("X"), None, "registered here: local");
    assert_eq!(b.local_online(), 1);
}

#[test]
fn raise_version_only_raises() {
    let t0 = Instant::now();
    let mut a = Index::new(cfg(), vec![], t0, [1; 32]);
    a.raise_version(50);
    a.raise_version(10);
    assert_eq!(a.version(), 50);
    register(&mut a, t0, addr(1), "X");
    assert_eq!(a.version(), 51);
}

/// Servers "A" and "B" of one deployment: requester R registered at A (from addr(1)),
/// owner O at B (from addr(2)), each server showing the other's client.
fn deployment(t0: Instant) -> (Index, Index, u128) {
    let (mut a, mut b) = (
        Index::new(cfg(), vec![], t0, [1; 32]),
        Index::new(cfg(), vec![], t0, [2; 32]),
    );
    a.set_server_id("A");
    b.set_server_id("B");
    let mut db = MemoryStore::default();
    let r = register(&mut a, t0, addr(1), "R");
    register(&mut b, t0, addr(2), "O");
    replicate(&mut a, &mut db, &mut b, t0, "A");
    replicate(&mut b, &mut db, &mut a, t0, "B");
    (a, b, r)
}

fn connect(ix: &mut Index, now: Instant, token: u128, via: crate::reach::Via, id: u8) {
    let m = Message::Connect {
        req: 5,
        token,
        owner: "O".into(),
        via,
        id: [id; 16],
    };
    ix.handle_datagram(now, addr(1), &m.encode().unwrap());
}

/// Everything `ix` sends now, decoded, with its destination.
fn sent(ix: &mut Index) -> Vec<(SocketAddr, Message)> {
    std::iter::from_fn(|| ix.poll_transmit())
        .map(|(to, b)| (to, Message::decode(&b).unwrap()))
        .collect()
}

/// Every forward `ix` queued, for server `to` (asserted).
fn forwards(ix: &mut Index, to: &str) -> Vec<crate::index::Forward> {
    std::iter::from_fn(|| ix.poll_forward())
        .map(|(server, f)| {
            assert_eq!(&*server, to);
            // As the database carries it.
            crate::index::Forward::decode(&f.encode()).unwrap()
        })
        .collect()
}

fn probe(secret: [u8; 16]) -> Vec<u8> {
    [crate::reach::punch::PROBE_MAGIC.as_slice(), &secret].concat()
}

#[test]
fn a_reverse_meeting_with_an_owner_of_another_server_reaches_it_through_its_server() {
    use crate::index::Forward;
    use crate::reach::Via;
    let t0 = Instant::now();
    let (mut a, mut b, r) = deployment(t0);
    connect(&mut a, t0, r, Via::Reverse, 1);
    let out = sent(&mut a);
    assert!(
        matches!(&out[..], [(to, Message::Connected { via: Via::Reverse, .. })] if *to == addr(1)),
        "A answers R and sends nothing towards O itself: {out:?}"
    );
    let fw = forwards(&mut a, "B");
    let [Forward::Deliver { owner, from, msg }] = &fw[..] else {
        panic!("{fw:?}")
    };
    assert_eq!((owner.as_str(), from.as_str()), ("O", "A"));
    b.handle_forward(t0, fw[0].clone());
    let out = sent(&mut b);
    let [
        (
            to,
            Message::Dial {
                from,
                via,
                addr: at,
                ..
            },
        ),
    ] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!((*to, from.as_str(), *via), (addr(2), "R", Via::Reverse));
    assert_eq!(*at, Some(SocketAddr::new(addr(1).ip(), 7)), "R's TCP port");
    assert_eq!(Message::decode(msg).unwrap(), out[0].1);
    // R's retransmitted Connect repeats the same Dial through B.
    connect(&mut a, t0 + MS, r, Via::Reverse, 1);
    assert_eq!(sent(&mut a).len(), 1);
    assert_eq!(forwards(&mut a, "B"), fw);
}

#[test]
fn a_punch_with_an_owner_of_another_server_meets_through_both_servers() {
    use crate::index::{Forward, PROBE_FORWARD_EVERY};
    use crate::reach::Via;
    let t0 = Instant::now();
    let (mut a, mut b, r) = deployment(t0);
    connect(&mut a, t0, r, Via::Punched, 2);
    let out = sent(&mut a);
    let [
        (
            _,
            Message::Connected {
                secret: Some(s_r), ..
            },
        ),
    ] = &out[..]
    else {
        panic!("{out:?}")
    };
    for f in forwards(&mut a, "B") {
        b.handle_forward(t0, f);
    }
    let out = sent(&mut b);
    let [
        (
            _,
            Message::Dial {
                secret: Some(s_o), ..
            },
        ),
    ] = &out[..]
    else {
        panic!("{out:?}")
    };
    // O probes its own server, B, from its NAT's public endpoint.
    let (o_pub, r_pub) = (addr(200), addr(100));
    b.handle_probe(t0, o_pub, &probe(*s_o), false);
    let fw = forwards(&mut b, "A");
    assert_eq!(
        fw,
        [Forward::ProbeSeen {
            secret: *s_o,
            src: o_pub
        }]
    );
    assert!(sent(&mut b).is_empty(), "a probe is never answered");
    // The next probes: passed on only every PROBE_FORWARD_EVERY from the same source.
    b.handle_probe(t0 + MS, o_pub, &probe(*s_o), false);
    assert!(forwards(&mut b, "A").is_empty());
    b.handle_probe(t0 + PROBE_FORWARD_EVERY, o_pub, &probe(*s_o), false);
    assert_eq!(forwards(&mut b, "A").len(), 1);
    // A probe with a secret nobody handed out goes nowhere.
    b.handle_probe(t0, o_pub, &probe([0x77; 16]), false);
    assert!(forwards(&mut b, "A").is_empty());
    // A holds the meeting: with both sides seen it tells R directly and O through B.
    a.handle_forward(t0, fw[0].clone());
    a.handle_probe(t0, r_pub, &probe(*s_r), false);
    let out = sent(&mut a);
    assert!(
        out.contains(&(
            addr(1),
            Message::PunchPeer {
                id: [2; 16],
                peer: Some(o_pub)
            }
        )),
        "{out:?}"
    );
    assert!(out.iter().all(|(to, _)| *to == addr(1)), "{out:?}");
    for f in forwards(&mut a, "B") {
        b.handle_forward(t0, f);
    }
    assert_eq!(
        sent(&mut b),
        [(
            addr(2),
            Message::PunchPeer {
                id: [2; 16],
                peer: Some(r_pub)
            }
        )]
    );
}

#[test]
fn relayed_across_servers_names_the_relay_and_needs_its_address() {
    use crate::index::{Forward, RelaySetup};
    use crate::reach::Via;
    let t0 = Instant::now();
    let signer = std::sync::Arc::new(crate::identity::Identity::generate().unwrap());
    let relay = |public| RelaySetup {
        signer: signer.clone(),
        addr: None,
        public,
        unix_ms_at_epoch: 1,
    };
    // A relay at "the server's own address" with that address unknown: an owner of
    // another server could not find it, so the meeting is refused.
    let (mut a, _, r) = deployment(t0);
    a.set_relay(relay(None));
    connect(&mut a, t0, r, Via::Relayed, 3);
    assert!(matches!(
        &sent(&mut a)[..],
        [(
            _,
            Message::Rejected {
                reason: Reject::Unreachable,
                ..
            }
        )]
    ));
    assert!(forwards(&mut a, "B").is_empty());
    // Known: the owner is told where it is; the requester keeps "its server".
    let (mut a, mut b, r) = deployment(t0);
    let at = addr(999);
    a.set_relay(relay(Some(at)));
    connect(&mut a, t0, r, Via::Relayed, 3);
    assert!(matches!(
        &sent(&mut a)[..],
        [(
            _,
            Message::Connected {
                addr: None,
                ticket: Some(_),
                ..
            }
        )]
    ));
    for f in forwards(&mut a, "B") {
        b.handle_forward(t0, f);
    }
    assert!(matches!(
        &sent(&mut b)[..],
        [(_, Message::Dial { addr: Some(x), ticket: Some(_), .. })] if *x == at
    ));
    // B delivers only to its own online clients, and only a meeting's messages.
    let stray = |owner: &str, msg: Message| Forward::Deliver {
        owner: owner.into(),
        from: "A".into(),
        msg: msg.encode().unwrap(),
    };
    let before = b.stats().forwards_dropped;
    b.handle_forward(
        t0,
        stray(
            "R",
            Message::PunchPeer {
                id: [1; 16],
                peer: None,
            },
        ),
    );
    b.handle_forward(
        t0,
        stray(
            "nobody",
            Message::PunchPeer {
                id: [1; 16],
                peer: None,
            },
        ),
    );
    b.handle_forward(t0, stray("O", Message::Ack { req: 1, version: 0 }));
    assert!(sent(&mut b).is_empty());
    assert_eq!(b.stats().forwards_dropped, before + 3);
}

#[test]
fn a_server_on_its_own_refuses_a_meeting_with_another_servers_owner() {
    use crate::reach::Via;
    let t0 = Instant::now();
    let (mut a, mut b) = (
        Index::new(cfg(), vec![], t0, [1; 32]),
        Index::new(cfg(), vec![], t0, [2; 32]),
    );
    let mut db = MemoryStore::default();
    let r = register(&mut a, t0, addr(1), "R");
    register(&mut b, t0, addr(2), "O");
    replicate(&mut b, &mut db, &mut a, t0, "B");
    connect(&mut a, t0, r, Via::Reverse, 4);
    assert!(matches!(
        &sent(&mut a)[..],
        [(
            _,
            Message::Rejected {
                reason: Reject::Unreachable,
                ..
            }
        )]
    ));
    assert!(a.poll_forward().is_none());
}

#[test]
fn what_the_home_server_judged_of_an_owners_reach_is_shown_by_every_server() {
    use crate::reach::{Nat, Reach};
    let t0 = Instant::now();
    let (mut a, mut b) = (
        Index::new(cfg(), vec![], t0, [1; 32]),
        Index::new(cfg(), vec![], t0, [2; 32]),
    );
    b.set_server_id("B");
    let mut db = MemoryStore::default();
    register(&mut b, t0, addr(2), "O");
    replicate(&mut b, &mut db, &mut a, t0, "B");
    assert_eq!(a.owner_reach("O"), Some(Reach::default()), "untested");
    let t = b.poll_reach_test().expect("B tests O's TCP port");
    b.reach_tested(t0, &t, false);
    let v = a.version();
    replicate(&mut b, &mut db, &mut a, t0, "B");
    let judged = Reach {
        tcp: Some(false),
        nat: Nat::Unknown,
    };
    assert_eq!(a.owner_reach("O"), Some(judged));
    assert!(a.version() > v, "A's clients are told");
    assert!(
        a.delta(v).iter().any(|i| matches!(
            i,
            Item::Reach { owner, tcp: Some(false), .. } if owner == "O"
        )),
        "{:?}",
        a.delta(v)
    );
    assert!(
        !a.delta(v).iter().any(|i| matches!(i, Item::Record { .. })),
        "a change of reach alone does not send the record again: {:?}",
        a.delta(v)
    );
    // The same row again changes nothing.
    let v = a.version();
    for rec in db.load().unwrap() {
        a.apply_remote(t0, rec, "B");
    }
    assert_eq!(a.version(), v);
}
