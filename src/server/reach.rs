//! Reach, the server driver's half: the probe port (the UDP port + 1), where clients'
//! NAT tests arrive, and the reachability tests of clients' TCP ports (connect from
//! outside, say [`MODE_PROBE`], close). What they find goes to the index.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};

use crate::index::{PROBE_LEN, ReachTest};
use crate::transfer::secure::MODE_PROBE;

/// How long a client's TCP port may take to accept the test connection.
pub const TEST_TIMEOUT: Duration = Duration::from_millis(1500);
/// Tests running at once (each is one connection attempt).
const TESTS_AT_ONCE: usize = 64;

/// What the reach service brings the driver.
pub enum ReachEvent {
    /// A datagram on the probe port.
    Probe(SocketAddr, Vec<u8>),
    /// A TCP port test finished: reachable or not.
    Tested(ReachTest, bool),
}

/// The probe socket and the running tests.
pub struct ReachService {
    probe: Option<UdpSocket>,
    tx: mpsc::UnboundedSender<(ReachTest, bool)>,
    rx: mpsc::UnboundedReceiver<(ReachTest, bool)>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for ReachService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReachService(probe port: {})", self.probe.is_some())
    }
}

impl ReachService {
    /// With the probe port's socket, if it could be bound (without it NAT types stay
    /// unknown; reachability is still tested).
    pub fn new(probe: Option<UdpSocket>) -> ReachService {
        let (tx, rx) = mpsc::unbounded_channel();
        ReachService {
            probe,
            tx,
            rx,
            slots: Arc::new(Semaphore::new(TESTS_AT_ONCE)),
        }
    }

    /// Tests `t`'s TCP port from here, in the background.
    pub fn start_test(&self, t: ReachTest) {
        let (tx, slots) = (self.tx.clone(), self.slots.clone());
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let conn = tokio::time::timeout(TEST_TIMEOUT, TcpStream::connect(t.addr)).await;
            let ok = matches!(conn, Ok(Ok(_)));
            if let Ok(Ok(mut s)) = conn {
                let _ = s.write_all(&[MODE_PROBE]).await;
                let _ = s.shutdown().await;
            }
            let _ = tx.send((t, ok));
        });
    }
}

/// The next reach event; never, without a service.
pub async fn recv(svc: &mut Option<ReachService>) -> Option<ReachEvent> {
    let Some(s) = svc.as_mut() else {
        return std::future::pending().await;
    };
    let mut buf = [0u8; PROBE_LEN + 1];
    tokio::select! {
        Some((t, ok)) = s.rx.recv() => Some(ReachEvent::Tested(t, ok)),
        r = async {
            match &s.probe {
                Some(p) => p.recv_from(&mut buf).await,
                None => std::future::pending().await,
            }
        } => match r {
            Ok((n, src)) => Some(ReachEvent::Probe(src, buf[..n].to_vec())),
            Err(_) => None,
        },
    }
}
