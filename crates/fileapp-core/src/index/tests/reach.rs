//! Reach under the fake clock: reachability tests, NAT tests, meetings and punch
//! probes, between real client cores and the index. The probe datagrams are carried by
//! hand (the simulated wire carries channel-less control datagrams only).

use super::*;
use crate::reach::punch::PROBE_MAGIC;
use crate::reach::{Nat, Reach, Via};

/// Two registered clients, every NAT test delivered from the client's own address
/// (as through no NAT, or an endpoint-independent one) unless `dependent`.
fn two_tested(tcp: [bool; 2], dependent: [bool; 2]) -> Sim {
    let mut sim = Sim::new(2);
    register_all(&mut sim);
    while let Some(t) = sim.index.poll_reach_test() {
        let i = (t.name[1..]).parse::<usize>().unwrap();
        assert_eq!(t.addr.port(), 1400 + i as u16, "the client's TCP port");
        let now = sim.now;
        sim.index.reach_tested(now, &t, tcp[i]);
    }
    for (i, dependent) in dependent.into_iter().enumerate() {
        while let Some(p) = sim.clients[i].poll_probe() {
            let mut src = addr(i);
            if dependent {
                src.set_port(src.port() + 500);
            }
            let now = sim.now;
            sim.index.handle_probe(now, src, &p, true);
        }
    }
    sim.run_for(100 * MS);
    sim
}

fn reach_of(sim: &Sim, viewer: usize, owner: usize) -> Reach {
    sim.clients[viewer]
        .table()
        .owner(&format!("c{owner}"))
        .map(|o| o.reach)
        .unwrap()
}

fn meeting_events(sim: &mut Sim, i: usize) -> Vec<Event> {
    std::mem::take(&mut sim.events[i])
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::Connected(_)
                    | Event::ConnectFailed { .. }
                    | Event::Dial { .. }
                    | Event::PunchPeer { .. }
            )
        })
        .collect()
}

#[test]
fn every_client_learns_each_ones_tcp_reachability_and_nat_kind() {
    let sim = two_tested([true, false], [false, true]);
    for viewer in 0..2 {
        assert_eq!(
            reach_of(&sim, viewer, 0),
            Reach {
                tcp: Some(true),
                nat: Nat::Independent
            }
        );
        assert_eq!(
            reach_of(&sim, viewer, 1),
            Reach {
                tcp: Some(false),
                nat: Nat::Dependent
            }
        );
    }
}

#[test]
fn a_nat_test_with_a_wrong_key_or_from_elsewhere_changes_nothing() {
    let mut sim = Sim::new(1);
    register_all(&mut sim);
    let p = sim.clients[0].poll_probe().unwrap();
    let now = sim.now;
    // A forged key, the right key from another IP, the right key on the main port.
    let mut forged = p.clone();
    forged[10] ^= 1;
    sim.index.handle_probe(now, addr(0), &forged, true);
    let elsewhere = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 20000);
    sim.index.handle_probe(now, elsewhere, &p, true);
    sim.index.handle_probe(now, addr(0), &p, false);
    sim.index.handle_probe(now, addr(0), &p[..19], true);
    assert_eq!(sim.index.owner_reach("c0").unwrap().nat, Nat::Unknown);
    // Nothing is ever answered to a probe.
    assert!(sim.index.poll_transmit().is_none());
    sim.index.handle_probe(now, addr(0), &p, true);
    assert_eq!(sim.index.owner_reach("c0").unwrap().nat, Nat::Independent);
    assert!(sim.index.poll_transmit().is_none());
}

#[test]
fn a_reachability_result_for_an_earlier_registration_is_ignored() {
    let mut sim = Sim::new(1);
    register_all(&mut sim);
    let t = sim.index.poll_reach_test().unwrap();
    // The client registers again (a new instance) before the result comes.
    sim.clients[0].register(sim.now);
    sim.run_for(100 * MS);
    let now = sim.now;
    sim.index.reach_tested(now, &t, true);
    assert_eq!(sim.index.owner_reach("c0").unwrap().tcp, None);
    let t2 = sim.index.poll_reach_test().unwrap();
    sim.index.reach_tested(now, &t2, true);
    assert_eq!(sim.index.owner_reach("c0").unwrap().tcp, Some(true));
}

#[test]
fn reverse_tells_the_owner_where_to_connect_and_answers_the_requester() {
    let mut sim = two_tested([false, true], [false, false]);
    let id = [5; 16];
    assert!(sim.clients[1].connect(sim.now, "c0", Via::Reverse, id));
    sim.run_for(100 * MS);
    let got = meeting_events(&mut sim, 1);
    assert!(
        matches!(&got[..], [Event::Connected(m)] if m.id == id && m.via == Via::Reverse),
        "{got:?}"
    );
    let dial = meeting_events(&mut sim, 0);
    let [Event::Dial { from, meeting }] = &dial[..] else {
        panic!("{dial:?}")
    };
    assert_eq!(from, "c1");
    assert_eq!(meeting.addr, Some(SocketAddr::new(addr(1).ip(), 1401)));
    // A requester whose own port is unreachable cannot be connected to.
    assert!(sim.clients[0].connect(sim.now, "c1", Via::Reverse, [6; 16]));
    sim.run_for(100 * MS);
    let got = meeting_events(&mut sim, 0);
    assert!(
        matches!(
            &got[..],
            [Event::ConnectFailed {
                reason: Some(Reject::Unreachable),
                ..
            }]
        ),
        "{got:?}"
    );
}

#[test]
fn a_lost_answer_is_healed_by_the_retransmission_and_the_owner_dials_once() {
    let mut sim = two_tested([false, true], [false, false]);
    sim.loss = 50;
    let id = [7; 16];
    sim.clients[1].connect(sim.now, "c0", Via::Reverse, id);
    sim.run_for(3000 * MS);
    sim.loss = 0;
    let got = meeting_events(&mut sim, 1);
    // Either answered, or (all three copies lost) given up; never twice.
    assert!(got.len() == 1, "{got:?}");
    let dials = meeting_events(&mut sim, 0);
    assert!(dials.len() <= 1, "one connection per meeting: {dials:?}");
    assert_eq!(sim.index.meetings(), 1);
}

#[test]
fn relayed_hands_each_side_its_own_ticket_for_the_same_meeting() {
    let mut sim = two_tested([false, false], [true, true]);
    let signer = Arc::new(Identity::generate().unwrap());
    sim.index.set_relay(RelaySetup {
        signer: signer.clone(),
        addr: None,
        public: None,
        unix_ms_at_epoch: 1_000_000,
    });
    let id = [9; 16];
    sim.clients[1].connect(sim.now, "c0", Via::Relayed, id);
    sim.run_for(100 * MS);
    let got = meeting_events(&mut sim, 1);
    let [Event::Connected(mine)] = &got[..] else {
        panic!("{got:?}")
    };
    let dial = meeting_events(&mut sim, 0);
    let [
        Event::Dial {
            meeting: theirs, ..
        },
    ] = &dial[..]
    else {
        panic!("{dial:?}")
    };
    let (a, b) = (mine.ticket.clone().unwrap(), theirs.ticket.clone().unwrap());
    assert_ne!(a, b, "one ticket per role");
    assert_eq!(&a[1..17], &id, "the meeting id");
    assert_eq!(&b[1..17], &id);
    assert_eq!((a[17], b[17]), (0, 1), "requester, owner");
    let statement = |t: &[u8]| [b"fileapp relay ticket v1".as_slice(), &t[..26]].concat();
    let key = signer.public_key();
    assert!(identity::verify(&key, &statement(&a), &a[26..]));
    assert!(identity::verify(&key, &statement(&b), &b[26..]));
    // Without a relay the server refuses.
    let mut sim = two_tested([false, false], [true, true]);
    sim.clients[1].connect(sim.now, "c0", Via::Relayed, id);
    sim.run_for(100 * MS);
    let got = meeting_events(&mut sim, 1);
    assert!(matches!(
        &got[..],
        [Event::ConnectFailed {
            reason: Some(Reject::Unreachable),
            ..
        }]
    ));
}

#[test]
fn punched_learns_both_endpoints_from_the_probes_and_tells_each_the_other() {
    let mut sim = two_tested([false, false], [false, false]);
    let id = [3; 16];
    sim.clients[1].connect(sim.now, "c0", Via::Punched, id);
    sim.run_for(100 * MS);
    let got = meeting_events(&mut sim, 1);
    let [Event::Connected(m1)] = &got[..] else {
        panic!("{got:?}")
    };
    let dial = meeting_events(&mut sim, 0);
    let [Event::Dial { meeting: m0, .. }] = &dial[..] else {
        panic!("{dial:?}")
    };
    let probe = |s: [u8; 16]| [PROBE_MAGIC.as_slice(), &s].concat();
    let (p0, p1) = (probe(m0.secret.unwrap()), probe(m1.secret.unwrap()));
    // Each side's punch socket has its own public endpoint.
    let (e0, e1): (SocketAddr, SocketAddr) = (
        "198.51.100.7:40001".parse().unwrap(),
        "203.0.113.9:50002".parse().unwrap(),
    );
    let now = sim.now;
    sim.index.handle_probe(now, e0, &p0, false);
    assert!(
        sim.index.poll_transmit().is_none(),
        "nothing until both are known"
    );
    // A guessed secret is ignored.
    sim.index.handle_probe(now, e1, &probe([0; 16]), false);
    assert!(sim.index.poll_transmit().is_none());
    sim.index.handle_probe(now, e1, &p1, false);
    // Told through the sessions (to the clients' control addresses), never to the
    // probes' sources.
    sim.run_for(100 * MS);
    let a = meeting_events(&mut sim, 0);
    let b = meeting_events(&mut sim, 1);
    assert_eq!(a, [Event::PunchPeer { id, peer: Some(e1) }]);
    assert_eq!(b, [Event::PunchPeer { id, peer: Some(e0) }]);
}

#[test]
fn a_symmetric_nat_rules_out_punching_and_meetings_are_bounded() {
    let mut sim = two_tested([false, false], [false, true]);
    sim.clients[1].connect(sim.now, "c0", Via::Punched, [1; 16]);
    sim.run_for(100 * MS);
    let got = meeting_events(&mut sim, 1);
    assert!(matches!(
        &got[..],
        [Event::ConnectFailed {
            reason: Some(Reject::Unreachable),
            ..
        }]
    ));
    // One requester cannot hold more than its share of meetings.
    let mut sim = two_tested([true, true], [false, false]);
    for k in 0..(crate::index::reach::MAX_MEETINGS_PER_CLIENT + 2) {
        sim.clients[1].connect(sim.now, "c0", Via::Reverse, [k as u8 + 10; 16]);
    }
    sim.run_for(100 * MS);
    let refused = meeting_events(&mut sim, 1)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::ConnectFailed {
                    reason: Some(Reject::LimitExceeded),
                    ..
                }
            )
        })
        .count();
    assert_eq!(refused, 2);
    assert_eq!(
        sim.index.meetings(),
        crate::index::reach::MAX_MEETINGS_PER_CLIENT
    );
    // They expire.
    sim.run_for(crate::index::reach::MEETING_LIFETIME + 1000 * MS);
    sim.clients[1].connect(sim.now, "c0", Via::Reverse, [99; 16]);
    sim.run_for(100 * MS);
    assert_eq!(sim.index.meetings(), 1);
}

#[test]
fn a_meeting_id_is_the_requesters_own_and_another_cannot_take_it_over() {
    let mut sim = Sim::new(3);
    register_all(&mut sim);
    let id = [4; 16];
    sim.clients[1].connect(sim.now, "c0", Via::Reverse, id);
    sim.run_for(100 * MS);
    meeting_events(&mut sim, 0);
    sim.clients[2].connect(sim.now, "c0", Via::Reverse, id);
    sim.run_for(100 * MS);
    let got = meeting_events(&mut sim, 2);
    assert!(
        matches!(
            &got[..],
            [Event::ConnectFailed {
                reason: Some(_),
                ..
            }]
        ),
        "{got:?}"
    );
    assert!(
        meeting_events(&mut sim, 0).is_empty(),
        "the owner is not dialed again"
    );
}
