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
