//! The link across a move: the deployment's key, pinned at first contact, is the only
//! one another server of the list may present.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::channel::{Inbound, ServerChannel, ServerConfig};

const RETRY: Duration = Duration::from_millis(500);

fn server(secret: u8, now: Instant) -> ServerChannel {
    ServerChannel::new(
        [secret; 32],
        [secret ^ 0x55; 32],
        now,
        ServerConfig::default(),
    )
}

/// Sends `msg` through `link` and runs the handshake with `server`; returns the events.
fn open(link: &mut ClientLink, server: &mut ServerChannel, now: Instant) -> Vec<LinkEvent> {
    let src: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    link.send(now, b"register".to_vec());
    let hello = link.poll_transmit().expect("a hello");
    if let Ok(Inbound::Reply(reply)) = server.handle(now, src, &hello) {
        assert_eq!(link.handle(now, &reply), None);
    }
    std::iter::from_fn(|| link.poll_event()).collect()
}

#[test]
fn after_first_contact_a_move_accepts_the_same_key_at_another_server_only() {
    let now = Instant::now();
    let (mut s1, mut s2) = (server(1, now), server(1, now));
    let mut link = ClientLink::new(None, [7; 32], RETRY);
    let ev = open(&mut link, &mut s1, now);
    assert!(matches!(
        ev.as_slice(),
        [LinkEvent::Ready {
            first_contact: true,
            ..
        }]
    ));
    assert!(link.is_ready());
    // The deployment's second server has the same key: accepted, not a first contact.
    link.move_to_next();
    assert!(!link.is_ready());
    let ev = open(&mut link, &mut s2, now);
    assert!(
        matches!(
            ev.as_slice(),
            [LinkEvent::Ready {
                first_contact: false,
                ..
            }]
        ),
        "{ev:?}"
    );
    assert_eq!(link.stats().moves, 1);
    // A server with another key is refused, though nothing was pinned by the user.
    let mut other = server(9, now);
    link.move_to_next();
    let ev = open(&mut link, &mut other, now);
    assert!(matches!(ev.as_slice(), [LinkEvent::Refused(_)]), "{ev:?}");
    assert!(!link.is_ready());
}

/// A path that drops our datagrams for a moment makes the link handshake again at the
/// same address. Whoever answers that handshake with another key is refused, though the
/// user pinned nothing and this run's first contact was trust on first use: otherwise
/// the path could take the session over as a "first contact".
#[test]
fn a_restart_at_the_same_address_must_present_the_first_sessions_key() {
    let now = Instant::now();
    let src: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let mut s1 = server(1, now);
    let mut link = ClientLink::new(None, [7; 32], RETRY);
    let ev = open(&mut link, &mut s1, now);
    assert!(
        matches!(
            ev.as_slice(),
            [LinkEvent::Ready {
                first_contact: true,
                ..
            }]
        ),
        "{ev:?}"
    );
    while link.poll_transmit().is_some() {}
    // The same request unanswered for a retry interval: the link starts over.
    let t = now + Duration::from_millis(10);
    link.send(t, b"heartbeat".to_vec());
    link.send(t + RETRY, b"heartbeat".to_vec());
    assert_eq!(link.stats().restarts, 1);
    let mut attacker = server(9, now);
    let mut answered = false;
    while let Some(d) = link.poll_transmit() {
        if let Ok(Inbound::Reply(reply)) = attacker.handle(t + RETRY, src, &d) {
            answered = true;
            assert_eq!(link.handle(t + RETRY, &reply), None);
        }
    }
    assert!(answered, "the attacker answered the new handshake");
    let ev: Vec<LinkEvent> = std::iter::from_fn(|| link.poll_event()).collect();
    assert!(matches!(ev.as_slice(), [LinkEvent::Refused(_)]), "{ev:?}");
    assert!(!link.is_ready());
}
