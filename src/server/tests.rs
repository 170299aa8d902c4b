//! The driver's guarantees: persist before reply, and failed sends counted, not dropped.

use std::net::{SocketAddr, UdpSocket as StdSocket};
use std::time::{Duration, Instant};

use super::*;
use crate::client::link::ClientLink;
use crate::index::Index;
use crate::proto::Message;
use crate::store::{MemoryStore, OwnerRecord, StoreError, StoreOp};

/// A store whose disk is always full.
struct FailingStore;

impl Store for FailingStore {
    fn load(&mut self) -> Result<Vec<OwnerRecord>, StoreError> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _: &[StoreOp]) -> Result<(), StoreError> {
        Err(StoreError::Corrupt("disk full".into()))
    }
}

async fn driver(store: Box<dyn Store>) -> Driver {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let now = Instant::now();
    Driver {
        socket,
        index: SecureIndex::new(
            Index::new(Config::default(), Vec::new(), now, [1; 32]),
            [3; 32],
            [4; 32],
            now,
            Default::default(),
        ),
        store,
        stats: DriverStats::default(),
        services: Services::default(),
    }
}

/// Registers `from` through a real handshake, in process; returns the client's link,
/// which opens what the driver then sends.
fn register(d: &mut Driver, from: SocketAddr) -> ClientLink {
    let reg = Message::Register {
        req: 1,
        name: "B".into(),
        instance: 1,
        tcp_port: 1,
        keep_offers: false,
        advertise: None,
        key: None,
        proof: None,
        evict: false,
    };
    let now = Instant::now();
    let mut link = ClientLink::new(None, [5; 32], Duration::from_millis(500));
    link.send(now, reg.encode().unwrap());
    let hello = link.poll_transmit().unwrap();
    d.index.handle_datagram(now, from, &hello);
    let (_, reply) = d.index.poll_transmit().unwrap();
    assert_eq!(link.handle(now, &reply), None);
    let sealed = link.poll_transmit().unwrap();
    d.index.handle_datagram(now, from, &sealed);
    link
}

/// A client socket that gives up reading after a short wait.
fn client() -> StdSocket {
    let c = StdSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    c
}

#[tokio::test]
async fn a_failed_commit_sends_no_reply() {
    let mut d = driver(Box::new(FailingStore)).await;
    let c = client();
    register(&mut d, c.local_addr().unwrap());
    assert!(matches!(d.flush().await, Err(ServerError::Store(_))));
    let mut buf = [0u8; MAX_DATAGRAM];
    assert!(
        c.recv_from(&mut buf).is_err(),
        "the welcome of an unpersisted registration must not leave"
    );
}

#[tokio::test]
async fn the_reply_leaves_after_its_change_is_committed() {
    let mut d = driver(Box::new(MemoryStore::default())).await;
    let c = client();
    let mut link = register(&mut d, c.local_addr().unwrap());
    d.flush().await.unwrap();
    let names: Vec<String> = d
        .store
        .load()
        .unwrap()
        .into_iter()
        .map(|r| r.row.name)
        .collect();
    assert_eq!(names, ["B"]);
    let mut buf = [0u8; MAX_DATAGRAM];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    let opened = link
        .handle(Instant::now(), &buf[..n])
        .expect("sealed for us");
    assert!(matches!(
        Message::decode(&opened),
        Ok(Message::Welcome { req: 1, .. })
    ));
}

#[tokio::test]
async fn a_send_the_socket_refuses_is_counted() {
    let mut d = driver(Box::new(MemoryStore::default())).await;
    // An IPv6 destination for an IPv4 socket: the kernel refuses every send.
    register(&mut d, "[::1]:9".parse().unwrap());
    d.flush().await.unwrap();
    assert_eq!(d.stats.send_failed, 1);
    assert_eq!(d.index.poll_transmit(), None);
}
