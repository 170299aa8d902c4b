//! The index and client cores driven together over a simulated network with a fake
//! clock: loss, duplication and reordering are injected from a seeded generator, time
//! jumps from deadline to deadline, and nothing sleeps.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use std::sync::Arc;

use super::*;
use crate::client::core::{self as cc, ClientCore, Event};
use crate::identity::{self, Identity};
use crate::proto::{FileEntry, Proof};
use crate::store::{MemoryStore, OwnerRow, Store};

const MS: Duration = Duration::from_millis(1);

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 20000 + i as u16)
}

/// A tiny deterministic generator for fault injection (no clock, no OS).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

#[derive(Clone, Copy, Debug)]
enum Dest {
    /// To the server, from client `from`.
    Server {
        from: usize,
    },
    Client(usize),
}

struct Sim {
    now: Instant,
    index: Index,
    store: MemoryStore,
    clients: Vec<ClientCore>,
    events: Vec<Vec<Event>>,
    /// (deliver at, destination, bytes).
    wire: Vec<(Instant, Dest, Vec<u8>)>,
    loss: u64,
    dup: u64,
    rng: Lcg,
    latency: Duration,
    ids: Vec<Arc<Identity>>,
}

impl Sim {
    fn new(n: usize) -> Sim {
        Sim::with_config(n, Config::default())
    }

    fn with_config(n: usize, cfg: Config) -> Sim {
        let now = Instant::now();
        let ids: Vec<Arc<Identity>> = (0..n)
            .map(|_| Arc::new(Identity::generate().unwrap()))
            .collect();
        let clients = (0..n)
            .map(|i| {
                ClientCore::new(
                    cc::Config {
                        name: format!("c{i}"),
                        tcp_port: 1400 + i as u16,
                        retry: cfg.retry,
                        heartbeat: cfg.heartbeat,
                        advertise: None,
                        identity: Some(ids[i].clone()),
                        evict: true,
                    },
                    i as u64 * 1000 + 7,
                )
            })
            .collect();
        Sim {
            now,
            index: Index::new(cfg, Vec::new(), now, [7; 32]),
            store: MemoryStore::default(),
            clients,
            events: vec![Vec::new(); n],
            wire: Vec::new(),
            loss: 0,
            dup: 0,
            rng: Lcg(42),
            latency: MS,
            ids,
        }
    }

    fn put(&mut self, to: Dest, bytes: Vec<u8>) {
        if self.rng.chance(self.loss) {
            return;
        }
        // Reordering: each datagram gets its own jittered latency.
        let jitter = Duration::from_micros(self.rng.next() % 3000);
        let at = self.now + self.latency + jitter;
        if self.rng.chance(self.dup) {
            self.wire.push((at + MS, to, bytes.clone()));
        }
        self.wire.push((at, to, bytes));
    }

    /// Moves everything queued in the machines onto the wire.
    fn collect(&mut self) {
        let ops = self.index.take_store_ops();
        self.store.commit(&ops).unwrap();
        while let Some((dst, bytes)) = self.index.poll_transmit() {
            let i = (dst.port() - 20000) as usize;
            self.put(Dest::Client(i), bytes);
        }
        for i in 0..self.clients.len() {
            while let Some(b) = self.clients[i].poll_transmit() {
                self.put(Dest::Server { from: i }, b);
            }
            while let Some(e) = self.clients[i].poll_event() {
                self.events[i].push(e);
            }
        }
    }

    /// Advances the fake clock to the next event and processes it. False when idle.
    fn step(&mut self, until: Instant) -> bool {
        self.collect();
        let next_wire = self.wire.iter().map(|w| w.0).min();
        let next_timer = std::iter::once(self.index.poll_timeout())
            .chain(self.clients.iter().map(|c| c.poll_timeout()))
            .flatten()
            .min();
        let Some(next) = [next_wire, next_timer].into_iter().flatten().min() else {
            return false;
        };
        if next > until {
            self.now = until;
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        let (due, rest): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|w| w.0 <= now);
        self.wire = rest;
        for (_, to, bytes) in due {
            match to {
                Dest::Server { from } => self.index.handle_datagram(now, addr(from), &bytes),
                Dest::Client(i) => self.clients[i].handle_datagram(now, &bytes),
            }
        }
        if self.index.poll_timeout().is_some_and(|t| t <= now) {
            self.index.handle_timeout(now);
        }
        for c in &mut self.clients {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
        self.collect();
        true
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
        self.now = self.now.max(until);
    }

    fn saw(&self, i: usize, e: &Event) -> bool {
        self.events[i].contains(e)
    }

    fn rows(&self, i: usize) -> BTreeSet<(String, String)> {
        self.clients[i]
            .table()
            .rows()
            .into_iter()
            .map(|r| (r.file, r.owner))
            .collect()
    }

    /// What the server says every online client should see.
    fn server_rows(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for i in 0..self.clients.len() {
            let name = format!("c{i}");
            if let Some((true, files)) = self.index.owner_files(&name) {
                out.extend(files.into_iter().map(|f| (f, name.clone())));
            }
        }
        out
    }
}

/// Index settings with the given liveness timing.
fn liveness(heartbeat: Duration, offline_after: Duration) -> Config {
    Config {
        heartbeat,
        offline_after,
        ..Config::default()
    }
}

/// Two registered clients; `c0` has offered `a` and everyone has seen it.
fn two_clients_c0_offers_a(cfg: Config) -> Sim {
    let mut sim = Sim::with_config(2, cfg);
    register_all(&mut sim);
    sim.clients[0].offer(sim.now, &entries(&["a"])).unwrap();
    sim.run_for(100 * MS);
    sim
}

fn files(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn entries(names: &[&str]) -> Vec<FileEntry> {
    names.iter().map(|s| FileEntry::named(*s)).collect()
}

fn register_all(sim: &mut Sim) {
    for i in 0..sim.clients.len() {
        sim.clients[i].register(sim.now);
    }
    sim.run_for(100 * MS);
    for i in 0..sim.clients.len() {
        assert!(
            sim.saw(i, &Event::Registered),
            "client {i}: {:?}",
            sim.events[i]
        );
    }
}

#[test]
fn offer_reaches_everyone_including_the_offerer() {
    let mut sim = Sim::new(3);
    register_all(&mut sim);
    let op = sim.clients[1]
        .offer(sim.now, &entries(&["foo", "bar"]))
        .unwrap();
    sim.run_for(100 * MS);
    assert!(sim.saw(1, &Event::OfferDone(op)));
    let want: BTreeSet<_> = [("bar".into(), "c1".into()), ("foo".into(), "c1".into())].into();
    for i in 0..3 {
        assert_eq!(sim.rows(i), want, "client {i}");
        assert!(sim.saw(i, &Event::TableUpdated));
    }
}

#[test]
fn retransmitted_register_is_welcomed_again_not_rejected() {
    let mut sim = Sim::new(1);
    sim.clients[0].register(sim.now);
    sim.collect();
    // Deliver the REGISTER twice, as a retransmission after a lost welcome would.
    let (at, to, bytes) = sim.wire[0].clone();
    sim.wire.push((at + MS, to, bytes));
    sim.run_for(50 * MS);
    assert!(sim.saw(0, &Event::Registered));
    assert!(
        !sim.events[0]
            .iter()
            .any(|e| matches!(e, Event::RegisterRejected(_))),
        "{:?}",
        sim.events[0]
    );
    assert_eq!(sim.index.stats().registrations, 1, "applied once");
}

#[test]
fn name_in_use_is_rejected_and_offline_name_can_be_taken() {
    let mut sim = Sim::new(2);
    sim.clients[0] = core_at("same", 1, Duration::from_secs(10), None, 1);
    sim.clients[1] = core_at("same", 2, Duration::from_secs(10), None, 2);
    sim.clients[0].register(sim.now);
    sim.run_for(50 * MS);
    sim.clients[1].register(sim.now);
    sim.run_for(50 * MS);
    assert!(sim.saw(0, &Event::Registered));
    assert!(sim.saw(1, &Event::RegisterRejected(Reject::NameInUse)));
    // After the holder leaves, the name is free; address and port follow the new holder.
    assert!(sim.clients[0].dereg(sim.now));
    sim.run_for(50 * MS);
    assert!(sim.saw(0, &Event::Deregistered));
    sim.clients[1].register(sim.now);
    sim.run_for(50 * MS);
    assert!(sim.saw(1, &Event::Registered));
    let o = &sim.clients[1].table().owner("same").cloned().unwrap();
    assert_eq!(o.tcp_port, 2);
}

#[test]
fn server_unreachable_fails_after_three_retries_500ms_apart() {
    let mut sim = Sim::new(1);
    sim.loss = 100;
    sim.clients[0].register(sim.now);
    // Sent at 0, 500, 1000, 1500; given up at 2000, not before.
    sim.run_for(1999 * MS);
    assert!(sim.events[0].is_empty());
    sim.run_for(2 * MS);
    assert_eq!(sim.events[0], vec![Event::RegisterTimedOut]);
}

#[test]
fn dereg_hides_offers_and_reg_restores_them() {
    let mut sim = Sim::new(2);
    register_all(&mut sim);
    sim.clients[0].offer(sim.now, &entries(&["a"])).unwrap();
    sim.run_for(100 * MS);
    assert_eq!(sim.rows(1).len(), 1);
    sim.clients[0].dereg(sim.now);
    sim.run_for(100 * MS);
    assert!(sim.rows(1).is_empty(), "offline owner's files are hidden");
    assert_eq!(
        sim.index.owner_files("c0"),
        Some((false, files(&["a"]))),
        "but kept"
    );
    sim.clients[0].register(sim.now);
    sim.run_for(100 * MS);
    assert_eq!(sim.rows(1).len(), 1, "restored for everyone");
    assert_eq!(sim.rows(0).len(), 1);
}

#[test]
fn fresh_process_taking_an_offline_name_does_not_inherit_offers() {
    let mut sim = Sim::new(2);
    register_all(&mut sim);
    sim.clients[0].offer(sim.now, &entries(&["a"])).unwrap();
    sim.run_for(100 * MS);
    sim.clients[0].dereg(sim.now);
    sim.run_for(100 * MS);
    // A new process (fresh core) under the same name, with the name's key.
    sim.clients[0] = core_at(
        "c0",
        9,
        Duration::from_secs(10),
        Some(sim.ids[0].clone()),
        99,
    );
    sim.clients[0].register(sim.now);
    sim.run_for(100 * MS);
    assert_eq!(sim.index.owner_files("c0"), Some((true, vec![])));
    assert!(sim.rows(1).is_empty());
}

#[test]
fn pushes_are_retransmitted_then_given_up_and_heartbeat_resyncs() {
    let cfg = liveness(Duration::from_millis(3000), Duration::from_secs(60));
    let mut sim = Sim::with_config(2, cfg);
    register_all(&mut sim);
    // Cut client 1 off completely, then offer.
    sim.loss = 0;
    sim.clients[0].offer(sim.now, &entries(&["x"])).unwrap();
    sim.collect();
    let before = sim.index.stats().table_parts_sent;
    // Drop everything to/from client 1 for 2.5 s.
    let until = sim.now + 2500 * MS;
    while sim.now < until {
        sim.wire
            .retain(|w| !matches!(w.1, Dest::Client(1) | Dest::Server { from: 1 }));
        if !sim.step(until) {
            break;
        }
    }
    let sent = sim.index.stats().table_parts_sent - before;
    // Client 0 got its push at once; client 1's was sent once and retried 3 times.
    assert!(sent >= 5, "sent {sent}");
    assert!(sim.rows(1).is_empty());
    // Connectivity back: the next heartbeat reports the old version and resyncs.
    sim.run_for(4000 * MS);
    assert_eq!(sim.rows(1), sim.server_rows());
}

#[test]
fn a_burst_of_changes_costs_one_push_per_client() {
    let mut sim = Sim::new(5);
    register_all(&mut sim);
    let before = sim.index.stats().table_parts_sent;
    for i in 0..5 {
        sim.clients[i].offer(sim.now, &entries(&["f"])).unwrap();
    }
    sim.run_for(200 * MS);
    let sent = sim.index.stats().table_parts_sent - before;
    // The push waits for the signed records that follow the offers' acks: the files
    // and their signatures reach each client together.
    assert_eq!(
        sent, 5,
        "five offers and their records in one push: one part per client"
    );
    for i in 0..5 {
        assert_eq!(sim.rows(i).len(), 5);
    }
}

/// Offers from every client, one attempt every 2 ms for `d` (one in flight per client);
/// the table parts the index sent meanwhile, and the most sent in one 2 ms step.
fn stream_of_offers(sim: &mut Sim, d: Duration) -> (u64, u64) {
    let start = sim.index.stats().table_parts_sent;
    let end = sim.now + d;
    let (mut k, mut most) = (0, 0);
    while sim.now < end {
        let i = k % sim.clients.len();
        let _ = sim.clients[i].offer(sim.now, &entries(&[&format!("f{k}")]));
        k += 1;
        let before = sim.index.stats().table_parts_sent;
        sim.run_for(2 * MS);
        most = most.max(sim.index.stats().table_parts_sent - before);
    }
    (sim.index.stats().table_parts_sent - start, most)
}

#[test]
fn under_a_stream_of_changes_pushes_keep_to_the_budget_and_a_quiet_change_goes_at_once() {
    let cfg = |budget| Config {
        push_budget: budget,
        ..Config::default()
    };
    // Unlimited: about one push per change and client.
    let mut free = Sim::with_config(5, cfg(0));
    register_all(&mut free);
    let (unlimited, _) = stream_of_offers(&mut free, 1000 * MS);
    // 50 parts a second (a burst of 10), same stream.
    let mut sim = Sim::with_config(5, cfg(50));
    register_all(&mut sim);
    sim.run_for(1000 * MS);
    let (budgeted, round) = stream_of_offers(&mut sim, 1000 * MS);
    // A round goes whole (each owner's signed record grows with its files, so a round
    // grows too), so the budget may be overdrawn by one round.
    assert!(
        budgeted <= 50 + 10 + round,
        "{budgeted} parts in 1 s, rounds up to {round}"
    );
    assert!(
        unlimited > 4 * budgeted,
        "{unlimited} parts unlimited, {budgeted} budgeted"
    );
    // Nothing is lost: once the stream stops, every table equals the server's.
    sim.run_for(1000 * MS);
    for i in 0..5 {
        assert_eq!(sim.rows(i), sim.server_rows(), "client {i}");
    }
    assert!(sim.server_rows().len() > 100);
    // A quiet table's change is not held back by the budget: it arrives (after its
    // signed record, one round trip) within a few milliseconds.
    sim.run_for(1000 * MS);
    sim.clients[0].offer(sim.now, &entries(&["quiet"])).unwrap();
    sim.run_for(30 * MS);
    for i in 0..5 {
        assert!(
            sim.rows(i).contains(&("quiet".into(), "c0".into())),
            "client {i}"
        );
    }
}

/// A table far larger than the push window reaches a client whole, the window's worth
/// at a time: a lost window is sent again, then acknowledgements clock the rest.
#[test]
fn a_large_table_is_pushed_a_window_at_a_time() {
    let mut sim = Sim::new(1);
    register_all(&mut sim);
    sim.run_for(100 * MS);
    let files: Vec<crate::store::FileRow> = (0..2000)
        .map(|i| crate::store::FileRow {
            name: format!("a-rather-long-file-name-number-{i:05}.dat"),
            ver: 0,
            size: i,
            hash: [i as u8; 32],
            files: 0,
        })
        .collect();
    let big = OwnerRecord {
        row: OwnerRow {
            name: "big".into(),
            addr: "192.0.2.1:5000".parse().unwrap(),
            peer_ip: "192.0.2.1".parse().unwrap(),
            tcp_port: 6000,
            online: true,
            token: 1,
            instance: 1,
            ver: 0,
            key: None,
            reach: Default::default(),
        },
        files,
        record: None,
        record_ver: 0,
    };
    // Everything to the client is lost for a while: only the first window goes out.
    sim.loss = 100;
    let before = sim.index.stats().table_parts_sent;
    sim.index.apply_remote(sim.now, big, "s2");
    sim.run_for(100 * MS);
    assert_eq!(
        sim.index.stats().table_parts_sent - before,
        push::PUSH_WINDOW as u64
    );
    sim.loss = 0;
    sim.run_for(3000 * MS);
    let sent = sim.index.stats().table_parts_sent - before;
    assert_eq!(sim.rows(0).len(), 2000);
    assert!(
        sent > 3 * push::PUSH_WINDOW as u64,
        "the table took {sent} parts: more than a window's worth"
    );
}

#[test]
fn silent_client_goes_offline_and_everyone_is_told() {
    let cfg = liveness(Duration::from_millis(100), Duration::from_millis(300));
    let mut sim = Sim::with_config(2, cfg);
    register_all(&mut sim);
    sim.clients[0].offer(sim.now, &entries(&["a"])).unwrap();
    sim.run_for(100 * MS);
    assert_eq!(sim.rows(1).len(), 1);
    // Client 0 crashes: replace it by a core that never registered (sends nothing).
    sim.clients[0] = core_at("dead", 1, Duration::from_secs(100), None, 5);
    sim.run_for(500 * MS);
    assert_eq!(sim.index.owner_files("c0").map(|o| o.0), Some(false));
    assert!(sim.rows(1).is_empty());
}

#[test]
fn wrong_token_or_spoofed_address_changes_nothing() {
    let mut sim = Sim::new(2);
    register_all(&mut sim);
    let v = sim.index.version();
    // Guessed token from client 1's address.
    let forged = Message::Offer {
        req: 1,
        token: 12345,
        files: entries(&["evil"]),
    }
    .encode()
    .unwrap();
    sim.index.handle_datagram(sim.now, addr(1), &forged);
    // Client 0's real token, but from client 1's address: take it from the index.
    let token0 = sim.index.owners[sim.index.by_name["c0"]].token;
    let spoof = Message::Dereg {
        req: 2,
        token: token0,
    }
    .encode()
    .unwrap();
    sim.index.handle_datagram(sim.now, addr(1), &spoof);
    assert_eq!(sim.index.version(), v);
    assert_eq!(sim.index.owner_files("c0"), Some((true, vec![])));
    let replies: Vec<Message> = std::iter::from_fn(|| sim.index.poll_transmit())
        .map(|(_, b)| Message::decode(&b).unwrap())
        .collect();
    assert_eq!(
        replies,
        vec![
            Message::Rejected {
                req: 1,
                reason: Reject::NotRegistered
            },
            Message::Rejected {
                req: 2,
                reason: Reject::NotRegistered
            }
        ]
    );
}

#[test]
fn unverified_registration_gets_no_table_pushes() {
    let mut sim = Sim::new(1);
    register_all(&mut sim);
    // A registration whose source never answers (spoofed victim address).
    let reg = keyless_register("victim", 1);
    let victim = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), 9);
    sim.index.handle_datagram(sim.now, victim, &reg);
    sim.index.handle_timeout(sim.now + 100 * MS);
    let to_victim: Vec<usize> = std::iter::from_fn(|| sim.index.poll_transmit())
        .filter(|(a, _)| *a == victim)
        .map(|(_, b)| b.len())
        .collect();
    assert_eq!(to_victim.len(), 1, "only the welcome");
    // The one answer larger than its request (docs/PROTOCOL.md §1.7): a Welcome
    // exceeds a key-less Register by at most 10 bytes, once, and pushes nothing.
    assert!(
        to_victim[0] <= reg.len() + 10,
        "{} for {}",
        to_victim[0],
        reg.len()
    );
}

#[test]
fn three_hundred_long_names_reach_a_newcomer_whole() {
    let mut sim = Sim::new(2);
    sim.clients[0].register(sim.now);
    sim.run_for(50 * MS);
    let names: Vec<FileEntry> = (0..300)
        .map(|i| FileEntry::named(format!("{i:0>100}")))
        .collect();
    let op = sim.clients[0].offer(sim.now, &names).unwrap();
    sim.run_for(100 * MS);
    assert!(sim.saw(0, &Event::OfferDone(op)));
    sim.clients[1].register(sim.now);
    sim.run_for(200 * MS);
    assert_eq!(sim.rows(1).len(), 300);
}

#[test]
fn restart_from_store_keeps_every_acknowledged_change() {
    let mut sim = Sim::new(2);
    register_all(&mut sim);
    sim.clients[0]
        .offer(sim.now, &entries(&["a", "b"]))
        .unwrap();
    sim.clients[1].offer(sim.now, &entries(&["c"])).unwrap();
    sim.run_for(100 * MS);
    let version = sim.index.version();
    let records = sim.store.load().unwrap();
    let restarted = Index::new(Config::default(), records, sim.now, [1; 32]);
    assert_eq!(restarted.version(), version);
    assert_eq!(
        restarted.owner_files("c0"),
        Some((true, files(&["a", "b"])))
    );
    assert_eq!(restarted.owner_files("c1"), Some((true, files(&["c"]))));
}

#[test]
fn heartbeats_survive_a_server_restart_with_the_same_session() {
    let cfg = liveness(Duration::from_millis(200), Duration::from_millis(600));
    let mut sim = two_clients_c0_offers_a(cfg.clone());
    let records = sim.store.load().unwrap();
    sim.index = Index::new(cfg, records, sim.now, [3; 32]);
    sim.run_for(2000 * MS);
    assert_eq!(sim.index.owner_files("c0"), Some((true, files(&["a"]))));
    assert_eq!(sim.rows(1), sim.server_rows());
    assert!(!sim.events[0].contains(&Event::ServerLost));
}

#[test]
fn a_server_that_forgot_us_gets_us_back_with_our_offers() {
    let cfg = liveness(Duration::from_millis(200), Duration::from_millis(600));
    let mut sim = two_clients_c0_offers_a(cfg.clone());
    // Restart with an empty store (nothing durable).
    sim.index = Index::new(cfg, Vec::new(), sim.now, [4; 32]);
    sim.run_for(2000 * MS);
    assert!(sim.saw(0, &Event::ServerBack));
    assert_eq!(sim.index.owner_files("c0"), Some((true, files(&["a"]))));
    assert_eq!(sim.rows(1), sim.server_rows());
    assert_eq!(sim.rows(1).len(), 1);
}

#[test]
fn converges_under_heavy_loss_duplication_and_reordering() {
    let cfg = liveness(Duration::from_millis(300), Duration::from_secs(30));
    let mut sim = Sim::with_config(6, cfg);
    sim.loss = 30;
    sim.dup = 10;
    for i in 0..6 {
        sim.clients[i].register(sim.now);
    }
    // Each registration ends within two retry budgets (2 s each: the challenge round,
    // then the proof), one way or the other.
    sim.run_for(4100 * MS);
    for i in 0..6 {
        assert!(
            sim.events[i]
                .iter()
                .any(|e| matches!(e, Event::Registered | Event::RegisterTimedOut)),
            "client {i}: {:?}",
            sim.events[i]
        );
        if sim.clients[i].state() != cc::State::Online {
            sim.clients[i].register(sim.now); // the user tries again
        }
    }
    sim.run_for(2100 * MS);
    let mut started = vec![Vec::new(); 6];
    for round in 0..5 {
        for (i, ops) in started.iter_mut().enumerate() {
            if let Some(op) =
                sim.clients[i].offer(sim.now, &[FileEntry::named(format!("f{round}-{i}"))])
            {
                ops.push(op);
            }
        }
        // Longer than the retry budget: every offer has ended by the next round.
        sim.run_for(2100 * MS);
    }
    assert!(started.iter().map(Vec::len).sum::<usize>() >= 20);
    for (i, ops) in started.iter().enumerate() {
        for op in ops {
            assert!(
                sim.events[i].iter().any(|e| matches!(e,
                    Event::OfferDone(o) | Event::OfferFailed(o, _) if o == op)),
                "client {i} offer {op} never ended"
            );
        }
    }
    // Loss stops: within 3 s every online client's table equals the server's.
    sim.loss = 0;
    sim.dup = 0;
    sim.run_for(3000 * MS);
    let want = sim.server_rows();
    for i in 0..6 {
        if sim.clients[i].state() == cc::State::Online {
            assert_eq!(sim.rows(i), want, "client {i}");
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic_the_index(
        datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1300), 0..50)
    ) {
        let now = Instant::now();
        let mut ix = Index::new(Config::default(), Vec::new(), now, [0; 32]);
        for (i, d) in datagrams.iter().enumerate() {
            ix.handle_datagram(now, addr(i % 4), d);
            let mut framed = vec![b'F', b'A', crate::proto::VERSION];
            framed.extend_from_slice(d);
            ix.handle_datagram(now, addr(i % 4), &framed);
        }
        ix.handle_timeout(now + Duration::from_secs(100));
        while ix.poll_transmit().is_some() {}
    }
}

/// A key-less registration of `name` as request `req` (its instance too).
fn keyless_register(name: &str, req: u64) -> Vec<u8> {
    Message::Register {
        req,
        name: name.into(),
        instance: req,
        tcp_port: 1,
        keep_offers: false,
        advertise: None,
        key: None,
        proof: None,
        evict: false,
    }
    .encode()
    .unwrap()
}

fn register_raw(ix: &mut Index, now: Instant, src: SocketAddr, name: &str, req: u64) -> Message {
    let reg = keyless_register(name, req);
    ix.handle_datagram(now, src, &reg);
    let (_, reply) = ix.poll_transmit().expect("a reply");
    Message::decode(&reply).unwrap()
}

#[test]
fn rate_limit_drops_a_flood_from_one_source_but_not_others() {
    let cfg = Config {
        rate_limit: 10,
        ..Config::default()
    };
    let now = Instant::now();
    let mut ix = Index::new(cfg, Vec::new(), now, [0; 32]);
    let hb = Message::Heartbeat {
        req: 1,
        token: 1,
        table_version: 0,
    }
    .encode()
    .unwrap();
    for _ in 0..100 {
        ix.handle_datagram(now, addr(1), &hb);
    }
    assert_eq!(
        ix.stats().rate_limited,
        80,
        "burst of 2x the rate, then dropped"
    );
    let answered = std::iter::from_fn(|| ix.poll_transmit()).count();
    assert_eq!(
        answered, 20,
        "each accepted one refused (unknown token), no more"
    );
    // Another source is unaffected, and the bucket refills with time.
    assert!(matches!(
        register_raw(&mut ix, now, addr(2), "x", 5),
        Message::Welcome { .. }
    ));
    while ix.poll_transmit().is_some() {}
    ix.handle_datagram(now + Duration::from_secs(1), addr(1), &hb);
    assert_eq!(ix.stats().rate_limited, 80);
}

#[test]
fn limits_on_files_per_client_and_clients_per_address() {
    let cfg = Config {
        max_files_per_client: 3,
        max_clients_per_ip: 2,
        ..Config::default()
    };
    let now = Instant::now();
    let mut ix = Index::new(cfg, Vec::new(), now, [0; 32]);
    let Message::Welcome { token, .. } = register_raw(&mut ix, now, addr(1), "a", 1) else {
        panic!()
    };
    assert!(matches!(
        register_raw(&mut ix, now, addr(2), "b", 2),
        Message::Welcome { .. }
    ));
    // Third client from the same IP address (127.0.0.1).
    assert_eq!(
        register_raw(&mut ix, now, addr(3), "c", 3),
        Message::Rejected {
            req: 3,
            reason: Reject::LimitExceeded
        }
    );
    let offer = |req, files: &[&str]| {
        Message::Offer {
            req,
            token,
            files: files.iter().map(|s| FileEntry::named(*s)).collect(),
        }
        .encode()
        .unwrap()
    };
    ix.handle_datagram(now, addr(1), &offer(10, &["1", "2", "3"]));
    ix.handle_datagram(now, addr(1), &offer(11, &["4"]));
    ix.handle_datagram(now, addr(1), &offer(12, &["../x"]));
    let replies: Vec<Message> = std::iter::from_fn(|| ix.poll_transmit())
        .map(|(_, b)| Message::decode(&b).unwrap())
        .collect();
    assert!(matches!(replies[0], Message::Ack { req: 10, .. }));
    assert_eq!(
        replies[1],
        Message::Rejected {
            req: 11,
            reason: Reject::LimitExceeded
        }
    );
    assert_eq!(
        replies[2],
        Message::Rejected {
            req: 12,
            reason: Reject::InvalidName
        }
    );
    assert_eq!(ix.owner_files("a").unwrap().1.len(), 3);
}

#[test]
fn oversized_and_malformed_datagrams_are_dropped_and_counted_unanswered() {
    let now = Instant::now();
    let mut ix = Index::new(Config::default(), Vec::new(), now, [0; 32]);
    ix.handle_datagram(now, addr(1), &[0u8; 1201]);
    ix.handle_datagram(now, addr(1), b"FA\x01\xff\xff");
    ix.handle_datagram(now, addr(1), b"hello");
    assert_eq!(ix.stats().malformed, 3);
    assert!(ix.poll_transmit().is_none(), "never answered");
}

#[test]
fn duplicate_offer_is_answered_but_takes_no_version() {
    let now = Instant::now();
    let mut ix = Index::new(Config::default(), Vec::new(), now, [0; 32]);
    let Message::Welcome { token, .. } = register_raw(&mut ix, now, addr(1), "a", 1) else {
        panic!()
    };
    let offer = Message::Offer {
        req: 7,
        token,
        files: vec![FileEntry::named("f")],
    }
    .encode()
    .unwrap();
    ix.handle_datagram(now, addr(1), &offer);
    let v = ix.version();
    ix.handle_datagram(now, addr(1), &offer);
    assert_eq!(ix.version(), v);
    let acks: Vec<Message> = std::iter::from_fn(|| ix.poll_transmit())
        .map(|(_, b)| Message::decode(&b).unwrap())
        .collect();
    assert_eq!(
        acks,
        vec![
            Message::Ack { req: 7, version: v },
            Message::Ack { req: 7, version: v }
        ]
    );
}

fn core_with(name: &str, id: Option<Arc<Identity>>, seed: u64) -> ClientCore {
    core_at(name, 7, Duration::from_secs(10), id, seed)
}

/// A client core as a restarted or second process would make it.
fn core_at(
    name: &str,
    tcp_port: u16,
    heartbeat: Duration,
    identity: Option<Arc<Identity>>,
    seed: u64,
) -> ClientCore {
    ClientCore::new(
        cc::Config {
            name: name.into(),
            tcp_port,
            retry: RetryPolicy::default(),
            heartbeat,
            advertise: None,
            identity,
            evict: true,
        },
        seed,
    )
}

#[test]
fn the_same_key_takes_its_name_back_at_once_after_a_crash() {
    let mut sim = Sim::new(2);
    register_all(&mut sim);
    sim.clients[0].offer(sim.now, &entries(&["a"])).unwrap();
    sim.run_for(100 * MS);
    // Client 0 crashes (the server still thinks it is online) and restarts at once.
    sim.clients[0] = core_with("c0", Some(sim.ids[0].clone()), 77);
    sim.events[0].clear();
    sim.clients[0].register(sim.now);
    sim.run_for(100 * MS);
    assert_eq!(sim.events[0].first(), Some(&Event::Registered));
    assert_eq!(sim.index.owner_files("c0").map(|o| o.0), Some(true));
}

#[test]
fn a_second_live_process_with_the_same_key_does_not_evict_an_online_session() {
    let mut sim = Sim::new(1);
    register_all(&mut sim);
    let mut second = core_with("c0", Some(sim.ids[0].clone()), 80);
    second.cfg_evict_for_tests(false);
    sim.clients.push(second);
    sim.events.push(Vec::new());
    sim.clients[1].register(sim.now);
    sim.run_for(100 * MS);
    assert_eq!(
        sim.events[1],
        vec![Event::RegisterRejected(Reject::NameInUse)]
    );
    // Once the first goes offline (dereg, still running) the name is free for it.
    sim.clients[0].dereg(sim.now);
    sim.run_for(100 * MS);
    sim.clients[1].register(sim.now);
    sim.run_for(100 * MS);
    assert!(sim.saw(1, &Event::Registered));
}

#[test]
fn another_key_is_refused_the_name_online_or_offline() {
    let mut sim = Sim::new(2);
    register_all(&mut sim);
    let thief = Arc::new(Identity::generate().unwrap());
    sim.clients[1] = core_with("c0", Some(thief.clone()), 78);
    sim.events[1].clear();
    sim.clients[1].register(sim.now);
    sim.run_for(100 * MS);
    assert_eq!(
        sim.events[1],
        vec![Event::RegisterRejected(Reject::NameInUse)]
    );
    // Offline makes no difference: the name belongs to c0's key.
    sim.clients[0].dereg(sim.now);
    sim.run_for(100 * MS);
    sim.events[1].clear();
    sim.clients[1].register(sim.now);
    sim.run_for(100 * MS);
    assert_eq!(
        sim.events[1],
        vec![Event::RegisterRejected(Reject::NameInUse)]
    );
    // Nor can a client without a key take it.
    sim.clients[1] = core_with("c0", None, 79);
    sim.events[1].clear();
    sim.clients[1].register(sim.now);
    sim.run_for(100 * MS);
    assert_eq!(
        sim.events[1],
        vec![Event::RegisterRejected(Reject::NameInUse)]
    );
}

#[test]
fn proofs_are_bound_to_the_session_the_nonce_the_address_and_every_field() {
    let now = Instant::now();
    let mut ix = Index::new(Config::default(), Vec::new(), now, [5; 32]);
    let id = Identity::generate().unwrap();
    let key = id.public_key();
    let session = [1u8; 32];
    let reg = |req, proof, keep_offers| {
        Message::Register {
            req,
            name: "B".into(),
            instance: 1,
            tcp_port: 5,
            keep_offers,
            advertise: None,
            key: Some(key),
            proof,
            evict: true,
        }
        .encode()
        .unwrap()
    };
    let reply = |ix: &mut Index, from, binding: &[u8; 32], bytes: Vec<u8>| {
        ix.handle_message(now, addr(from), binding, &bytes);
        Message::decode(&ix.poll_transmit().unwrap().1).unwrap()
    };
    let Message::Challenge { req: 1, nonce } = reply(&mut ix, 1, &session, reg(1, None, false))
    else {
        panic!("no challenge")
    };
    let signed = identity::Registration {
        binding: &session,
        nonce: &nonce,
        name: "B",
        instance: 1,
        tcp_port: 5,
        keep_offers: false,
        advertise: None,
        key: &key,
        evict: true,
    };
    let proof = |r: &identity::Registration<'_>| {
        Some(Proof {
            nonce,
            sig: id.sign_registration(r),
        })
    };
    let refused = |req| Message::Rejected {
        req,
        reason: Reject::BadProof,
    };
    // A good signature replayed from another address: the nonce is not its own.
    assert_eq!(
        reply(&mut ix, 2, &session, reg(2, proof(&signed), false)),
        refused(2)
    );
    // The same proof in another session (another handshake hash).
    assert_eq!(
        reply(&mut ix, 1, &[2u8; 32], reg(3, proof(&signed), false)),
        refused(3)
    );
    // A field rewritten on the path: the proof does not cover `keep_offers = true`.
    assert_eq!(
        reply(&mut ix, 1, &session, reg(4, proof(&signed), true)),
        refused(4)
    );
    // A signature over other fields.
    let other = identity::Registration {
        instance: 2,
        ..signed
    };
    assert_eq!(
        reply(&mut ix, 1, &session, reg(5, proof(&other), false)),
        refused(5)
    );
    assert!(matches!(
        reply(&mut ix, 1, &session, reg(6, proof(&signed), false)),
        Message::Welcome { req: 6, .. }
    ));
    // The nonce expires after one to two periods.
    let late = now + 2 * NONCE_PERIOD + MS;
    ix.handle_message(late, addr(3), &session, &reg(7, proof(&signed), false));
    while let Some((_, b)) = ix.poll_transmit() {
        assert_eq!(Message::decode(&b).unwrap(), refused(7));
    }
}

#[test]
fn a_server_that_requires_keys_refuses_a_keyless_registration() {
    let now = Instant::now();
    let cfg = Config {
        require_key: true,
        ..Config::default()
    };
    let mut ix = Index::new(cfg, Vec::new(), now, [5; 32]);
    ix.handle_datagram(now, addr(1), &keyless_register("A", 1));
    let (_, b) = ix.poll_transmit().unwrap();
    assert_eq!(
        Message::decode(&b).unwrap(),
        Message::Rejected {
            req: 1,
            reason: Reject::BadProof
        }
    );
    assert_eq!(ix.owners(), 0);
}

#[test]
fn the_store_never_holds_a_live_token_and_a_restored_session_comes_back_with_it() {
    let now = Instant::now();
    let mut ix = Index::new(Config::default(), Vec::new(), now, [5; 32]);
    ix.handle_datagram(now, addr(1), &keyless_register("A", 1));
    let Message::Welcome { token, .. } = Message::decode(&ix.poll_transmit().unwrap().1).unwrap()
    else {
        panic!("no welcome")
    };
    let rows: Vec<OwnerRow> = ix
        .take_store_ops()
        .into_iter()
        .filter_map(|op| match op {
            StoreOp::Owner(r) => Some(r),
            _ => None,
        })
        .collect();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.token != token));
    // A server restarted from those rows knows the session by the token's digest.
    let records = vec![OwnerRecord {
        row: rows.last().unwrap().clone(),
        files: Vec::new(),
        record: None,
        record_ver: 0,
    }];
    let mut back = Index::new(Config::default(), records.clone(), now, [6; 32]);
    let hb = |token| {
        Message::Heartbeat {
            req: 9,
            token,
            table_version: 0,
        }
        .encode()
        .unwrap()
    };
    // The stored digest itself is no token.
    back.handle_datagram(now, addr(1), &hb(rows.last().unwrap().token));
    assert!(matches!(
        Message::decode(&back.poll_transmit().unwrap().1).unwrap(),
        Message::Rejected {
            reason: Reject::NotRegistered,
            ..
        }
    ));
    back.handle_datagram(now, addr(1), &hb(token));
    assert!(matches!(
        Message::decode(&back.poll_transmit().unwrap().1).unwrap(),
        Message::Ack { req: 9, .. }
    ));
}

#[test]
fn rate_limit_state_of_idle_sources_is_forgotten() {
    let cfg = Config {
        rate_limit: 10,
        ..Config::default()
    };
    let now = Instant::now();
    let mut ix = Index::new(cfg, Vec::new(), now, [0; 32]);
    for port in 0..1000u16 {
        let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 30000 + port);
        ix.handle_datagram(now, src, b"junk that never decodes");
        ix.handle_datagram(
            now,
            src,
            &Message::Ack { req: 1, version: 0 }.encode().unwrap(),
        );
    }
    assert_eq!(ix.rate_limited_sources(), 1000);
    // Past the refill time and a liveness tick, nothing is kept.
    ix.handle_timeout(now + Duration::from_secs(20));
    assert_eq!(ix.rate_limited_sources(), 0);
}

mod reach;
