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
    let touched: std::collections::BTreeSet<String> = ops
        .iter()
        .map(|op| match op {
            StoreOp::Owner(r) => r.name.clone(),
            StoreOp::Files { owner, .. }
            | StoreOp::ClearFiles { owner }
            | StoreOp::Record { owner, .. } => owner.clone(),
        })
        .collect();
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
