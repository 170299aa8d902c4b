//! The index behind its channel, with real client cores and links, under a fake clock
//! and over a wire the test controls: every attack here is one a hostile path can make.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::channel::{HELLO_LEN, ServerPin};
use crate::client::core::{self as cc, ClientCore, Event, State};
use crate::client::link::{ClientLink, LinkEvent};
use crate::identity::Identity;
use crate::index::Config;
use crate::proto::{FileEntry, Message};
use crate::reliable::RetryPolicy;
use crate::store::{MemoryStore, Store};

const SECRET: [u8; 32] = [42; 32];
const MS: Duration = Duration::from_millis(1);

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + i as u8)), 4000)
}

struct Client {
    core: ClientCore,
    link: ClientLink,
    addr: SocketAddr,
    events: Vec<Event>,
    refused: Option<LinkEvent>,
    /// Every control message the core sent, before sealing.
    plain: Vec<Vec<u8>>,
}

/// One server and its clients; datagrams move when the test says.
struct Net {
    server: SecureIndex,
    store: MemoryStore,
    clients: Vec<Client>,
    now: Instant,
    /// Every datagram that went to the server, with its source, for replays.
    to_server: Vec<(SocketAddr, Vec<u8>)>,
    /// Every datagram the server sent, with its destination.
    from_server: Vec<(SocketAddr, Vec<u8>)>,
}

fn server_at(
    now: Instant,
    records: Vec<crate::store::OwnerRecord>,
    secret: [u8; 32],
) -> SecureIndex {
    let cfg = Config {
        require_key: true,
        heartbeat: Duration::from_secs(1),
        offline_after: Duration::from_secs(30),
        ..Config::default()
    };
    let index = Index::new(cfg, records, now, [7; 32]);
    SecureIndex::new(index, secret, [8; 32], now, Default::default())
}

impl Net {
    fn new() -> Net {
        let now = Instant::now();
        Net {
            server: server_at(now, Vec::new(), SECRET),
            store: MemoryStore::default(),
            clients: Vec::new(),
            now,
            to_server: Vec::new(),
            from_server: Vec::new(),
        }
    }

    fn pin(&self) -> Option<ServerPin> {
        Some(ServerPin::Key(self.server.public_key()))
    }

    fn add(&mut self, name: &str, pin: Option<ServerPin>) -> usize {
        let i = self.clients.len();
        let core = ClientCore::new(
            cc::Config {
                name: name.into(),
                tcp_port: 1400,
                retry: RetryPolicy::default(),
                heartbeat: Duration::from_secs(1),
                advertise: None,
                identity: Some(Arc::new(Identity::generate().unwrap())),
                evict: true,
            },
            i as u64 + 1,
        );
        let link = ClientLink::new(pin, [i as u8 + 100; 32], RetryPolicy::default().interval);
        self.clients.push(Client {
            core,
            link,
            addr: addr(i),
            events: Vec::new(),
            refused: None,
            plain: Vec::new(),
        });
        i
    }

    /// Moves everything the clients want to send into the link, and returns the sealed
    /// datagrams they put on the wire.
    fn client_out(&mut self, i: usize) -> Vec<Vec<u8>> {
        let now = self.now;
        let c = &mut self.clients[i];
        while let Some(m) = c.core.poll_transmit() {
            c.plain.push(m.clone());
            c.link.send(now, m);
        }
        while let Some(e) = c.core.poll_event() {
            c.events.push(e);
        }
        let mut out = Vec::new();
        while let Some(d) = c.link.poll_transmit() {
            out.push(d);
        }
        out
    }

    fn deliver_to_client(&mut self, i: usize, d: &[u8]) {
        let now = self.now;
        let c = &mut self.clients[i];
        if let Some(m) = c.link.handle(now, d) {
            c.core.handle_datagram(now, &m);
        }
        while let Some(e) = c.link.poll_event() {
            match e {
                LinkEvent::Ready { binding, .. } => c.core.set_binding(binding),
                refused @ LinkEvent::Refused(_) => c.refused = Some(refused),
            }
        }
    }

    fn deliver_to_server(&mut self, src: SocketAddr, d: &[u8]) {
        self.to_server.push((src, d.to_vec()));
        self.server.handle_datagram(self.now, src, d);
    }

    /// Delivers everything until the wire is quiet; `tamper` may rewrite or drop each
    /// datagram to the server (`None`: dropped).
    fn pump_with(&mut self, mut tamper: impl FnMut(SocketAddr, Vec<u8>) -> Option<Vec<u8>>) {
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                let src = self.clients[i].addr;
                for d in self.client_out(i) {
                    moved = true;
                    if let Some(d) = tamper(src, d) {
                        self.deliver_to_server(src, &d);
                    }
                }
            }
            let ops = self.server.index_mut().take_store_ops();
            self.store.commit(&ops).unwrap();
            let mut back = VecDeque::new();
            while let Some(t) = self.server.poll_transmit() {
                back.push_back(t);
            }
            for (dst, d) in back {
                moved = true;
                self.from_server.push((dst, d.clone()));
                if let Some(i) = self.clients.iter().position(|c| c.addr == dst) {
                    self.deliver_to_client(i, &d);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the wire never went quiet");
    }

    fn pump(&mut self) {
        self.pump_with(|_, d| Some(d));
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        self.server.handle_timeout(now);
        for c in &mut self.clients {
            c.core.handle_timeout(now);
        }
        self.pump();
    }

    fn register(&mut self, i: usize) {
        self.clients[i].core.register(self.now);
        self.pump();
    }

    /// Adds `name`, pinned to the real server key, and registers it.
    fn online(&mut self, name: &str) -> usize {
        let i = self.add(name, self.pin());
        self.register(i);
        i
    }
}

#[test]
fn a_client_registers_offers_and_syncs_through_the_channel_only() {
    let mut net = Net::new();
    let a = net.online("A");
    let b = net.online("B");
    for c in &net.clients {
        assert_eq!(c.core.state(), State::Online, "{:?}", c.events);
    }
    net.clients[a]
        .core
        .offer(net.now, &[FileEntry::named("secret-plans.txt")]);
    net.pump();
    net.advance(Duration::from_secs(1));
    assert!(net.clients[b].core.table().owner("A").is_some());
    // Nothing on the wire in either direction is a control message in clear, or names
    // the file.
    for (_, d) in net.to_server.iter().chain(&net.from_server) {
        assert!(!d.windows(12).any(|w| w == b"secret-plans"));
        assert!(Message::decode(d).is_err(), "a plaintext control message");
        assert!(d.len() <= crate::channel::MAX_DATAGRAM);
    }
}

#[test]
fn every_altered_datagram_is_dropped_and_never_answered() {
    let mut net = Net::new();
    let a = net.online("A");
    let src = net.clients[a].addr;
    let sent: Vec<Vec<u8>> = net.to_server.iter().map(|(_, d)| d.clone()).collect();
    let (before_out, before_ver) = (net.from_server.len(), net.server.index().version());
    for d in &sent {
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x40;
            net.server.handle_datagram(net.now, src, &bad);
            // Replayed as sent, too.
            net.server.handle_datagram(net.now, src, d);
        }
    }
    // A retransmitted Hello is answered with the same reply (never a second session);
    // nothing else is answered at all.
    while let Some((_, d)) = net.server.poll_transmit() {
        assert_eq!(d[0], crate::channel::TYPE_HELLO_REPLY);
    }
    assert_eq!(net.from_server.len(), before_out);
    assert_eq!(net.server.index().version(), before_ver);
    let st = net.server.channel_stats();
    assert!(st.forged + st.replayed + st.malformed + st.unknown_session > 0);
}

#[test]
fn no_answer_to_an_unauthenticated_datagram_is_larger_than_it() {
    let mut net = Net::new();
    net.online("A");
    for (dst, d) in &net.from_server {
        if d[0] != crate::channel::TYPE_DATA {
            assert!(d.len() < HELLO_LEN, "{} bytes to {dst}", d.len());
        }
    }
    // Junk of any length gets nothing back.
    for n in 0..1300 {
        net.server.handle_datagram(net.now, addr(9), &vec![4u8; n]);
    }
    assert!(net.server.poll_transmit().is_none());
}

#[test]
fn one_clients_datagrams_injected_into_anothers_address_change_nothing() {
    let mut net = Net::new();
    let a = net.online("A");
    let b = net.online("B");
    let (a_addr, b_addr) = (net.clients[a].addr, net.clients[b].addr);
    let ver = net.server.index().version();
    // B's own, authentic datagrams, made to look as if they came from A's address.
    let from_b: Vec<Vec<u8>> = net
        .to_server
        .iter()
        .filter(|(s, _)| *s == b_addr)
        .map(|(_, d)| d.clone())
        .collect();
    let fresh_b = {
        net.clients[b]
            .core
            .offer(net.now, &[FileEntry::named("from-b")]);
        net.client_out(b)
    };
    for d in from_b.iter().chain(&fresh_b) {
        net.server.handle_datagram(net.now, a_addr, d);
    }
    // B's Hello, replayed from A's address, gets a handshake reply (to an address that
    // cannot use it); nothing the index says goes anywhere.
    while let Some((_, d)) = net.server.poll_transmit() {
        assert_ne!(d[0], crate::channel::TYPE_DATA);
    }
    assert_eq!(net.server.index().version(), ver);
    assert!(net.server.gate_stats().address_conflicts > 0);
    // And A's session still works.
    net.clients[a]
        .core
        .offer(net.now, &[FileEntry::named("a-file")]);
    net.pump();
    assert_eq!(
        net.server.index().owner_files("A"),
        Some((true, vec!["a-file".to_string()]))
    );
}

#[test]
fn a_server_with_another_key_is_refused_and_told_nothing() {
    let mut net = Net::new();
    let wrong = Some(ServerPin::Key([1; 32]));
    let a = net.add("A", wrong);
    net.register(a);
    assert!(matches!(
        net.clients[a].refused,
        Some(LinkEvent::Refused(_))
    ));
    assert_eq!(net.server.index().owners(), 0);
    // Only the Hello went out: an ephemeral key and padding.
    assert!(
        net.to_server
            .iter()
            .all(|(_, d)| d[0] == crate::channel::TYPE_HELLO)
    );
    // And the fingerprint form of the right key is accepted.
    let fp = crate::identity::fingerprint(&net.server.public_key());
    let b = net.add("B", ServerPin::parse(&fp));
    net.register(b);
    assert_eq!(net.clients[b].core.state(), State::Online);
}

#[test]
fn after_a_server_restart_clients_handshake_again_and_keep_their_session() {
    let mut net = Net::new();
    let a = net.online("A");
    net.clients[a]
        .core
        .offer(net.now, &[FileEntry::named("kept")]);
    net.pump();
    let records = net.store.load().unwrap();
    net.server = server_at(net.now, records, SECRET);
    // Heartbeats go unanswered (the new server knows no session), the link starts a
    // new handshake, and the session carries on with its token.
    for _ in 0..6 {
        net.advance(Duration::from_millis(500));
    }
    assert_eq!(net.clients[a].core.state(), State::Online);
    assert!(net.clients[a].link.stats().restarts >= 1);
    assert_eq!(
        net.server.index().owner_files("A"),
        Some((true, vec!["kept".to_string()]))
    );
}

#[test]
fn a_registration_proof_from_one_session_is_refused_in_another() {
    let mut net = Net::new();
    let a = net.online("A");
    // Someone who learnt A's proof-carrying Register (its plaintext) replays it in a
    // session of their own, from A's very address and within the nonce's lifetime:
    // only the handshake hash differs, and the proof names A's.
    let with_proof = net.clients[a]
        .plain
        .iter()
        .find(|m| {
            matches!(
                Message::decode(m),
                Ok(Message::Register { proof: Some(_), .. })
            )
        })
        .cloned()
        .expect("A proved its key");
    let Ok(Message::Register { instance, .. }) = Message::decode(&with_proof) else {
        unreachable!()
    };
    let mut replay = Message::decode(&with_proof).unwrap();
    if let Message::Register {
        req, instance: i, ..
    } = &mut replay
    {
        *req += 1000;
        *i = instance.wrapping_add(1);
    }
    for (m, what) in [
        (with_proof.clone(), "as sent"),
        (replay.encode().unwrap(), "re-instanced"),
    ] {
        let mut attacker = ClientLink::new(net.pin(), [200; 32], 500 * MS);
        let src = net.clients[a].addr;
        attacker.send(net.now, m);
        let hello = attacker.poll_transmit().unwrap();
        net.server.handle_datagram(net.now, src, &hello);
        let (_, reply) = net.server.poll_transmit().unwrap();
        attacker.handle(net.now, &reply);
        let sealed = attacker.poll_transmit().unwrap();
        net.server.handle_datagram(net.now, src, &sealed);
        let (_, answer) = net.server.poll_transmit().unwrap();
        let answer = Message::decode(&attacker.handle(net.now, &answer).unwrap()).unwrap();
        assert!(
            matches!(
                answer,
                Message::Rejected {
                    reason: crate::proto::Reject::BadProof,
                    ..
                }
            ),
            "{what}: {answer:?}"
        );
    }
    assert_eq!(net.server.index().stats().registrations, 1);
}

#[test]
fn idle_sessions_are_closed() {
    let mut net = Net::new();
    net.online("A");
    assert_eq!(net.server.sessions(), 1);
    net.clients.clear();
    net.advance(Duration::from_secs(90));
    assert_eq!(net.server.sessions(), 0);
    assert_eq!(net.server.gate_stats().idle_closed, 1);
}

fn trust_of(net: &Net, i: usize, owner: &str) -> Option<crate::client::table::Trust> {
    net.clients[i].core.table().owner(owner).map(|v| v.trust)
}

#[test]
fn owners_sign_their_records_and_clients_verify_them() {
    use crate::client::table::Trust;
    let mut net = Net::new();
    let a = net.online("A");
    let b = net.online("B");
    net.clients[a].core.offer(net.now, &[FileEntry::named("f")]);
    net.pump();
    net.advance(Duration::from_millis(10));
    assert_eq!(trust_of(&net, b, "A"), Some(Trust::Verified));
    assert_eq!(trust_of(&net, a, "B"), Some(Trust::Verified));
    assert_eq!(net.clients[b].core.table().forged(), 0);
}

/// The server's database rewritten behind its back: whatever is changed, a client
/// that reads the table refuses the altered record.
#[test]
fn a_rewritten_database_is_caught_by_every_client() {
    use crate::client::table::Trust;
    type Rewrite = fn(&mut Vec<crate::store::OwnerRecord>, [u8; 32]);
    let rewrites: [(&str, Rewrite); 3] = [
        ("a file's hash", |recs, _| {
            let a = recs.iter_mut().find(|r| r.row.name == "A").unwrap();
            a.files[0].hash[0] ^= 1;
        }),
        ("an owner's port", |recs, _| {
            let a = recs.iter_mut().find(|r| r.row.name == "A").unwrap();
            a.row.tcp_port += 1;
        }),
        (
            "an owner's key, swapped for another client's",
            |recs, other| {
                let a = recs.iter_mut().find(|r| r.row.name == "A").unwrap();
                a.row.key = Some(other);
            },
        ),
    ];
    for (what, rewrite) in rewrites {
        let mut net = Net::new();
        let a = net.online("A");
        net.online("B");
        net.clients[a].core.offer(net.now, &[FileEntry::named("f")]);
        net.pump();
        let b_key = net.server.index().owner_key("B").unwrap();
        let mut records = net.store.load().unwrap();
        rewrite(&mut records, b_key);
        net.server = server_at(net.now, records, SECRET);
        // A newcomer reads the rewritten table.
        let c = net.online("C");
        net.advance(Duration::from_millis(10));
        assert_eq!(trust_of(&net, c, "A"), Some(Trust::Forged), "{what}");
        assert!(net.clients[c].core.table().forged() > 0, "{what}");
        assert_eq!(trust_of(&net, c, "B"), Some(Trust::Verified), "{what}");
    }
}
