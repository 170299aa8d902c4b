//! The QUIC stream the engine runs on, between two endpoints on loopback.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::connect;
use super::*;
use crate::identity::Identity;
use crate::transfer::secure::TlsIdentity;

/// (owner's stream, requester's stream), connected with pinned keys.
async fn pair() -> (QuicStream, QuicStream) {
    let o = Identity::generate().unwrap();
    let r = Identity::generate().unwrap();
    let (ot, rt) = (TlsIdentity::new(&o).unwrap(), TlsIdentity::new(&r).unwrap());
    let (server, slot) = connect::server_config(&ot, r.public_key()).unwrap();
    let s1 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let s2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a1, a2) = (s1.local_addr().unwrap(), s2.local_addr().unwrap());
    let rt_ = Arc::new(quinn::TokioRuntime);
    let e1 = Endpoint::new(Default::default(), Some(server), s1, rt_.clone()).unwrap();
    let e2 = Endpoint::new(Default::default(), None, s2, rt_).unwrap();
    let (client, seen) = connect::client_config(&rt, o.public_key()).unwrap();
    let (acc, con) = tokio::join!(
        connect::accept(&e1, a2, r.public_key(), &slot),
        connect::connect(&e2, client, &seen, a1, o.public_key())
    );
    let (c1, s1, r1) = acc.unwrap();
    let (c2, s2, r2) = con.unwrap();
    (
        QuicStream::new(s1, r1, c1, e1),
        QuicStream::new(s2, r2, c2, e2),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_read_takes_what_came_then_sees_the_end() {
    let (mut o, r) = pair().await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    o.write_all(&data).await.unwrap();
    o.shutdown().await.unwrap();
    let (mut b, _stop) = r.into_blocking(Duration::from_secs(5));
    let got = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        got
    })
    .await
    .unwrap();
    assert!(got == data, "{} bytes differ", got.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_blocking_read_ends_at_once_when_stopped() {
    let (_o, r) = pair().await;
    let (mut b, stop) = r.into_blocking(Duration::from_secs(30));
    let t0 = Instant::now();
    let job = tokio::task::spawn_blocking(move || {
        let first = b.read(&mut [0u8; 16]).map_err(|e| e.kind());
        let again = b.read(&mut [0u8; 16]).map_err(|e| e.kind());
        (first, again)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.stop();
    let (first, again) = job.await.unwrap();
    assert_eq!(first, Err(io::ErrorKind::ConnectionAborted));
    assert_eq!(again, Err(io::ErrorKind::ConnectionAborted));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_read_gives_up_after_the_stall_limit() {
    let (_o, r) = pair().await;
    let (mut b, _stop) = r.into_blocking(Duration::from_millis(100));
    let r = tokio::task::spawn_blocking(move || b.read(&mut [0u8; 16]).map_err(|e| e.kind()))
        .await
        .unwrap();
    assert_eq!(r, Err(io::ErrorKind::TimedOut));
}

/// Dropping both streams right after writing loses nothing: the linger task keeps the
/// connection until the data is acknowledged, and both sides close it normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_written_before_the_drop_arrives_and_the_connection_closes_cleanly() {
    let (mut o, mut r) = pair().await;
    let conn = r.conn.clone();
    let data = vec![0x5au8; 4 << 20];
    o.write_all(&data).await.unwrap();
    assert_eq!(o.try_write(b"!").unwrap(), 1);
    drop(o);
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), data.len() + 1);
    drop(r);
    let why = tokio::time::timeout(LINGER, conn.closed()).await.unwrap();
    assert!(
        matches!(&why, quinn::ConnectionError::LocallyClosed) || closed_done(&why),
        "{why:?}"
    );
}
