//! The relay's pairing under a fake clock: `now` and `now_ms` advance together.

use super::*;
use crate::identity::Identity;

const T0_MS: u64 = 1_700_000_000_000;

struct World {
    server: Identity,
    relay: Relay,
    t0: Instant,
    now: Instant,
}

impl World {
    fn new(limits: Limits) -> World {
        let server = Identity::generate().unwrap();
        let relay = Relay::new(server.public_key(), limits);
        let t0 = Instant::now();
        World {
            server,
            relay,
            t0,
            now: t0,
        }
    }

    fn now_ms(&self) -> u64 {
        T0_MS + self.now.duration_since(self.t0).as_millis() as u64
    }

    fn ticket(&self, id: u8, role: Role) -> [u8; HELLO_LEN] {
        let t = Ticket {
            id: [id; 16],
            role,
            expires_ms: self.now_ms() + 30_000,
        };
        hello_bytes(&t.seal(&self.server))
    }

    fn hello(&mut self, conn: ConnId, bytes: &[u8]) -> Verdict {
        let ms = self.now_ms();
        self.relay.hello(conn, bytes, self.now, ms)
    }

    fn advance(&mut self, d: Duration) -> Vec<ConnId> {
        self.now += d;
        self.relay.handle_timeout(self.now)
    }
}

#[test]
fn two_halves_of_one_id_pair() {
    let mut w = World::new(Limits::default());
    let r = w.ticket(1, Role::Requester);
    let o = w.ticket(1, Role::Owner);
    assert_eq!(w.hello(10, &r), Verdict::Wait);
    assert_eq!(w.relay.waiting(), 1);
    assert_eq!(w.hello(11, &o), Verdict::Paired { partner: 10 });
    assert_eq!((w.relay.waiting(), w.relay.sessions()), (0, 1));
    // The owner may come first just as well.
    let o2 = w.ticket(2, Role::Owner);
    let r2 = w.ticket(2, Role::Requester);
    assert_eq!(w.hello(12, &o2), Verdict::Wait);
    assert_eq!(w.hello(13, &r2), Verdict::Paired { partner: 12 });
    assert_eq!(w.relay.sessions(), 2);
    w.relay.session_ended();
    w.relay.session_ended();
    w.relay.session_ended();
    assert_eq!(w.relay.sessions(), 0);
}

#[test]
fn not_a_hello_is_closed_without_a_byte() {
    let mut w = World::new(Limits::default());
    let good = w.ticket(1, Role::Owner);
    assert_eq!(w.hello(1, &[]), Verdict::Close);
    assert_eq!(w.hello(1, &good[..93]), Verdict::Close);
    let mut magic = good;
    magic[0] = b'G';
    assert_eq!(w.hello(1, &magic), Verdict::Close);
    let mut long = good.to_vec();
    long.push(0);
    assert_eq!(w.hello(1, &long), Verdict::Close);
    assert_eq!(w.relay.remembered(), 0);
}

#[test]
fn forged_tickets_are_bad_and_leave_no_trace() {
    let mut w = World::new(Limits::default());
    let good = w.ticket(1, Role::Owner);
    for i in 4..HELLO_LEN {
        let mut f = good;
        f[i] ^= 0x40;
        assert_eq!(
            w.hello(1, &f),
            Verdict::Refuse(Status::BadTicket),
            "byte {i}"
        );
    }
    let other = Identity::generate().unwrap();
    let t = Ticket {
        id: [1; 16],
        role: Role::Owner,
        expires_ms: w.now_ms() + 1000,
    };
    let forged = hello_bytes(&t.seal(&other));
    assert_eq!(w.hello(1, &forged), Verdict::Refuse(Status::BadTicket));
    assert_eq!((w.relay.remembered(), w.relay.waiting()), (0, 0));
    // The genuine ticket still works: the forgeries used nothing up.
    assert_eq!(w.hello(1, &good), Verdict::Wait);
}

#[test]
fn expired_and_far_future_tickets_are_refused() {
    let mut w = World::new(Limits::default());
    let old = w.ticket(1, Role::Owner);
    w.now += Duration::from_secs(30);
    assert_eq!(w.hello(1, &old), Verdict::Refuse(Status::Expired));
    let far = Ticket {
        id: [2; 16],
        role: Role::Owner,
        expires_ms: w.now_ms() + MAX_TICKET_AHEAD.as_millis() as u64 + 1,
    };
    let far = hello_bytes(&far.seal(&w.server));
    assert_eq!(w.hello(2, &far), Verdict::Refuse(Status::BadTicket));
    assert_eq!(w.relay.remembered(), 0);
}

#[test]
fn a_ticket_is_used_once_per_role() {
    let mut w = World::new(Limits::default());
    let r = w.ticket(1, Role::Requester);
    let o = w.ticket(1, Role::Owner);
    assert_eq!(w.hello(1, &r), Verdict::Wait);
    // The same role again (another requester, or the same ticket replayed) while the
    // first waits.
    assert_eq!(w.hello(2, &r), Verdict::Refuse(Status::AlreadyUsed));
    assert_eq!(w.hello(3, &o), Verdict::Paired { partner: 1 });
    // Replays after pairing.
    assert_eq!(w.hello(4, &r), Verdict::Refuse(Status::AlreadyUsed));
    assert_eq!(w.hello(5, &o), Verdict::Refuse(Status::AlreadyUsed));
    assert_eq!(w.relay.sessions(), 1);
}

#[test]
fn a_used_ticket_is_remembered_until_it_expires_then_forgotten() {
    let mut w = World::new(Limits::default());
    let r = w.ticket(1, Role::Requester);
    assert_eq!(w.hello(1, &r), Verdict::Wait);
    assert_eq!(w.relay.remembered(), 1);
    assert_eq!(w.advance(Duration::from_secs(10)), vec![1]);
    assert_eq!(w.relay.remembered(), 1, "gave up waiting, still used");
    assert_eq!(w.hello(2, &r), Verdict::Refuse(Status::AlreadyUsed));
    assert_eq!(w.relay.poll_timeout(), Some(w.t0 + Duration::from_secs(30)));
    w.advance(Duration::from_secs(20));
    assert_eq!(w.relay.remembered(), 0);
    assert_eq!(w.relay.poll_timeout(), None);
    // Once it expired, it is refused as expired, never accepted again.
    assert_eq!(w.hello(3, &r), Verdict::Refuse(Status::Expired));
}

#[test]
fn a_half_whose_partner_never_comes_is_given_up_at_its_deadline() {
    let mut w = World::new(Limits {
        pair_timeout: Duration::from_millis(500),
        ..Limits::default()
    });
    let a = w.ticket(1, Role::Requester);
    assert_eq!(w.hello(7, &a), Verdict::Wait);
    assert_eq!(
        w.relay.poll_timeout(),
        Some(w.now + Duration::from_millis(500))
    );
    assert!(w.advance(Duration::from_millis(499)).is_empty());
    assert_eq!(w.advance(Duration::from_millis(1)), vec![7]);
    assert_eq!(w.relay.waiting(), 0);
    // The partner that comes late waits alone in turn.
    let b = w.ticket(1, Role::Owner);
    assert_eq!(w.hello(8, &b), Verdict::Wait);
    assert_eq!(w.advance(Duration::from_millis(500)), vec![8]);
    assert_eq!(w.relay.sessions(), 0);
}

#[test]
fn a_half_that_leaves_frees_its_place_but_not_its_ticket() {
    let mut w = World::new(Limits::default());
    let a = w.ticket(1, Role::Requester);
    assert_eq!(w.hello(1, &a), Verdict::Wait);
    assert!(w.relay.left(1));
    assert!(!w.relay.left(1));
    assert_eq!(w.relay.waiting(), 0);
    assert!(
        w.advance(Duration::from_secs(11)).is_empty(),
        "no deadline left"
    );
    assert_eq!(w.hello(2, &a), Verdict::Refuse(Status::AlreadyUsed));
    let b = w.ticket(1, Role::Owner);
    assert_eq!(w.hello(3, &b), Verdict::Wait, "no partner to pair with");
}

#[test]
fn sessions_and_waiting_halves_are_limited() {
    let mut w = World::new(Limits {
        max_sessions: 3,
        max_waiting: 2,
        ..Limits::default()
    });
    let h = |w: &World, id, role| w.ticket(id, role);
    let (a, b, c) = (
        h(&w, 1, Role::Owner),
        h(&w, 2, Role::Owner),
        h(&w, 3, Role::Owner),
    );
    assert_eq!(w.hello(1, &a), Verdict::Wait);
    assert_eq!(w.hello(2, &b), Verdict::Wait);
    assert_eq!(w.hello(3, &c), Verdict::Refuse(Status::Full), "2 waiting");
    // Refused as full, the ticket is not used up: it works once there is room.
    let pa = h(&w, 1, Role::Requester);
    assert_eq!(w.hello(4, &pa), Verdict::Paired { partner: 1 });
    assert_eq!(w.hello(5, &c), Verdict::Wait);
    // 1 session + 2 waiting = 3: a new first half is refused, but a partner pairs.
    let d = h(&w, 4, Role::Owner);
    assert_eq!(w.hello(6, &d), Verdict::Refuse(Status::Full));
    let pb = h(&w, 2, Role::Requester);
    assert_eq!(w.hello(7, &pb), Verdict::Paired { partner: 2 });
    let pc = h(&w, 3, Role::Requester);
    assert_eq!(w.hello(8, &pc), Verdict::Paired { partner: 5 });
    assert_eq!((w.relay.sessions(), w.relay.waiting()), (3, 0));
    assert_eq!(w.hello(6, &d), Verdict::Refuse(Status::Full), "3 sessions");
    w.relay.session_ended();
    assert_eq!(w.hello(6, &d), Verdict::Wait);
}

#[test]
fn remembered_tickets_are_limited() {
    let mut w = World::new(Limits {
        max_remembered: 2,
        ..Limits::default()
    });
    let (a, b, c) = (
        w.ticket(1, Role::Owner),
        w.ticket(2, Role::Owner),
        w.ticket(3, Role::Owner),
    );
    assert_eq!(w.hello(1, &a), Verdict::Wait);
    assert_eq!(w.hello(2, &b), Verdict::Wait);
    assert_eq!(w.hello(3, &c), Verdict::Refuse(Status::Full));
    w.advance(Duration::from_secs(31));
    assert_eq!(w.relay.remembered(), 0);
    let c = w.ticket(3, Role::Owner);
    assert_eq!(w.hello(3, &c), Verdict::Wait);
}

#[test]
fn status_bytes_are_the_documented_ones() {
    let all = [
        (Status::Paired, 0),
        (Status::BadTicket, 1),
        (Status::Expired, 2),
        (Status::AlreadyUsed, 3),
        (Status::Full, 4),
        (Status::PartnerTimeout, 5),
    ];
    for (s, b) in all {
        assert_eq!(s.to_byte(), b);
        assert_eq!(Status::from_byte(b), Some(s));
    }
    assert_eq!(Status::from_byte(6), None);
    assert_eq!(&hello_bytes(&[9; TICKET_LEN])[..4], b"FARL");
}

#[test]
fn one_connection_cannot_wait_twice() {
    let mut w = World::new(Limits::default());
    let a = w.ticket(1, Role::Owner);
    let b = w.ticket(2, Role::Owner);
    assert_eq!(w.hello(1, &a), Verdict::Wait);
    assert_eq!(w.hello(1, &b), Verdict::Close);
    assert_eq!(w.relay.waiting(), 1);
}
