//! The engine on its own.

use super::*;
use crate::net::CLIENTS_PER_IP;
use std::net::IpAddr;

/// A request that cannot be packed must stop the run, not vanish: a silently
/// unsent request would just lower the measured rate.
#[test]
fn a_request_that_does_not_encode_is_an_error() {
    let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut sim = Sim::new(&[nobody], 1, 1, "t-", None).unwrap();
    sim.clients[0].token = Some(1);
    let files = (0..100).map(|i| format!("{i:0>200}")).collect();
    let err = sim.offer(0, files, Kind::Offer).unwrap_err();
    assert!(format!("{err:#}").contains("cannot encode"), "{err:#}");
    assert!(sim.idle());
    assert_eq!(sim.c.requests, 0);
}

/// However clients are spread over sockets, no loopback address carries more than
/// `CLIENTS_PER_IP` of them (the server's per-address limit stays its default).
#[test]
fn no_address_carries_more_clients_than_allowed() {
    let spreads: [(usize, usize); 4] =
        [(1000, 1000), (100_000, 100_000), (100_000, 19_744), (7, 3)];
    for (n, sockets) in spreads {
        let per_sock = n.div_ceil(sockets);
        let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
        for i in 0..n {
            *per_ip.entry(sock_ip(i % sockets, per_sock)).or_default() += 1;
        }
        let most = per_ip.values().copied().max().unwrap();
        assert!(most <= CLIENTS_PER_IP, "{n} over {sockets}: {most}");
    }
}

/// On a shared socket a client waits for the one before it there to be done.
#[test]
fn a_client_takes_a_shared_socket_over_only_when_the_last_one_is_done() {
    let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut sim = Sim::new(&[nobody], 4, 2, "t-", None).unwrap();
    assert!(sim.may_start(0));
    assert!(sim.may_start(1));
    sim.clients[0].outstanding = 1;
    assert!(!sim.may_start(2));
    sim.clients[0].outstanding = 0;
    assert!(sim.may_start(2));
    assert!(sim.may_start(3));
}

/// Clients spread over several servers; each server's table is numbered on its own, so
/// "in sync" means at the newest version of one's own server.
#[test]
fn clients_are_spread_over_servers_and_synced_per_server() {
    let (a, b): (SocketAddr, SocketAddr) = (
        "127.0.0.1:9".parse().unwrap(),
        "127.0.0.1:10".parse().unwrap(),
    );
    let mut sim = Sim::new(&[a, b], 4, 4, "t-", None).unwrap();
    let servers: Vec<usize> = (0..4).map(|c| sim.server_of(c)).collect();
    assert_eq!(servers, [0, 1, 0, 1]);
    for c in &mut sim.clients {
        c.token = Some(1);
    }
    sim.saw_version(0, 7);
    sim.saw_version(1, 3);
    assert_eq!(sim.max_version, [7, 3]);
    for (c, v) in [(0, 7), (1, 3), (2, 6), (3, 3)] {
        sim.clients[c].version = v;
    }
    assert!(!sim.in_sync(), "client 2 is behind its server's 7");
    sim.clients[2].version = 7;
    assert!(
        sim.in_sync(),
        "client 1 and 3 hold their own server's newest, 3"
    );
}
