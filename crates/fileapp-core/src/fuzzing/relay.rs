//! The relay's hello path: [`Ticket::open`] on raw bytes, and the pairing state machine
//! ([`Relay::hello`] and its timers) driven by a script of hellos, raw or sealed by the
//! fuzz server's fixed key.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::Script;
use crate::identity::Identity;
use crate::reach::relay::{HELLO_LEN, HELLO_MAGIC, Limits, Relay, Verdict, hello_bytes};
use crate::reach::ticket::{Role, TICKET_LEN, Ticket};

/// The fuzz server's key: PKCS#8 v1 of the Ed25519 seed `[7; 32]` (fixed, so sealed
/// seeds in the corpus stay valid).
pub fn fuzz_server() -> Identity {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[7; 32]);
    Identity::from_pkcs8(&der).expect("a valid PKCS#8 key")
}

/// Unix time at the start of every script, in milliseconds.
pub const FUZZ_NOW_MS: u64 = 1_700_000_000_000;

/// Two parts. First the whole input is a ticket: `Ticket::open` never panics, and
/// accepts only exactly what the fuzz server seals for the ticket it returns (Ed25519
/// is deterministic), never an expired one. Then the input is a script of steps, each
/// `op u8` with `c = op >> 2` (the connection, or a time step):
/// `op % 4 == 0`: `len u16le, bytes`, a raw hello from connection `c`;
/// `1`: `id u8, role u8, life u8`, a sealed hello (id `[id; 16]`, role `role & 1`,
/// expiring `life * 250` ms from now) from `c`; `2`: time passes by `c * 100` ms and
/// the timers run; `3`: connection `c` leaves (bit 0 of `c`: a session ends instead).
/// The relay's verdicts must agree with a model of who waits, and its limits hold.
pub fn relay_ticket(data: &[u8]) {
    let server = fuzz_server();
    let key = server.public_key();
    for now in [0, FUZZ_NOW_MS, u64::MAX] {
        if let Ok(t) = Ticket::open(data, &key, now) {
            assert_eq!(
                data,
                t.seal(&server),
                "accepted bytes the server did not seal"
            );
            assert!(now < t.expires_ms);
        }
    }
    if let Ok(t) = Ticket::parse_unverified(data) {
        assert_eq!(data.len(), TICKET_LEN);
        assert_eq!(
            &t.seal(&server)[..26],
            &data[..26],
            "framing does not round-trip"
        );
    }
    script(&server, Script(data));
}

fn script(server: &Identity, mut s: Script<'_>) {
    let limits = Limits {
        max_sessions: 4,
        max_waiting: 3,
        max_remembered: 8,
        pair_timeout: Duration::from_secs(1),
    };
    let mut relay = Relay::new(server.public_key(), limits);
    let t0 = Instant::now();
    let mut now = t0;
    let mut waiting: HashSet<u64> = HashSet::new();
    let mut sessions = 0usize;
    while let Some(op) = s.u8() {
        let c = u64::from(op >> 2);
        let now_ms = FUZZ_NOW_MS + now.duration_since(t0).as_millis() as u64;
        let (bytes, raw) = match op % 4 {
            0 => (s.piece().to_vec(), true),
            1 => {
                let (id, role, life) = (
                    s.u8().unwrap_or(0),
                    s.u8().unwrap_or(0),
                    s.u8().unwrap_or(0),
                );
                let role = if role & 1 == 0 {
                    Role::Requester
                } else {
                    Role::Owner
                };
                let t = Ticket {
                    id: [id; 16],
                    role,
                    expires_ms: now_ms + u64::from(life) * 250,
                };
                (hello_bytes(&t.seal(server)).to_vec(), false)
            }
            2 => {
                now += Duration::from_millis(c * 100);
                for gone in relay.handle_timeout(now) {
                    assert!(
                        waiting.remove(&gone),
                        "gave up {gone}, which was not waiting"
                    );
                }
                check(&relay, &waiting, sessions);
                continue;
            }
            _ => {
                if c & 1 == 1 {
                    relay.session_ended();
                    sessions = sessions.saturating_sub(1);
                } else {
                    assert_eq!(relay.left(c), waiting.remove(&c));
                }
                check(&relay, &waiting, sessions);
                continue;
            }
        };
        let verdict = relay.hello(c, &bytes, now, now_ms);
        let framed = bytes.len() == HELLO_LEN && bytes[..4] == HELLO_MAGIC;
        if !framed {
            assert_eq!(verdict, Verdict::Close, "answered what is not a hello");
        }
        match verdict {
            Verdict::Wait | Verdict::Paired { .. } => {
                let t = Ticket::open(&bytes[4..], &server.public_key(), now_ms);
                assert!(t.is_ok(), "let in a ticket that does not open (raw: {raw})");
            }
            Verdict::Close | Verdict::Refuse(_) => {}
        }
        match verdict {
            Verdict::Wait => assert!(waiting.insert(c), "{c} waits twice"),
            Verdict::Paired { partner } => {
                assert!(
                    waiting.remove(&partner),
                    "paired with {partner}, not waiting"
                );
                assert!(!waiting.contains(&c));
                sessions += 1;
            }
            Verdict::Close | Verdict::Refuse(_) => {}
        }
        check(&relay, &waiting, sessions);
    }
}

fn check(relay: &Relay, waiting: &HashSet<u64>, sessions: usize) {
    let l = relay.limits();
    assert_eq!(relay.waiting(), waiting.len());
    assert_eq!(relay.sessions(), sessions);
    assert!(relay.waiting() <= l.max_waiting);
    assert!(relay.sessions() + relay.waiting() <= l.max_sessions);
    assert!(relay.remembered() <= l.max_remembered);
}
