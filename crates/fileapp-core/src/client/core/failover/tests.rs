//! Failover under a fake clock: client cores against two real indexes that share one
//! store (the follower played by hand, as in `index/remote/tests.rs`), servers killed
//! and revived by the test, and datagrams forged from addresses that are not the
//! client's server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::core::{ClientCore, Config, Event, State};
use crate::identity::Identity;
use crate::index::{self, Index};
use crate::proto::{FileEntry, Message, Reject};
use crate::reliable::RetryPolicy;
use crate::store::{MemoryStore, Store};

const MS: Duration = Duration::from_millis(1);
const HEARTBEAT: Duration = Duration::from_millis(1000);

fn server_addr(s: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 12000 + s as u16)
}

fn client_addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 21000 + i as u16)
}

fn budget() -> Duration {
    RetryPolicy::default().budget()
}

fn new_index(now: Instant, seed: u8) -> Index {
    let cfg = index::Config {
        heartbeat: HEARTBEAT,
        // Long: only a move can change who is online in these tests.
        offline_after: Duration::from_secs(600),
        ..index::Config::default()
    };
    Index::new(cfg, Vec::new(), now, [seed; 32])
}

/// A check run after every delivery.
type Watch = Box<dyn Fn(&Cluster)>;

/// Two servers on one store, clients with their lists of servers.
struct Cluster {
    now: Instant,
    servers: Vec<Index>,
    alive: Vec<bool>,
    store: MemoryStore,
    clients: Vec<ClientCore>,
    events: Vec<Vec<(Instant, Event)>>,
    /// The last heartbeat request id each client sent.
    last_heartbeat: Vec<u64>,
    /// Where each client's datagrams go: its first server, then the one its last
    /// `Event::Switch` named (handled after its datagrams, as the flow does).
    route: Vec<usize>,
    /// Checked after every delivery.
    watch: Option<Watch>,
}

impl Cluster {
    /// Client `i` uses the servers `lists[i]` (indexes into the two servers).
    fn new(lists: &[&[usize]]) -> Cluster {
        let now = Instant::now();
        let clients = lists
            .iter()
            .enumerate()
            .map(|(i, list)| {
                let id = Arc::new(Identity::generate().unwrap());
                let cfg = Config {
                    name: format!("c{i}"),
                    tcp_port: 1400,
                    retry: RetryPolicy::default(),
                    heartbeat: Duration::from_secs(10),
                    advertise: None,
                    identity: Some(id),
                    evict: true,
                };
                let mut c = ClientCore::new(cfg, 77 + i as u64 * 1000);
                c.set_servers(list.iter().map(|s| server_addr(*s)).collect());
                c
            })
            .collect();
        Cluster {
            now,
            servers: vec![new_index(now, 1), new_index(now, 2)],
            alive: vec![true, true],
            store: MemoryStore::default(),
            clients,
            events: vec![Vec::new(); lists.len()],
            last_heartbeat: vec![0; lists.len()],
            route: lists.iter().map(|l| l[0]).collect(),
            watch: None,
        }
    }

    fn server_of(&self, i: usize) -> usize {
        let a = self.clients[i].server().expect("a list was set");
        (a.port() - 12000) as usize
    }

    /// Delivers everything in flight; true if anything moved.
    fn pump(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.clients.len() {
            let s = self.route[i];
            while let Some(b) = self.clients[i].poll_transmit() {
                moved = true;
                if let Ok(Message::Heartbeat { req, .. }) = Message::decode(&b) {
                    self.last_heartbeat[i] = req;
                }
                if self.alive[s] {
                    self.servers[s].handle_datagram(self.now, client_addr(i), &b);
                }
            }
            while let Some(e) = self.clients[i].poll_event() {
                if let Event::Switch(to) = e {
                    self.route[i] = (to.port() - 12000) as usize;
                }
                self.events[i].push((self.now, e));
            }
        }
        // The follower: what a live server committed is applied by the other.
        for s in 0..self.servers.len() {
            let ops = self.servers[s].take_store_ops();
            if !self.alive[s] || ops.is_empty() {
                continue;
            }
            self.store.commit(&ops).unwrap();
            let touched: std::collections::BTreeSet<String> =
                ops.iter().map(|op| op.owner().to_string()).collect();
            let home = format!("S{s}");
            for rec in self.store.load().unwrap() {
                if touched.contains(&rec.row.name) {
                    for o in 0..self.servers.len() {
                        if o != s && self.alive[o] {
                            self.servers[o].apply_remote(self.now, rec.clone(), &home);
                        }
                    }
                }
            }
        }
        for s in 0..self.servers.len() {
            while let Some((to, b)) = self.servers[s].poll_transmit() {
                moved = true;
                let i = (to.port() - 21000) as usize;
                if self.alive[s] {
                    self.clients[i].handle_datagram_from(self.now, server_addr(s), &b);
                }
            }
        }
        if let Some(w) = &self.watch {
            w(self);
        }
        moved
    }

    /// Runs the network and every timer for `d`.
    fn run(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            while self.pump() {}
            let next = self
                .servers
                .iter()
                .zip(&self.alive)
                .filter(|(_, a)| **a)
                .map(|(s, _)| s.poll_timeout())
                .chain(self.clients.iter().map(|c| c.poll_timeout()))
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for (s, a) in self.servers.iter_mut().zip(&self.alive) {
                        if *a && s.poll_timeout().is_some_and(|t| t <= now) {
                            s.handle_timeout(now);
                        }
                    }
                    for c in &mut self.clients {
                        if c.poll_timeout().is_some_and(|t| t <= now) {
                            c.handle_timeout(now);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    fn switches(&self, i: usize) -> Vec<(Instant, SocketAddr)> {
        self.events[i]
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Switch(a) => Some((*t, *a)),
                _ => None,
            })
            .collect()
    }

    fn has(&self, i: usize, e: &Event) -> bool {
        self.events[i].iter().any(|(_, x)| x == e)
    }

    /// Server `s` lists `name` online with `files`.
    fn lists(&self, s: usize, name: &str, files: &[&str]) -> bool {
        self.servers[s]
            .owner_files(name)
            .is_some_and(|(online, f)| online && f == files)
    }

    /// Client `i`'s table shows `owner` offering `file`.
    fn sees(&self, i: usize, owner: &str, file: &str) -> bool {
        self.clients[i]
            .table()
            .rows()
            .iter()
            .any(|r| r.owner == owner && r.file == file)
    }
}

/// c0 on [S0, S1] offering `f`, c1 on S1 alone; both online, each sees the other.
fn two_clients() -> Cluster {
    let mut net = Cluster::new(&[&[0, 1], &[1]]);
    let now = net.now;
    net.clients[0].register(now);
    net.clients[1].register(now);
    net.run(100 * MS);
    let op = net.clients[0]
        .offer(net.now, &[FileEntry::named("f")])
        .unwrap();
    net.run(500 * MS);
    assert!(net.has(0, &Event::OfferDone(op)));
    assert!(net.sees(1, "c0", "f"), "c1 sees c0's offer through S1");
    assert!(net.clients[0].table().owner("c1").is_some());
    assert_eq!(net.server_of(0), 0);
    net
}

#[test]
fn a_client_moves_once_its_server_is_silent_for_the_retry_budget_and_not_before() {
    let mut net = two_clients();
    net.alive[0] = false;
    let killed = net.now;
    // Every request sent after the kill has at least a whole budget before it gives up.
    net.run(budget() - MS);
    assert!(net.switches(0).is_empty(), "moved before the retry budget");
    assert_eq!(net.clients[0].state(), State::Online);
    net.run(HEARTBEAT + 10 * MS);
    let sw = net.switches(0);
    let [(at, to)] = sw.as_slice() else {
        panic!("one move: {sw:?}")
    };
    assert_eq!(*to, server_addr(1));
    assert!(*at >= killed + budget() && *at <= killed + HEARTBEAT + budget());
    net.run(100 * MS);
    assert_eq!(net.clients[0].state(), State::Online);
    assert!(net.has(
        0,
        &Event::Moved {
            from: server_addr(0),
            to: server_addr(1)
        }
    ));
    // Registered at S1 at once (its first try went to S1, not to the old session).
    let welcomed = net.events[0]
        .iter()
        .find(|(_, e)| matches!(e, Event::Moved { .. }))
        .map(|(t, _)| *t)
        .unwrap();
    assert!(welcomed <= *at + 10 * MS, "{:?}", welcomed - *at);
    assert!(!net.has(0, &Event::ServerLost), "a move is not an outage");
    assert!(!net.has(0, &Event::ServerBack));
}

#[test]
fn a_move_keeps_the_offers_and_the_table_and_the_others_never_see_it_offline() {
    let mut net = two_clients();
    // From here on: c1 (on S1) always sees c0 and its file, and c0 always sees c1.
    net.watch = Some(Box::new(|n: &Cluster| {
        assert!(n.sees(1, "c0", "f"), "c1 lost c0's offer at {:?}", n.now);
        assert!(
            n.clients[0].table().owner("c1").is_some(),
            "c0's table lost c1 at {:?}",
            n.now
        );
    }));
    net.alive[0] = false;
    net.run(HEARTBEAT + budget() + 500 * MS);
    assert_eq!(net.server_of(0), 1);
    assert_eq!(net.clients[0].state(), State::Online);
    // S1 holds c0's session now: online with the same offers, our key, signed.
    assert!(net.lists(1, "c0", &["f"]));
    assert_eq!(
        net.servers[1].home_of("c0"),
        None,
        "c0 is S1's own client now"
    );
    let ver = net.clients[0].table().version();
    assert!(ver > 0, "the table follows S1's numbering");
    // Offers keep working at the new server.
    let op = net.clients[0]
        .offer(net.now, &[FileEntry::named("g")])
        .unwrap();
    net.run(300 * MS);
    assert!(net.has(0, &Event::OfferDone(op)));
    assert!(net.sees(1, "c0", "g"));
    assert!(!net.clients[0].behind_own_writes());
}

#[test]
fn a_client_moves_back_round_robin_when_the_second_server_dies() {
    let mut net = two_clients();
    net.alive[0] = false;
    net.run(HEARTBEAT + budget() + 500 * MS);
    assert_eq!(net.server_of(0), 1);
    // S0 comes back empty (another machine, same deployment); then S1 dies.
    net.servers[0] = new_index(net.now, 3);
    net.alive[0] = true;
    net.alive[1] = false;
    net.run(HEARTBEAT + budget() + 500 * MS);
    assert_eq!(
        net.switches(0).iter().map(|(_, a)| *a).collect::<Vec<_>>(),
        [server_addr(1), server_addr(0)]
    );
    assert!(net.has(
        0,
        &Event::Moved {
            from: server_addr(1),
            to: server_addr(0)
        }
    ));
    assert_eq!(net.clients[0].state(), State::Online);
    assert!(net.lists(0, "c0", &["f"]), "re-offered at S0");
}

#[test]
fn a_forged_datagram_from_another_address_neither_causes_nor_stops_a_move() {
    let mut net = two_clients();
    net.run(HEARTBEAT);
    // From S1's address (in the list, not ours now) and from a stranger: our server
    // "forgot us". Believed, it would start a re-registration (or a move).
    let hb = net.last_heartbeat[0];
    let forged = Message::Rejected {
        req: hb,
        reason: Reject::NotRegistered,
    }
    .encode()
    .unwrap();
    let stranger = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9999);
    for from in [server_addr(1), stranger] {
        net.clients[0].handle_datagram_from(net.now, from, &forged);
    }
    net.run(budget() + HEARTBEAT);
    assert!(net.switches(0).is_empty(), "{:?}", net.events[0]);
    assert_eq!(net.clients[0].state(), State::Online);
    assert!(net.lists(0, "c0", &["f"]));
    // S0 dies; acknowledgements forged from elsewhere for every heartbeat do not keep
    // c0 on it.
    net.alive[0] = false;
    let killed = net.now;
    let mut t = Duration::ZERO;
    while net.switches(0).is_empty() && t < 2 * (HEARTBEAT + budget()) {
        let ack = Message::Ack {
            req: net.last_heartbeat[0],
            version: 1,
        }
        .encode()
        .unwrap();
        for from in [server_addr(1), stranger] {
            net.clients[0].handle_datagram_from(net.now, from, &ack);
        }
        net.run(100 * MS);
        t += 100 * MS;
    }
    let sw = net.switches(0);
    assert_eq!(sw.len(), 1, "{:?}", net.events[0]);
    assert!(sw[0].0 <= killed + HEARTBEAT + budget());
}

#[test]
fn a_first_registration_unanswered_tries_the_next_server_then_gives_up() {
    let mut net = Cluster::new(&[&[0, 1]]);
    net.alive[0] = false;
    net.clients[0].register(net.now);
    net.run(budget() + 200 * MS);
    assert_eq!(net.switches(0).len(), 1);
    assert_eq!(net.clients[0].state(), State::Online);
    assert!(net.has(0, &Event::Registered));
    assert!(net.has(
        0,
        &Event::Moved {
            from: server_addr(0),
            to: server_addr(1)
        }
    ));
    // Both dead from the start: one round, then the user hears it timed out.
    let mut net = Cluster::new(&[&[0, 1]]);
    net.alive = vec![false, false];
    net.clients[0].register(net.now);
    net.run(3 * budget());
    assert!(net.has(0, &Event::RegisterTimedOut), "{:?}", net.events[0]);
    assert_eq!(net.switches(0).len(), 1, "each server once");
    assert_eq!(net.clients[0].state(), State::Idle);
    assert!(!net.clients[0].moving());
}

#[test]
fn a_client_with_one_server_never_moves() {
    let mut net = Cluster::new(&[&[0]]);
    net.clients[0].register(net.now);
    net.run(100 * MS);
    net.alive[0] = false;
    net.run(3 * (HEARTBEAT + budget()));
    assert!(net.switches(0).is_empty());
    assert!(net.has(0, &Event::ServerLost));
    assert_eq!(net.clients[0].state(), State::Reconnecting);
}

#[test]
fn an_offer_unanswered_by_the_dead_server_moves_the_client_and_ends_at_the_new_one() {
    let mut net = two_clients();
    net.alive[0] = false;
    let op = net.clients[0]
        .offer(net.now, &[FileEntry::named("h")])
        .unwrap();
    net.run(budget() + 200 * MS);
    // The offer's silence moved us (before the next heartbeat was even due), and the
    // re-offer at S1 carried it: the user hears it succeed, once.
    assert_eq!(net.switches(0).len(), 1);
    assert!(net.switches(0)[0].0 < net.now - 200 * MS + HEARTBEAT);
    assert!(net.has(0, &Event::OfferDone(op)), "{:?}", net.events[0]);
    assert!(
        !net.events[0]
            .iter()
            .any(|(_, e)| matches!(e, Event::OfferFailed(..)))
    );
    assert!(net.lists(1, "c0", &["f", "h"]));
    assert!(net.sees(1, "c0", "h"));
}

/// An offer of several datagrams unanswered at the move: every part is carried by the
/// re-offer, so the offer ends (once, successfully) instead of waiting for ever.
#[test]
fn a_multi_part_offer_unanswered_at_the_move_ends_at_the_new_server() {
    let mut net = two_clients();
    net.alive[0] = false;
    let files: Vec<FileEntry> = (0..60)
        .map(|i| FileEntry::named(format!("a-file-with-a-long-name-to-fill-datagrams-{i:03}")))
        .collect();
    let op = net.clients[0].offer(net.now, &files).unwrap();
    net.run(budget() + 300 * MS);
    assert_eq!(net.switches(0).len(), 1);
    assert!(net.has(0, &Event::OfferDone(op)), "{:?}", net.events[0]);
    let done = net.events[0]
        .iter()
        .filter(|(_, e)| matches!(e, Event::OfferDone(o) | Event::OfferFailed(o, _) if *o == op))
        .count();
    assert_eq!(done, 1, "{:?}", net.events[0]);
    assert!(net.sees(1, "c0", "a-file-with-a-long-name-to-fill-datagrams-059"));
}
