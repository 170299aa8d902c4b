//! The client core under a fake clock: datagrams and `now` in, datagrams, events and
//! deadlines out. Most tests run it against the real [`Index`] in-process over a wire
//! the test controls datagram by datagram (hold, drop, reorder); a few answer it with
//! replies built by hand with the [`Message`] codec.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::index::{self, Index};
use crate::proto::Reject;

const MS: Duration = Duration::from_millis(1);
/// The heartbeat interval the test server announces.
const HEARTBEAT: Duration = Duration::from_millis(1000);

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 21000 + i as u16)
}

fn client_of(a: SocketAddr) -> usize {
    (a.port() - 21000) as usize
}

fn core(name: &str, identity: Option<Arc<Identity>>, seed: u64) -> ClientCore {
    ClientCore::new(
        Config {
            name: name.into(),
            tcp_port: 1400,
            retry: RetryPolicy::default(),
            heartbeat: Duration::from_secs(10),
            advertise: None,
            identity,
            evict: true,
        },
        seed,
    )
}

fn server_config() -> index::Config {
    index::Config {
        heartbeat: HEARTBEAT,
        // Long: a session nobody heartbeats stays listed for the whole test, so a
        // client wrongly left online on the server shows.
        offline_after: Duration::from_secs(60),
        ..index::Config::default()
    }
}

fn decode(b: &[u8]) -> Message {
    Message::decode(b).expect("the core sends only valid datagrams")
}

fn entries(names: &[&str]) -> Vec<FileEntry> {
    names.iter().map(|n| FileEntry::named(*n)).collect()
}

/// Clients and the real index over a wire with no latency, delivered only when the test
/// says so (or by [`Net::settle`]).
struct Net {
    now: Instant,
    index: Index,
    clients: Vec<ClientCore>,
    events: Vec<Vec<Event>>,
    /// To the server: (from client, datagram), in sending order.
    up: VecDeque<(usize, Vec<u8>)>,
    /// To the clients: (to client, datagram), in sending order.
    down: VecDeque<(usize, Vec<u8>)>,
}

impl Net {
    fn new(n: usize) -> Net {
        let now = Instant::now();
        let clients = (0..n)
            .map(|i| {
                let id = Arc::new(Identity::generate().unwrap());
                core(&format!("c{i}"), Some(id), 1000 * i as u64 + 3)
            })
            .collect();
        Net {
            now,
            index: Index::new(server_config(), Vec::new(), now, [9; 32]),
            clients,
            events: vec![Vec::new(); n],
            up: VecDeque::new(),
            down: VecDeque::new(),
        }
    }

    /// Moves what the machines want to send onto the wire, and collects events.
    fn flush(&mut self) {
        let _ = self.index.take_store_ops();
        while let Some((to, b)) = self.index.poll_transmit() {
            self.down.push_back((client_of(to), b));
        }
        for (i, c) in self.clients.iter_mut().enumerate() {
            while let Some(b) = c.poll_transmit() {
                self.up.push_back((i, b));
            }
            while let Some(e) = c.poll_event() {
                self.events[i].push(e);
            }
        }
    }

    /// Takes every datagram client `i` has sent that is still on the wire.
    fn take_up(&mut self, i: usize) -> Vec<Vec<u8>> {
        self.flush();
        let (mine, rest) = self.up.drain(..).partition(|(from, _)| *from == i);
        self.up = rest;
        mine.into_iter().map(|(_, b)| b).collect()
    }

    /// Takes every datagram on its way to client `i`.
    fn take_down(&mut self, i: usize) -> Vec<Vec<u8>> {
        self.flush();
        let (mine, rest) = self.down.drain(..).partition(|(to, _)| *to == i);
        self.down = rest;
        mine.into_iter().map(|(_, b)| b).collect()
    }

    fn serve(&mut self, from: usize, bytes: &[u8]) {
        self.index.handle_datagram(self.now, addr(from), bytes);
        self.flush();
    }

    fn hand(&mut self, i: usize, bytes: &[u8]) {
        self.clients[i].handle_datagram(self.now, bytes);
        self.flush();
    }

    /// Runs timers due at `t` (the clock moves to `t`).
    fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
        let now = self.now;
        if self.index.poll_timeout().is_some_and(|d| d <= now) {
            self.index.handle_timeout(now);
        }
        for c in &mut self.clients {
            if c.poll_timeout().is_some_and(|d| d <= now) {
                c.handle_timeout(now);
            }
        }
        self.flush();
    }

    /// A perfect network for `d`: everything is delivered at once, timers run in order.
    /// `drop` may discard datagrams: (to the server?, client, message).
    fn settle_with(&mut self, d: Duration, mut drop: impl FnMut(bool, usize, &Message) -> bool) {
        let until = self.now + d;
        loop {
            self.flush();
            if let Some((from, b)) = self.up.pop_front() {
                if !drop(true, from, &decode(&b)) {
                    self.serve(from, &b);
                }
                continue;
            }
            if let Some((to, b)) = self.down.pop_front() {
                if !drop(false, to, &decode(&b)) {
                    self.hand(to, &b);
                }
                continue;
            }
            let next = std::iter::once(self.index.poll_timeout())
                .chain(self.clients.iter().map(|c| c.poll_timeout()))
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => self.advance_to(t),
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    fn settle(&mut self, d: Duration) {
        self.settle_with(d, |_, _, _| false);
    }

    fn register(&mut self, i: usize) {
        self.clients[i].register(self.now);
        self.settle(100 * MS);
        assert_eq!(
            self.clients[i].state(),
            State::Online,
            "{:?}",
            self.events[i]
        );
        assert!(self.events[i].contains(&Event::Registered));
    }

    fn count(&self, i: usize, e: &Event) -> usize {
        self.events[i].iter().filter(|x| *x == e).count()
    }

    fn online_on_server(&self, i: usize) -> bool {
        self.index
            .owner_files(&format!("c{i}"))
            .is_some_and(|(online, _)| online)
    }
}

// ---- registration ------------------------------------------------------------------

#[test]
fn registration_answers_the_challenge_with_a_proof_and_goes_online() {
    let mut net = Net::new(1);
    net.clients[0].register(net.now);
    assert_eq!(net.clients[0].state(), State::Registering);
    let first = net.take_up(0);
    let [reg] = first.as_slice() else {
        panic!("one Register: {first:?}")
    };
    let Message::Register {
        proof: None,
        key: Some(_),
        keep_offers: false,
        ..
    } = decode(reg)
    else {
        panic!("a fresh client registers with its key, no proof yet")
    };
    net.serve(0, reg);
    let replies = net.take_down(0);
    assert!(matches!(decode(&replies[0]), Message::Challenge { .. }));
    net.hand(0, &replies[0]);
    let second = net.take_up(0);
    let Message::Register { proof: Some(_), .. } = decode(&second[0]) else {
        panic!("the challenge is answered with a proof")
    };
    net.serve(0, &second[0]);
    let welcome = net.take_down(0);
    assert!(matches!(decode(&welcome[0]), Message::Welcome { .. }));
    net.hand(0, &welcome[0]);
    assert_eq!(net.clients[0].state(), State::Online);
    assert_eq!(net.events[0], vec![Event::Registered]);
    // The signed record of the new session, then a heartbeat at once (it starts the
    // table push, which then carries the record); the next one at the server's
    // interval.
    let hb = net.take_up(0);
    assert!(matches!(decode(&hb[0]), Message::Record { .. }));
    assert!(matches!(
        decode(&hb[1]),
        Message::Heartbeat {
            table_version: 0,
            ..
        }
    ));
    assert_eq!(
        net.clients[0].poll_timeout(),
        Some(net.now + RetryPolicy::default().interval),
        "the first retry comes first"
    );
    for d in &hb {
        net.serve(0, d);
    }
    for d in net.take_down(0) {
        net.hand(0, &d);
    }
    assert_eq!(net.clients[0].poll_timeout(), Some(net.now + HEARTBEAT));
    assert!(net.online_on_server(0));
}

#[test]
fn an_unanswered_register_is_sent_four_times_500ms_apart_then_times_out() {
    let t0 = Instant::now();
    let mut c = core("solo", None, 5);
    c.register(t0);
    let first = c.poll_transmit().expect("a Register");
    let mut sends = vec![Duration::ZERO];
    let mut now = t0;
    while let Some(t) = c.poll_timeout() {
        assert!(c.poll_event().is_none(), "no verdict before the deadline");
        now = t;
        c.handle_timeout(now);
        while let Some(b) = c.poll_transmit() {
            assert_eq!(b, first, "a retransmission is the same datagram");
            sends.push(now - t0);
        }
    }
    assert_eq!(sends, vec![Duration::ZERO, 500 * MS, 1000 * MS, 1500 * MS]);
    assert_eq!(
        now - t0,
        2000 * MS,
        "given up one interval after the last retry"
    );
    assert_eq!(c.poll_event(), Some(Event::RegisterTimedOut));
    assert_eq!(c.state(), State::Idle);
}

#[test]
fn a_retransmitted_register_whose_welcome_was_lost_gets_the_same_session() {
    let mut net = Net::new(1);
    net.clients[0].register(net.now);
    // Challenge round trip.
    let reg = net.take_up(0);
    net.serve(0, &reg[0]);
    let ch = net.take_down(0);
    net.hand(0, &ch[0]);
    let proved = net.take_up(0);
    net.serve(0, &proved[0]);
    // The welcome is lost.
    let lost = net.take_down(0);
    let Message::Welcome { token: first, .. } = decode(&lost[0]) else {
        panic!()
    };
    assert_eq!(net.index.stats().registrations, 1);
    // 500 ms later the same Register goes again and is welcomed again, same session.
    net.advance_to(net.now + 500 * MS);
    let again = net.take_up(0);
    assert_eq!(again, proved, "same datagram, same instance");
    net.serve(0, &again[0]);
    let w = net.take_down(0);
    let Message::Welcome { token, .. } = decode(&w[0]) else {
        panic!("welcomed again, not rejected")
    };
    assert_eq!(token, first);
    assert_eq!(net.index.stats().registrations, 1, "applied once");
    net.hand(0, &w[0]);
    assert_eq!(net.events[0], vec![Event::Registered]);
}

#[test]
fn a_server_that_forgot_us_gets_us_back_by_heartbeat_with_our_offers() {
    let mut net = Net::new(2);
    net.register(0);
    net.register(1);
    net.clients[0].offer(net.now, &entries(&["a"])).unwrap();
    net.settle(100 * MS);
    // The server restarts with nothing stored.
    net.index = Index::new(server_config(), Vec::new(), net.now, [4; 32]);
    // c0's next heartbeat is refused as NotRegistered and it registers again, keeping
    // its offers, on its own.
    net.settle_with(HEARTBEAT + 100 * MS, |up, _, m| {
        if up && let Message::Register { keep_offers, .. } = m {
            assert!(keep_offers, "re-registration keeps offers");
        }
        false
    });
    assert!(
        net.events[0].contains(&Event::ServerBack),
        "{:?}",
        net.events[0]
    );
    assert_eq!(net.clients[0].state(), State::Online);
    assert_eq!(net.index.owner_files("c0"), Some((true, vec!["a".into()])));
    // The re-offer is silent: the user hears of no second offer.
    assert_eq!(
        net.events[0]
            .iter()
            .filter(|e| matches!(e, Event::OfferDone(_)))
            .count(),
        1
    );
    net.settle(HEARTBEAT);
    let rows: Vec<_> = net.clients[1]
        .table()
        .rows()
        .into_iter()
        .map(|r| r.file)
        .collect();
    assert_eq!(rows, vec!["a".to_string()], "the others see us again");
}

// ---- offers and the table ----------------------------------------------------------

#[test]
fn the_offer_ack_version_holds_reads_until_the_table_shows_it() {
    let mut net = Net::new(1);
    net.register(0);
    net.settle(100 * MS);
    assert!(!net.clients[0].behind_own_writes());
    let v0 = net.clients[0].table().version();
    let op = net.clients[0].offer(net.now, &entries(&["x"])).unwrap();
    let offer = net.take_up(0);
    net.serve(0, &offer[0]);
    // Only the Ack has left; the push is coalesced a moment later.
    let ack = net.take_down(0);
    let [ack] = ack.as_slice() else {
        panic!("{ack:?}")
    };
    let Message::Ack { version, .. } = decode(ack) else {
        panic!()
    };
    assert!(version > v0);
    net.hand(0, ack);
    assert!(net.events[0].contains(&Event::OfferDone(op)));
    assert!(
        net.clients[0].behind_own_writes(),
        "acknowledged at {version}, table at {}",
        net.clients[0].table().version()
    );
    net.settle(100 * MS);
    assert!(!net.clients[0].behind_own_writes());
    assert!(net.clients[0].table().version() >= version);
    assert_eq!(net.clients[0].table().rows()[0].file, "x");
}

#[test]
fn a_missed_delta_is_resynced_from_the_version_the_next_heartbeat_reports() {
    let mut net = Net::new(2);
    net.register(0);
    net.register(1);
    net.settle(100 * MS);
    let before = net.clients[0].table().version();
    net.clients[1].offer(net.now, &entries(&["late"])).unwrap();
    // Every push to c0 is lost until the server gives up (sent at 0, 500, 1000, 1500).
    let mut reported = Vec::new();
    net.settle_with(2100 * MS, |up, i, m| {
        if up
            && i == 0
            && let Message::Heartbeat { table_version, .. } = m
        {
            reported.push(*table_version);
        }
        !up && i == 0 && matches!(m, Message::Table { .. })
    });
    assert_eq!(net.clients[0].table().version(), before);
    assert!(net.clients[0].table().rows().is_empty());
    // The next heartbeat reports the old version and the server sends the delta again.
    let mut reported_after = Vec::new();
    net.settle_with(HEARTBEAT, |up, i, m| {
        if up
            && i == 0
            && let Message::Heartbeat { table_version, .. } = m
        {
            reported_after.push(*table_version);
        }
        false
    });
    assert!(reported.iter().chain(&reported_after).all(|v| *v == before));
    assert!(!reported_after.is_empty());
    assert_eq!(net.clients[0].table().version(), net.index.version());
    assert_eq!(net.clients[0].table().rows()[0].file, "late");
}

#[test]
fn a_table_part_beyond_our_version_is_neither_applied_nor_acknowledged() {
    let t0 = Instant::now();
    let mut c = core("solo", None, 9);
    c.register(t0);
    let Message::Register { req, .. } = decode(&c.poll_transmit().unwrap()) else {
        panic!()
    };
    let welcome = Message::Welcome {
        req,
        token: 77,
        heartbeat_ms: 1000,
        version: 3,
    };
    c.handle_datagram(t0, &welcome.encode().unwrap());
    while c.poll_transmit().is_some() {}
    let part = |from, to| {
        Message::Table {
            from,
            to,
            part: 0,
            parts: 1,
            items: vec![],
        }
        .encode()
        .unwrap()
    };
    c.handle_datagram(t0, &part(0, 3));
    assert_eq!(c.table().version(), 3);
    assert!(matches!(
        decode(&c.poll_transmit().unwrap()),
        Message::TableAck {
            token: 77,
            to: 3,
            part: 0
        }
    ));
    // 3 -> 5 was lost; 5 -> 6 cannot be applied.
    c.handle_datagram(t0, &part(5, 6));
    assert_eq!(c.table().version(), 3);
    assert_eq!(c.poll_transmit(), None, "a gap is not acknowledged");
}

// ---- user actions against automatic ones ------------------------------------------

/// Issue "dereg racing a heartbeat can leave the client online after it said Bye": a
/// heartbeat sent just before the Dereg reaches the server after it; the server, which
/// applied the dereg, answers NotRegistered. That must not bring the client back.
#[test]
fn dereg_racing_a_heartbeat_leaves_the_client_offline_on_both_sides() {
    let mut net = Net::new(1);
    net.register(0);
    net.clients[0].offer(net.now, &entries(&["f"])).unwrap();
    net.settle(100 * MS);
    // The heartbeat falls due and goes out...
    let due = net.clients[0].poll_timeout().expect("next heartbeat");
    net.settle(due - net.now - MS);
    net.advance_to(due);
    let hb = net.take_up(0);
    let [hb] = hb.as_slice() else {
        panic!("one heartbeat: {hb:?}")
    };
    assert!(matches!(decode(hb), Message::Heartbeat { .. }));
    // ...and just after, the user deregisters.
    net.now += MS;
    assert!(net.clients[0].dereg(net.now));
    let dereg = net.take_up(0);
    assert!(matches!(decode(&dereg[0]), Message::Dereg { .. }));
    // The network reorders them: the server applies the Dereg first, and its Ack is lost.
    net.serve(0, &dereg[0]);
    assert!(!net.online_on_server(0));
    let ack = net.take_down(0);
    assert!(matches!(decode(&ack[0]), Message::Ack { .. }));
    // The heartbeat arrives second and is refused: the client hears NotRegistered.
    net.serve(0, hb);
    let refused = net.take_down(0);
    assert!(matches!(
        decode(&refused[0]),
        Message::Rejected {
            reason: Reject::NotRegistered,
            ..
        }
    ));
    net.hand(0, &refused[0]);
    // From here on the network is perfect.
    net.settle(5000 * MS);
    assert!(
        !net.online_on_server(0),
        "the client said Bye but the server lists it online: {:?}",
        net.events[0]
    );
    assert_eq!(net.clients[0].state(), State::Offline);
    assert_eq!(net.count(0, &Event::Deregistered), 1, "{:?}", net.events[0]);
    assert!(
        !net.events[0].contains(&Event::ServerBack),
        "{:?}",
        net.events[0]
    );
}

impl Net {
    /// Runs client `i`'s registration in flight through the server (challenge and
    /// proof), and returns the welcome, held back from the client.
    fn hold_welcome(&mut self, i: usize) -> Vec<u8> {
        for _ in 0..4 {
            for b in self.take_up(i) {
                self.serve(i, &b);
            }
            let mut welcome = None;
            for b in self.take_down(i) {
                match decode(&b) {
                    Message::Welcome { .. } => welcome = Some(b),
                    _ => self.hand(i, &b),
                }
            }
            if let Some(w) = welcome {
                return w;
            }
        }
        panic!("no welcome for client {i}: {:?}", self.events[i])
    }

    /// The server restarts without its store: it knows nobody.
    fn forget_everyone(&mut self) {
        self.index = Index::new(server_config(), Vec::new(), self.now, [4; 32]);
    }

    /// Runs until client `i`'s next heartbeat is due and sent, and returns it (taken
    /// off the wire).
    fn next_heartbeat(&mut self, i: usize) -> Vec<u8> {
        let due = self.clients[i]
            .poll_timeout()
            .expect("a heartbeat is scheduled");
        self.settle(due.saturating_duration_since(self.now).saturating_sub(MS));
        self.advance_to(due);
        let out = self.take_up(i);
        let [hb] = out.as_slice() else {
            panic!("one heartbeat: {out:?}")
        };
        assert!(matches!(decode(hb), Message::Heartbeat { .. }));
        hb.clone()
    }

    /// Kinds of what client `i` sends while the network is perfect for `d`.
    fn settle_watching(&mut self, i: usize, d: Duration) -> Vec<Message> {
        let mut sent = Vec::new();
        self.settle_with(d, |up, from, m| {
            if up && from == i {
                sent.push(m.clone());
            }
            false
        });
        sent
    }
}

fn is_heartbeat_or_register(m: &Message) -> bool {
    matches!(m, Message::Heartbeat { .. } | Message::Register { .. })
}

#[test]
fn a_re_registration_abandoned_by_dereg_is_undone_when_its_welcome_arrives_late() {
    let mut net = Net::new(1);
    net.register(0);
    net.clients[0].offer(net.now, &entries(&["f"])).unwrap();
    net.settle(100 * MS);
    net.forget_everyone();
    // The next heartbeat is refused, and the client registers again on its own; that
    // registration reaches the server, but its welcome is slow.
    let hb = net.next_heartbeat(0);
    net.serve(0, &hb);
    for b in net.take_down(0) {
        net.hand(0, &b);
    }
    assert_eq!(net.clients[0].state(), State::Reconnecting);
    let welcome = net.hold_welcome(0);
    assert!(net.online_on_server(0));
    // The user leaves meanwhile. The Dereg carries the old token: NotRegistered, Bye.
    assert!(net.clients[0].dereg(net.now));
    net.settle(100 * MS);
    assert_eq!(net.clients[0].state(), State::Offline);
    // The late welcome must not bring the client back: it is answered with a Dereg.
    net.hand(0, &welcome);
    let sent = net.settle_watching(0, 5000 * MS);
    assert!(
        !net.online_on_server(0),
        "the client said Bye but the server lists it online: {:?}",
        net.events[0]
    );
    let Message::Welcome { token, .. } = decode(&welcome) else {
        panic!()
    };
    assert!(
        sent.iter()
            .any(|m| matches!(m, Message::Dereg { token: t, .. } if *t == token)),
        "the late session is deregistered with its own token: {sent:?}"
    );
    assert!(!sent.iter().any(is_heartbeat_or_register), "{sent:?}");
    assert_eq!(net.clients[0].state(), State::Offline);
    assert_eq!(net.count(0, &Event::Deregistered), 1, "{:?}", net.events[0]);
    assert!(!net.events[0].contains(&Event::ServerBack));
}

#[test]
fn quitting_during_a_re_registration_abandons_it_and_buries_its_late_welcome() {
    let mut net = Net::new(1);
    net.register(0);
    net.forget_everyone();
    let hb = net.next_heartbeat(0);
    net.serve(0, &hb);
    for b in net.take_down(0) {
        net.hand(0, &b);
    }
    let welcome = net.hold_welcome(0);
    // quit / Ctrl-C / SIGTERM: one goodbye datagram; the old token is unknown there.
    let bye = net.clients[0]
        .goodbye()
        .expect("a goodbye while reconnecting");
    assert!(matches!(decode(&bye), Message::Dereg { .. }));
    net.serve(0, &bye);
    assert!(
        net.clients[0].settling(),
        "the driver must stay for the abandoned registration's welcome"
    );
    // The process lingers; nothing it does on its own brings it back.
    net.hand(0, &welcome);
    let sent = net.settle_watching(0, 5000 * MS);
    assert!(!sent.iter().any(is_heartbeat_or_register), "{sent:?}");
    assert!(!net.online_on_server(0), "{sent:?}");
    assert!(!net.events[0].contains(&Event::ServerBack));
    assert!(
        !net.clients[0].settling(),
        "welcome buried and its Dereg acknowledged: the driver may go"
    );
}

#[test]
fn a_goodbye_with_nothing_in_flight_needs_no_lingering() {
    let mut net = Net::new(1);
    net.register(0);
    net.settle(100 * MS);
    assert!(net.clients[0].goodbye().is_some());
    assert!(!net.clients[0].settling());
}

#[test]
fn dereg_while_reconnecting_stops_heartbeats_and_a_late_heartbeat_ack_changes_nothing() {
    let mut net = Net::new(1);
    net.register(0);
    net.settle(100 * MS);
    // Every datagram is lost until the client notices the silence.
    let until = net.now + 5000 * MS;
    while !net.events[0].contains(&Event::ServerLost) && net.now < until {
        net.settle_with(100 * MS, |_, _, _| true);
    }
    assert_eq!(net.clients[0].state(), State::Reconnecting);
    // It keeps heartbeating; one of those heartbeats is on its way when the user leaves.
    let hb = net.next_heartbeat(0);
    assert!(net.clients[0].dereg(net.now));
    let dereg = net.take_up(0);
    assert!(matches!(decode(&dereg[0]), Message::Dereg { .. }));
    // The network is back: the heartbeat is answered (the session is still valid).
    net.serve(0, &hb);
    for b in net.take_down(0) {
        net.hand(0, &b);
    }
    assert!(
        !net.events[0].contains(&Event::ServerBack),
        "a heartbeat answer is no way back once the user left: {:?}",
        net.events[0]
    );
    let sent = net.settle_watching(0, 5000 * MS);
    assert!(!sent.iter().any(is_heartbeat_or_register), "{sent:?}");
    assert!(!net.online_on_server(0));
    assert_eq!(net.clients[0].state(), State::Offline);
    assert_eq!(net.count(0, &Event::Deregistered), 1);
}

#[test]
fn reg_after_dereg_is_not_undone_by_the_dereg_still_in_flight() {
    let mut net = Net::new(1);
    net.register(0);
    net.clients[0].offer(net.now, &entries(&["f"])).unwrap();
    net.settle(100 * MS);
    assert!(net.clients[0].dereg(net.now));
    let dereg = net.take_up(0);
    net.serve(0, &dereg[0]);
    let ack = net.take_down(0);
    // The user registers again before the dereg's ACK is in.
    net.events[0].clear();
    net.clients[0].register(net.now);
    let welcome = net.hold_welcome(0);
    net.hand(0, &ack[0]);
    net.hand(0, &welcome);
    net.settle(5000 * MS);
    assert_eq!(net.clients[0].state(), State::Online, "{:?}", net.events[0]);
    assert!(net.events[0].contains(&Event::Registered));
    assert!(
        !net.events[0].contains(&Event::Deregistered),
        "{:?}",
        net.events[0]
    );
    assert_eq!(
        net.index.owner_files("c0"),
        Some((true, vec!["f".into()])),
        "back online with the offers kept"
    );
}

#[test]
fn a_reg_that_timed_out_is_undone_when_its_welcome_arrives_late() {
    let mut net = Net::new(1);
    net.register(0);
    assert!(net.clients[0].dereg(net.now));
    net.settle(100 * MS);
    assert_eq!(net.clients[0].state(), State::Offline);
    net.events[0].clear();
    net.clients[0].register(net.now);
    let welcome = net.hold_welcome(0);
    // Every retransmission is lost: the user is told the server does not answer.
    while !net.events[0].contains(&Event::RegisterTimedOut) {
        let t = net.clients[0].poll_timeout().expect("retrying");
        net.advance_to(t);
        net.take_up(0);
    }
    assert_eq!(net.clients[0].state(), State::Offline);
    assert!(net.online_on_server(0), "the registration did get through");
    // Its welcome, late, is answered with a Dereg: the client stays as the user saw it.
    net.hand(0, &welcome);
    let sent = net.settle_watching(0, 5000 * MS);
    assert!(!net.online_on_server(0), "{sent:?}");
    assert_eq!(net.clients[0].state(), State::Offline);
    assert!(!net.events[0].contains(&Event::Registered));
}

/// Builds the state where the server forgot client 0 while an offer and a heartbeat are
/// both on their way: returns (heartbeat, offer datagrams, offer id).
fn forgotten_with_offer_and_heartbeat_in_flight(net: &mut Net) -> (Vec<u8>, Vec<Vec<u8>>, OpId) {
    net.register(0);
    net.settle(100 * MS);
    net.forget_everyone();
    let hb = net.next_heartbeat(0);
    let op = net.clients[0].offer(net.now, &entries(&["g"])).unwrap();
    let offer = net.take_up(0);
    (hb, offer, op)
}

#[test]
fn a_second_not_registered_does_not_restart_a_re_registration_in_flight() {
    let mut net = Net::new(1);
    // Another process may share the key: no evicting, so a second registration of ours
    // would be refused by the first one's session.
    net.clients[0].cfg_evict_for_tests(false);
    let (hb, offer, _) = forgotten_with_offer_and_heartbeat_in_flight(&mut net);
    net.serve(0, &hb);
    for b in net.take_down(0) {
        net.hand(0, &b);
    }
    let welcome = net.hold_welcome(0);
    // The offer's refusal arrives while the re-registration is in flight.
    net.serve(0, &offer[0]);
    for b in net.take_down(0) {
        net.hand(0, &b);
    }
    net.hand(0, &welcome);
    net.settle(3000 * MS);
    assert_eq!(net.clients[0].state(), State::Online, "{:?}", net.events[0]);
    assert_eq!(net.count(0, &Event::ServerBack), 1);
    assert_eq!(net.index.stats().registrations, 1);
    assert_eq!(net.index.owner_files("c0"), Some((true, vec!["g".into()])));
}

#[test]
fn an_offer_refused_because_the_server_forgot_us_completes_with_the_re_offer() {
    let mut net = Net::new(1);
    let (hb, offer, op) = forgotten_with_offer_and_heartbeat_in_flight(&mut net);
    // The offer is refused first: it starts the re-registration, which re-offers "g".
    net.serve(0, &offer[0]);
    for b in net.take_down(0) {
        net.hand(0, &b);
    }
    net.serve(0, &hb);
    net.settle(3000 * MS);
    assert_eq!(net.clients[0].state(), State::Online);
    assert_eq!(net.index.owner_files("c0"), Some((true, vec!["g".into()])));
    assert!(
        net.events[0].contains(&Event::OfferDone(op)),
        "the user's offer did reach the server: {:?}",
        net.events[0]
    );
}

#[test]
fn offers_are_refused_once_the_user_left() {
    let mut net = Net::new(1);
    net.register(0);
    assert!(net.clients[0].dereg(net.now));
    assert_eq!(net.clients[0].offer(net.now, &entries(&["h"])), None);
    net.settle(100 * MS);
    assert_eq!(net.clients[0].state(), State::Offline);
    assert_eq!(net.index.owner_files("c0"), Some((false, vec![])));
}

#[test]
fn a_dereg_nobody_answers_ends_offline_and_quiet() {
    let mut net = Net::new(1);
    net.register(0);
    net.settle(100 * MS);
    assert!(net.clients[0].dereg(net.now));
    // The server is unreachable from here on.
    let mut after = Vec::new();
    net.settle_with(3000 * MS, |up, _, m| {
        if up {
            after.push(m.clone());
        }
        true
    });
    assert_eq!(
        net.count(0, &Event::DeregTimedOut),
        1,
        "{:?}",
        net.events[0]
    );
    assert_eq!(net.clients[0].state(), State::Offline);
    assert!(
        after.iter().all(|m| matches!(m, Message::Dereg { .. })),
        "only the Dereg and its retries: {after:?}"
    );
    assert_eq!(net.clients[0].poll_timeout(), None, "nothing left to do");
}

proptest::proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic_the_client_core(
        datagrams in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1300), 0..40)
    ) {
        let mut net = Net::new(1);
        net.register(0);
        let now = net.now;
        let c = &mut net.clients[0];
        c.offer(now, &entries(&["a"]));
        for (i, d) in datagrams.iter().enumerate() {
            c.handle_datagram(now, d);
            let mut framed = vec![b'F', b'A', crate::proto::VERSION];
            framed.extend_from_slice(d);
            c.handle_datagram(now, &framed);
            if i == 20 {
                c.dereg(now);
            }
        }
        c.handle_timeout(now + Duration::from_secs(100));
        while c.poll_transmit().is_some() {}
    }
}

#[test]
fn a_request_that_cannot_be_encoded_is_said_and_fails_like_an_unanswered_one() {
    // A name no datagram can carry (the driver validates names; the core must still
    // not drop the request silently or leave the user waiting forever).
    let mut c = core(&"n".repeat(2000), None, 1);
    let now = Instant::now();
    c.register(now);
    assert_eq!(c.poll_transmit(), None, "nothing sent");
    assert!(matches!(c.poll_event(), Some(Event::Unsendable(_))));
    assert_eq!(c.poll_timeout(), Some(now), "the failure is due at once");
    c.handle_timeout(now);
    assert_eq!(c.poll_event(), Some(Event::RegisterTimedOut));
    assert_eq!(c.poll_timeout(), None, "nothing left to do");
}

#[test]
fn an_automatic_re_registration_that_timed_out_is_undone_when_its_welcome_arrives_late() {
    let mut net = Net::new(1);
    // Another process may share the key: no evicting, so an orphan session of ours
    // would keep the name from us until the server times it out (60 s here).
    net.clients[0].cfg_evict_for_tests(false);
    net.register(0);
    net.settle(100 * MS);
    net.forget_everyone();
    let hb = net.next_heartbeat(0);
    net.serve(0, &hb);
    for b in net.take_down(0) {
        net.hand(0, &b); // NotRegistered: the core registers again on its own
    }
    let welcome = net.hold_welcome(0); // the server did register us...
    // ...but everything after is lost until that registration gives up.
    let until = net.now + 3000 * MS;
    while net.now < until {
        let t = net.clients[0].poll_timeout().expect("retrying").min(until);
        net.advance_to(t);
        net.take_up(0);
    }
    // Its welcome, late, must not leave an orphan session that keeps the name from us.
    net.hand(0, &welcome);
    net.settle(5000 * MS);
    assert_eq!(net.clients[0].state(), State::Online, "{:?}", net.events[0]);
    assert!(net.online_on_server(0));
}
