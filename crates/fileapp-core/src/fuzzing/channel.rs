//! The control channel's receive paths: the server's [`SecureIndex`] and the client's
//! [`ClientLink`], each holding a real open session, fed arbitrary datagrams.
//!
//! Script layout: repeated steps of one selector byte, then a 16-bit-length piece:
//! - selector even: the piece goes to the server, from the session's address when the
//!   selector is 0 mod 4 and from an address with no session otherwise;
//! - selector odd: the piece goes to the client, as if from the server's address.
//!
//! The checks: nothing panics; no forged datagram reaches the index or the client core
//! (the fuzzer holds no session key); the server answers an address with no session
//! only with a handshake packet smaller than the datagram; and the real session still
//! works afterwards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::channel::{ServerConfig, ServerPin, TYPE_DATA};
use crate::client::link::ClientLink;
use crate::index::{Config, Index, SecureIndex};
use crate::proto::Message;

use super::Script;

fn heartbeat(req: u64) -> Vec<u8> {
    Message::Heartbeat {
        req,
        token: 9,
        table_version: 0,
    }
    .encode()
    .expect("fits")
}

/// Delivers everything the link and the server want to send, both ways.
fn pump(server: &mut SecureIndex, link: &mut ClientLink, now: Instant, src: SocketAddr) -> usize {
    let mut opened = 0;
    for _ in 0..8 {
        let mut moved = false;
        while let Some(d) = link.poll_transmit() {
            server.handle_datagram(now, src, &d);
            moved = true;
        }
        while let Some((_, d)) = server.poll_transmit() {
            if link.handle(now, &d).is_some() {
                opened += 1;
            }
            moved = true;
        }
        if !moved {
            break;
        }
    }
    opened
}

pub fn channel(data: &[u8]) {
    let now = Instant::now();
    let index = Index::new(Config::default(), Vec::new(), now, [1; 32]);
    let mut server = SecureIndex::new(index, [2; 32], [3; 32], now, ServerConfig::default());
    let pin = Some(ServerPin::Key(server.public_key()));
    let mut link = ClientLink::new(pin, [4; 32], Duration::from_millis(500));
    let src: SocketAddr = "192.0.2.1:4000".parse().expect("address");
    let stranger: SocketAddr = "198.51.100.9:5000".parse().expect("address");
    link.send(now, heartbeat(1));
    assert_eq!(
        pump(&mut server, &mut link, now, src),
        1,
        "the session opens"
    );
    let before = server.index().stats().datagrams_in;

    let mut s = Script(data);
    while let Some(sel) = s.u8() {
        let piece = s.piece();
        if sel % 2 == 1 {
            assert_eq!(link.handle(now, piece), None, "a forged datagram opened");
            continue;
        }
        let from = if sel % 4 == 0 { src } else { stranger };
        if sel % 8 == 6 {
            // The probe port (NAT tests): never answered, whatever arrives.
            server.handle_probe_port(now, from, piece);
            assert!(server.poll_transmit().is_none(), "a probe was answered");
            continue;
        }
        server.handle_datagram(now, from, piece);
        while let Some((to, reply)) = server.poll_transmit() {
            assert_ne!(
                reply.first(),
                Some(&TYPE_DATA),
                "an answer inside a session"
            );
            assert!(reply.len() < piece.len(), "amplification to {to}");
        }
        assert_eq!(
            server.index().stats().datagrams_in,
            before,
            "a forged datagram opened"
        );
    }
    // The real session is unharmed.
    link.send(now, heartbeat(2));
    assert_eq!(
        pump(&mut server, &mut link, now, src),
        1,
        "the session still works"
    );
}
