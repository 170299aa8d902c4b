//! The punch machine under a fake clock: its schedule, two sides behind simulated NATs
//! with loss, a NAT that changes the port, forged datagrams, timeouts.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const ID: [u8; 16] = [7; 16];
const SECRET_A: [u8; 16] = [0xA1; 16];
const SECRET_B: [u8; 16] = [0xB2; 16];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn server() -> SocketAddr {
    addr("198.51.100.1:4000")
}

/// The owner's side of meeting `ID`, defaults, at `t`.
fn owner(t: Instant) -> Punch {
    Punch::new(
        t,
        PunchConfig::default(),
        Side::Owner,
        ID,
        SECRET_B,
        server(),
    )
}

/// The requester's side of meeting `ID`, defaults, at `t`.
fn requester(t: Instant) -> Punch {
    Punch::new(
        t,
        PunchConfig::default(),
        Side::Requester,
        ID,
        SECRET_A,
        server(),
    )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn drain(p: &mut Punch) -> Vec<(SocketAddr, Vec<u8>)> {
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

/// Runs `p`'s timers from `from` to `to`, returning everything it sent with its time.
fn run_until(p: &mut Punch, from: Instant, to: Instant) -> Vec<(Instant, SocketAddr, Vec<u8>)> {
    let mut out: Vec<_> = drain(p).into_iter().map(|(a, d)| (from, a, d)).collect();
    while let Some(t) = p.poll_timeout() {
        if t > to {
            break;
        }
        p.handle_timeout(t);
        out.extend(drain(p).into_iter().map(|(a, d)| (t, a, d)));
    }
    out
}

#[test]
fn probes_every_100ms_then_no_peer_endpoint_after_2s() {
    let t0 = Instant::now();
    let mut p = requester(t0);
    assert_eq!(p.state(), PunchState::Learning);
    let sent = run_until(&mut p, t0, t0 + ms(1999));
    assert_eq!(sent.len(), 20, "probes at 0, 100, ..., 1900 ms");
    for (i, (t, to, d)) in sent.iter().enumerate() {
        assert_eq!(*t, t0 + ms(100 * i as u64));
        assert_eq!(*to, server());
        assert_eq!(d.len(), PROBE_LEN);
        assert_eq!(d[..4], PROBE_MAGIC);
        assert_eq!(d[4..], SECRET_A);
        assert_eq!(parse_probe(d), Some(SECRET_A));
    }
    assert_eq!(p.poll_timeout(), Some(t0 + ms(2000)));
    p.handle_timeout(t0 + ms(2000));
    assert_eq!(p.state(), PunchState::Failed(PunchFailure::NoPeerEndpoint));
    assert_eq!(p.poll_transmit(), None);
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn an_early_timeout_sends_nothing_and_a_late_one_does_not_burst() {
    let t0 = Instant::now();
    let mut p = owner(t0);
    drain(&mut p);
    p.handle_timeout(t0 + ms(50));
    assert_eq!(p.poll_transmit(), None);
    // Woken 750 ms late: one probe, and the next one a period later.
    p.handle_timeout(t0 + ms(850));
    assert_eq!(drain(&mut p).len(), 1);
    assert_eq!(p.poll_timeout(), Some(t0 + ms(950)));
}

#[test]
fn punches_every_25ms_once_the_peer_is_known_then_no_answer() {
    let t0 = Instant::now();
    let peer = addr("203.0.113.9:5555");
    let mut p = owner(t0);
    drain(&mut p);
    let known = t0 + ms(300);
    p.peer_known(known, peer);
    assert_eq!(p.state(), PunchState::Punching);
    let sent = run_until(&mut p, known, known + ms(1999));
    assert_eq!(sent.len(), 80, "punches at 0, 25, ..., 1975 ms after");
    for (i, (t, to, d)) in sent.iter().enumerate() {
        assert_eq!(*t, known + ms(25 * i as u64));
        assert_eq!(*to, peer, "no more probes to the server");
        assert_eq!(d.len(), PUNCH_LEN);
        assert_eq!(d[..4], PUNCH_MAGIC);
        assert_eq!(d[4..20], ID);
        assert_eq!(d[20], Side::Owner.role_byte());
        assert_eq!(parse_punch(d), Some((ID, 2)));
    }
    p.handle_timeout(known + ms(2000));
    assert_eq!(p.state(), PunchState::Failed(PunchFailure::NoAnswer));
    assert_eq!(p.poll_timeout(), None);
    // Nothing revives a failed punch.
    p.handle_datagram(
        known + ms(2001),
        peer,
        &punch_datagram(&ID, Side::Requester),
    );
    p.peer_known(known + ms(2001), peer);
    assert_eq!(p.state(), PunchState::Failed(PunchFailure::NoAnswer));
}

#[test]
fn the_peers_punch_opens_the_path_and_is_confirmed() {
    let t0 = Instant::now();
    let peer = addr("203.0.113.9:5555");
    let mut p = requester(t0);
    p.peer_known(t0, peer);
    drain(&mut p);
    p.handle_datagram(t0 + ms(10), peer, &punch_datagram(&ID, Side::Owner));
    assert_eq!(p.state(), PunchState::Open { peer });
    let sent = drain(&mut p);
    assert_eq!(sent.len(), CONFIRMATIONS);
    assert!(
        sent.iter()
            .all(|(to, d)| *to == peer && parse_punch(d) == Some((ID, 1)))
    );
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn a_bad_peer_endpoint_fails_at_once() {
    let t0 = Instant::now();
    for bad in ["203.0.113.9:0", "0.0.0.0:5555", "[::]:5555"] {
        let mut p = requester(t0);
        p.peer_known(t0, addr(bad));
        assert_eq!(
            p.state(),
            PunchState::Failed(PunchFailure::BadPeerEndpoint),
            "{bad}"
        );
    }
}

#[test]
fn stray_and_forged_datagrams_are_ignored() {
    let t0 = Instant::now();
    let peer = addr("203.0.113.9:5555");
    let mut p = owner(t0);
    // A real punch while still learning: we do not know whose it is yet.
    p.handle_datagram(t0, peer, &punch_datagram(&ID, Side::Requester));
    assert_eq!(p.state(), PunchState::Learning);
    p.peer_known(t0, peer);
    let good = punch_datagram(&ID, Side::Requester);
    let mut wrong_id = good.clone();
    wrong_id[4] ^= 1;
    let own_role = punch_datagram(&ID, Side::Owner);
    let mut bad_role = good.clone();
    bad_role[20] = 9;
    let mut bad_magic = good.clone();
    bad_magic[0] = 0x40;
    let mut long = good.clone();
    long.push(0);
    let forged: Vec<(SocketAddr, Vec<u8>)> = vec![
        (peer, wrong_id),
        (peer, own_role),
        (peer, bad_role),
        (peer, bad_magic),
        (peer, long),
        (peer, good[..20].to_vec()),
        (peer, vec![]),
        (peer, probe_datagram(&SECRET_A)),
        (server(), good.clone()),
        (addr("203.0.113.10:5555"), good.clone()),
        (addr("[2001:db8::1]:5555"), good.clone()),
    ];
    for (from, d) in &forged {
        p.handle_datagram(t0 + ms(1), *from, d);
        assert_eq!(p.state(), PunchState::Punching, "{from} {d:?}");
    }
    // The real one still works afterwards.
    p.handle_datagram(t0 + ms(2), peer, &good);
    assert_eq!(p.state(), PunchState::Open { peer });
}

#[test]
fn an_ipv4_mapped_source_is_the_same_peer() {
    let t0 = Instant::now();
    let peer = addr("203.0.113.9:5555");
    let mut p = owner(t0);
    p.peer_known(t0, peer);
    let mapped = addr("[::ffff:203.0.113.9]:5555");
    p.handle_datagram(t0, mapped, &punch_datagram(&ID, Side::Requester));
    assert_eq!(p.state(), PunchState::Open { peer: mapped });
}

/// A NAT with endpoint-independent mapping and address-and-port-dependent filtering:
/// inbound datagrams pass only from endpoints the inside has sent to.
struct Nat {
    inside: SocketAddr,
    public: SocketAddr,
    sent_to: HashSet<SocketAddr>,
}

struct Sim {
    t: Instant,
    a: Punch,
    b: Punch,
    nat_a: Nat,
    nat_b: Nat,
    /// B's NAT's port towards A (`None`: the same as towards the server).
    b_port_to_a: Option<u16>,
    /// Deterministic loss: a simple generator and the loss rate in percent.
    seed: u64,
    loss: u64,
    delivered: usize,
}

impl Sim {
    fn new(loss: u64, b_port_to_a: Option<u16>) -> Sim {
        let t = Instant::now();
        let cfg = PunchConfig::default();
        let nat_a = Nat {
            inside: addr("10.0.0.2:40000"),
            public: addr("203.0.113.1:61000"),
            sent_to: HashSet::new(),
        };
        let nat_b = Nat {
            inside: addr("192.168.1.5:50000"),
            public: addr("198.51.100.77:62000"),
            sent_to: HashSet::new(),
        };
        Sim {
            t,
            a: Punch::new(t, cfg, Side::Requester, ID, SECRET_A, server()),
            b: Punch::new(t, cfg, Side::Owner, ID, SECRET_B, server()),
            nat_a,
            nat_b,
            b_port_to_a,
            seed: 0x2545_F491_4F6C_DD1D,
            loss,
            delivered: 0,
        }
    }

    fn lost(&mut self) -> bool {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed % 100 < self.loss
    }

    /// Moves every queued datagram through both NATs (each either dropped or delivered
    /// at once).
    fn deliver(&mut self) {
        loop {
            let mut any = false;
            while let Some((to, d)) = self.a.poll_transmit() {
                any = true;
                self.nat_a.sent_to.insert(to);
                let from = self.nat_a.public;
                let to_b = to == self.nat_b.public
                    || self
                        .b_port_to_a
                        .is_some_and(|p| to == SocketAddr::new(self.nat_b.public.ip(), p));
                if to_b && self.nat_b.sent_to.contains(&from) && !self.lost() {
                    assert_eq!(self.nat_b.inside.port(), 50000);
                    self.b.handle_datagram(self.t, from, &d);
                    self.delivered += 1;
                }
            }
            while let Some((to, d)) = self.b.poll_transmit() {
                any = true;
                self.nat_b.sent_to.insert(to);
                let mut from = self.nat_b.public;
                if to != server()
                    && let Some(port) = self.b_port_to_a
                {
                    from.set_port(port);
                }
                // With a port-changing peer, A's NAT filters by address only (else nothing
                // from the changed port could pass before A knew it).
                let allowed = if self.b_port_to_a.is_some() {
                    self.nat_a.sent_to.iter().any(|s| s.ip() == from.ip())
                } else {
                    self.nat_a.sent_to.contains(&from)
                };
                if to == self.nat_a.public && allowed && !self.lost() {
                    assert_eq!(self.nat_a.inside.port(), 40000);
                    self.a.handle_datagram(self.t, from, &d);
                    self.delivered += 1;
                }
            }
            if !any {
                return;
            }
        }
    }

    /// Runs both machines until neither has a timer; the server tells A B's endpoint at
    /// `a_learns` and B A's at `b_learns`.
    fn run(&mut self, a_learns: Duration, b_learns: Duration) {
        let start = self.t;
        let (mut a_told, mut b_told) = (false, false);
        loop {
            self.deliver();
            let mut next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            for (told, at) in [(a_told, a_learns), (b_told, b_learns)] {
                if !told {
                    next = Some(next.map_or(start + at, |n| n.min(start + at)));
                }
            }
            let Some(next) = next else { return };
            if next > start + Duration::from_secs(10) {
                return;
            }
            self.t = self.t.max(next);
            if !a_told && self.t >= start + a_learns {
                a_told = true;
                self.a.peer_known(self.t, self.nat_b.public);
            }
            if !b_told && self.t >= start + b_learns {
                b_told = true;
                self.b.peer_known(self.t, self.nat_a.public);
            }
            self.a.handle_timeout(self.t);
            self.b.handle_timeout(self.t);
        }
    }
}

#[test]
fn two_sides_behind_nats_open_the_path() {
    let mut sim = Sim::new(0, None);
    sim.run(ms(300), ms(450));
    assert_eq!(
        sim.a.state(),
        PunchState::Open {
            peer: sim.nat_b.public
        }
    );
    assert_eq!(
        sim.b.state(),
        PunchState::Open {
            peer: sim.nat_a.public
        }
    );
    // B's first punch towards A passes A's NAT only once A has punched: B opens first
    // (on A's punch), and A on B's confirmations.
    assert!(sim.delivered >= 2);
}

#[test]
fn two_sides_open_the_path_despite_heavy_loss() {
    for loss in [30, 60] {
        let mut sim = Sim::new(loss, None);
        sim.run(ms(200), ms(900));
        assert!(
            matches!(sim.a.state(), PunchState::Open { .. }),
            "loss {loss}%: {:?}",
            sim.a.state()
        );
        assert!(
            matches!(sim.b.state(), PunchState::Open { .. }),
            "loss {loss}%: {:?}",
            sim.b.state()
        );
    }
}

#[test]
fn total_loss_fails_both_with_no_answer() {
    let mut sim = Sim::new(100, None);
    sim.run(ms(100), ms(100));
    assert_eq!(sim.a.state(), PunchState::Failed(PunchFailure::NoAnswer));
    assert_eq!(sim.b.state(), PunchState::Failed(PunchFailure::NoAnswer));
}

#[test]
fn a_peer_whose_nat_changes_the_port_is_adopted() {
    let mut sim = Sim::new(0, Some(62777));
    sim.run(ms(300), ms(300));
    let mut b_as_seen = sim.nat_b.public;
    b_as_seen.set_port(62777);
    // B's punches come from 62777, not the 62000 the server saw: A adopts that port
    // (QUIC then talks to it), and its confirmations there open B too.
    assert_eq!(sim.a.state(), PunchState::Open { peer: b_as_seen });
    assert!(matches!(sim.b.state(), PunchState::Open { .. }));
}

proptest! {
    #[test]
    fn no_bytes_panic_or_open_the_path(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        port in any::<u16>(),
        from_peer_ip in any::<bool>(),
    ) {
        let t0 = Instant::now();
        let peer = addr("203.0.113.9:5555");
        let mut p = owner(t0);
        p.handle_datagram(t0, peer, &bytes);
        p.peer_known(t0, peer);
        let ip = if from_peer_ip { "203.0.113.9" } else { "203.0.113.8" };
        let from = SocketAddr::new(ip.parse().unwrap(), port);
        p.handle_datagram(t0, from, &bytes);
        let valid = from_peer_ip && bytes == punch_datagram(&ID, Side::Requester);
        prop_assert_eq!(matches!(p.state(), PunchState::Open { .. }), valid);
        prop_assert_eq!(parse_probe(&bytes).is_some(), bytes.len() == 20 && bytes[..4] == PROBE_MAGIC);
    }
}
