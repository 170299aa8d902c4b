//! The engine on its own.

use super::*;

/// A request that cannot be packed must stop the run, not vanish: a silently
/// unsent request would just lower the measured rate.
#[test]
fn a_request_that_does_not_encode_is_an_error() {
    let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut sim = Sim::new(&[nobody], 1, 1, "t-").unwrap();
    sim.clients[0].token = Some(1);
    let files = (0..100).map(|i| format!("{i:0>200}")).collect();
    let err = sim.offer(0, files, Kind::Offer).unwrap_err();
    assert!(format!("{err:#}").contains("cannot encode"), "{err:#}");
    assert!(sim.idle());
    assert_eq!(sim.c.requests, 0);
}
