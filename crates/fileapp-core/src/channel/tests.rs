//! The channel under attack: forged, altered, replayed and cross-session datagrams,
//! a swapped server key, floods of handshakes, and no amplification.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::client::HandshakeError;
use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn server(seed: u8, now: Instant) -> ServerChannel {
    ServerChannel::new([seed; 32], [seed ^ 0x55; 32], now, ServerConfig::default())
}

/// Runs the handshake of `client` against `server` from `src`; returns the session.
fn connect(
    server: &mut ServerChannel,
    client: &mut ClientChannel,
    now: Instant,
    src: SocketAddr,
) -> u32 {
    let hello = client.hello().expect("a hello to send");
    let Ok(Inbound::Reply(reply)) = server.handle(now, src, &hello) else {
        panic!("no reply to the hello");
    };
    assert!(
        reply.len() < hello.len(),
        "the reply is smaller than the hello"
    );
    let ev = client
        .handle(&reply)
        .expect("reply accepted")
        .expect("key accepted");
    assert!(matches!(ev, ClientEvent::Ready { .. }));
    // The first data packet authenticates the session on the server.
    let first = client.seal(b"register").unwrap();
    match server.handle(now, src, &first).unwrap() {
        Inbound::Data {
            session, payload, ..
        } => {
            assert_eq!(payload, b"register");
            session
        }
        other => panic!("expected data, got {other:?}"),
    }
}

#[test]
fn a_handshake_gives_both_sides_the_same_hash_and_working_keys() {
    let now = Instant::now();
    let mut s = server(1, now);
    let mut c = ClientChannel::new(Some(ServerPin::Key(s.public_key())), [2; 32]);
    let src = addr("198.51.100.7:4000");
    let session = connect(&mut s, &mut c, now, src);
    assert_eq!(s.handshake_hash(session), c.handshake_hash());
    assert_eq!(c.server_key(), Some(s.public_key()));
    let (to, dgram) = s.seal(session, b"welcome").unwrap();
    assert_eq!(to, src);
    assert_eq!(
        c.handle(&dgram).unwrap().unwrap(),
        ClientEvent::Data(b"welcome".to_vec())
    );
    // Nothing readable crosses the wire.
    assert!(!dgram.windows(7).any(|w| w == b"welcome"));
}

#[test]
fn first_contact_reports_the_key_to_pin() {
    let now = Instant::now();
    let mut s = server(3, now);
    let mut c = ClientChannel::new(None, [4; 32]);
    let reply = match s
        .handle(now, addr("192.0.2.1:1"), &c.hello().unwrap())
        .unwrap()
    {
        Inbound::Reply(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        c.handle(&reply).unwrap().unwrap(),
        ClientEvent::Ready {
            server_key: s.public_key(),
            first_contact: true
        }
    );
}

#[test]
fn a_server_with_another_key_is_refused_and_nothing_is_sealed_for_it() {
    let now = Instant::now();
    let real = server(5, now);
    let mut impostor = server(6, now);
    let mut c = ClientChannel::new(Some(ServerPin::Key(real.public_key())), [7; 32]);
    let Inbound::Reply(reply) = impostor
        .handle(now, addr("192.0.2.1:1"), &c.hello().unwrap())
        .unwrap()
    else {
        panic!("no reply");
    };
    assert_eq!(
        c.handle(&reply).unwrap(),
        Err(HandshakeError::WrongServerKey {
            expected: ServerPin::Key(real.public_key()),
            presented: impostor.public_key()
        })
    );
    assert!(!c.is_ready());
    assert_eq!(c.seal(b"register"), Err(SealError::NoSession));
    assert_eq!(c.hello(), None, "the refused channel does not retry");
}

#[test]
fn forged_altered_replayed_and_cross_session_datagrams_are_dropped() {
    let now = Instant::now();
    let mut s = server(8, now);
    let (a_src, b_src) = (addr("203.0.113.1:1000"), addr("203.0.113.2:1000"));
    let mut a = ClientChannel::new(Some(ServerPin::Key(s.public_key())), [9; 32]);
    let mut b = ClientChannel::new(Some(ServerPin::Key(s.public_key())), [10; 32]);
    let sa = connect(&mut s, &mut a, now, a_src);
    let sb = connect(&mut s, &mut b, now, b_src);

    // Replay: the same packet twice, and an old one after newer ones.
    let p1 = a.seal(b"offer 1").unwrap();
    let p2 = a.seal(b"offer 2").unwrap();
    assert!(matches!(
        s.handle(now, a_src, &p2),
        Ok(Inbound::Data { .. })
    ));
    assert!(
        matches!(s.handle(now, a_src, &p1), Ok(Inbound::Data { .. })),
        "late, not replayed"
    );
    assert_eq!(s.handle(now, a_src, &p1), Err(Dropped::Replayed));
    assert_eq!(s.handle(now, a_src, &p2), Err(Dropped::Replayed));
    assert_eq!(s.stats().replayed, 2, "counted");

    // Every single flipped bit of a valid packet is refused.
    let p3 = a.seal(b"offer 3").unwrap();
    for i in 0..p3.len() * 8 {
        let mut bad = p3.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(
            s.handle(now, a_src, &bad).is_err(),
            "bit {i} flipped was accepted"
        );
    }
    assert!(
        matches!(s.handle(now, a_src, &p3), Ok(Inbound::Data { .. })),
        "the intact one still works"
    );

    // B's packet relabelled with A's session index: wrong keys. (B's counter is moved
    // past A's first, so the replay window cannot be what refuses it.)
    for _ in 0..10 {
        b.seal(b"heartbeat").unwrap();
    }
    let mut cross = b.seal(b"dereg").unwrap();
    cross[1..5].copy_from_slice(&sa.to_le_bytes());
    assert_eq!(s.handle(now, a_src, &cross), Err(Dropped::Forged));
    // A server packet for B does not open at A.
    let (_, for_b) = s.seal(sb, b"table").unwrap();
    let mut relabelled = for_b.clone();
    let a_index = u32::from_le_bytes(s.seal(sa, b"x").unwrap().1[1..5].try_into().unwrap());
    relabelled[1..5].copy_from_slice(&a_index.to_le_bytes());
    assert_eq!(a.handle(&relabelled), Err(Dropped::Forged));
    assert_eq!(
        b.handle(&for_b).unwrap().unwrap(),
        ClientEvent::Data(b"table".to_vec())
    );
    assert!(s.stats().forged >= 1, "counted");
}

#[test]
fn a_forged_reply_does_not_spoil_the_real_one() {
    let now = Instant::now();
    let mut s = server(11, now);
    let mut c = ClientChannel::new(Some(ServerPin::Key(s.public_key())), [12; 32]);
    let hello = c.hello().unwrap();
    let Inbound::Reply(reply) = s.handle(now, addr("192.0.2.9:9"), &hello).unwrap() else {
        panic!();
    };
    let mut forged = reply.clone();
    forged[40] ^= 0xff;
    assert_eq!(c.handle(&forged), Err(Dropped::Forged));
    assert_eq!(c.hello().unwrap(), hello, "the same hello is still pending");
    assert!(matches!(
        c.handle(&reply).unwrap().unwrap(),
        ClientEvent::Ready { .. }
    ));
}

#[test]
fn a_retransmitted_hello_gets_the_same_reply_not_a_second_session() {
    let now = Instant::now();
    let mut s = server(13, now);
    let c = ClientChannel::new(Some(ServerPin::Key(s.public_key())), [14; 32]);
    let src = addr("192.0.2.3:3");
    let hello = c.hello().unwrap();
    let r1 = s.handle(now, src, &hello).unwrap();
    let r2 = s.handle(now, src, &hello).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(s.sessions(), 1);
}

#[test]
fn half_open_sessions_expire() {
    let now = Instant::now();
    let mut s = server(15, now);
    for i in 0..10u8 {
        let c = ClientChannel::new(None, [i; 32]);
        s.handle(now, addr(&format!("192.0.2.{i}:7")), &c.hello().unwrap())
            .unwrap();
    }
    assert_eq!(s.half_open(), 10);
    let due = s.poll_timeout().unwrap();
    assert_eq!(due, now + ServerConfig::default().half_open_timeout);
    s.handle_timeout(due - Duration::from_millis(1));
    assert_eq!(s.half_open(), 10);
    s.handle_timeout(due);
    assert_eq!((s.half_open(), s.sessions()), (0, 0));
}

#[test]
fn under_a_flood_a_hello_needs_a_cookie_before_any_public_key_work() {
    let now = Instant::now();
    let cfg = ServerConfig {
        cookie_above: 4,
        max_half_open: 100,
        ..ServerConfig::default()
    };
    let mut s = ServerChannel::new([16; 32], [17; 32], now, cfg);
    for i in 0..4u8 {
        let c = ClientChannel::new(None, [i; 32]);
        assert!(matches!(
            s.handle(now, addr(&format!("192.0.2.{i}:1")), &c.hello().unwrap()),
            Ok(Inbound::Reply(r)) if r.len() == HELLO_REPLY_LEN
        ));
    }
    let handshakes = s.stats().handshakes;
    let src = addr("198.51.100.99:5");
    let mut c = ClientChannel::new(Some(ServerPin::Key(s.public_key())), [99; 32]);
    let hello = c.hello().unwrap();
    let Ok(Inbound::Reply(cookie)) = s.handle(now, src, &hello) else {
        panic!("expected a cookie");
    };
    assert_eq!(cookie.len(), COOKIE_PACKET_LEN);
    assert!(cookie.len() < hello.len());
    assert_eq!(
        s.stats().handshakes,
        handshakes,
        "no handshake work for a cookie-less hello"
    );
    // A spoofer elsewhere cannot use the cookie sent to `src`.
    assert_eq!(
        c.handle(&cookie).unwrap().unwrap(),
        ClientEvent::CookieRetry
    );
    let with_cookie = c.hello().unwrap();
    assert!(matches!(
        s.handle(now, addr("198.51.100.98:5"), &with_cookie),
        Ok(Inbound::Reply(r)) if r.len() == COOKIE_PACKET_LEN
    ));
    // The real sender gets its handshake.
    let Ok(Inbound::Reply(reply)) = s.handle(now, src, &with_cookie) else {
        panic!("expected a reply");
    };
    assert_eq!(reply.len(), HELLO_REPLY_LEN);
    assert!(matches!(
        c.handle(&reply).unwrap().unwrap(),
        ClientEvent::Ready { .. }
    ));
}

#[test]
fn no_answer_is_larger_than_what_asked_and_garbage_gets_none() {
    let now = Instant::now();
    let mut s = server(18, now);
    let src = addr("192.0.2.50:50");
    let mut seed = 0x1234_5678_u64;
    for len in 0..400usize {
        let mut junk = vec![0u8; len];
        for b in &mut junk {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (seed >> 56) as u8;
        }
        if let Some(t) = junk.first_mut() {
            *t = (len % 6) as u8;
        }
        match s.handle(now, src, &junk) {
            Ok(Inbound::Reply(r)) => assert!(
                r.len() < junk.len(),
                "{len}-byte input got {} bytes",
                r.len()
            ),
            Ok(Inbound::Data { .. }) => panic!("junk authenticated"),
            Err(_) => {}
        }
    }
}

#[test]
fn a_session_follows_its_client_to_a_new_address_only_when_authenticated() {
    let now = Instant::now();
    let mut s = server(19, now);
    let mut c = ClientChannel::new(Some(ServerPin::Key(s.public_key())), [20; 32]);
    let old = addr("192.0.2.1:1");
    let session = connect(&mut s, &mut c, now, old);
    let new = addr("192.0.2.1:2");
    let p = c.seal(b"heartbeat").unwrap();
    assert!(matches!(
        s.handle(now, new, &p),
        Ok(Inbound::Data { roamed: true, .. })
    ));
    assert_eq!(s.peer(session), Some(new));
    // A forged packet from a third address does not move it.
    let mut bad = c.seal(b"heartbeat").unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(s.handle(now, addr("203.0.113.66:6"), &bad).is_err());
    assert_eq!(s.peer(session), Some(new));
}

/// The channel seals with ring's ChaCha20-Poly1305; a peer built on the portable one
/// (snow's default) must read it, and the other way round.
#[test]
fn the_ring_cipher_is_the_portable_one_on_the_wire() {
    use snow::params::CipherChoice;
    use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
    let mut portable = DefaultResolver
        .resolve_cipher(&CipherChoice::ChaChaPoly)
        .unwrap();
    let mut ring = RingResolver
        .resolve_cipher(&CipherChoice::ChaChaPoly)
        .unwrap();
    portable.set(&[7; 32]);
    ring.set(&[7; 32]);
    for (nonce, len) in [(0u64, 0usize), (1, 1), (12_345, 64), (u64::MAX - 1, 1171)] {
        let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut a = vec![0u8; len + 16];
        let mut b = vec![0u8; len + 16];
        portable.encrypt(nonce, &[], &plain, &mut a);
        ring.encrypt(nonce, &[], &plain, &mut b);
        assert_eq!(a, b, "nonce {nonce}, {len} bytes");
        let mut out = vec![0u8; len];
        assert_eq!(ring.decrypt(nonce, &[], &a, &mut out).unwrap(), len);
        assert_eq!(out, plain);
    }
}
