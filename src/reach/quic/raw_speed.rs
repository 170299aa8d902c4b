//! A measurement, not a check (ignored by default): 1 GiB over one QUIC stream between
//! two endpoints on loopback with the punched path's configuration, quinn's API alone
//! (no `QuicStream`, no engine): the ceiling of the punched path on this machine. Run:
//! `cargo test --release --lib raw_quic_stream_speed -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::Instant;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored --nocapture"]
async fn raw_quic_stream_speed() {
    let o = Identity::generate().unwrap();
    let r = Identity::generate().unwrap();
    let (ot, rt) = (TlsIdentity::new(&o).unwrap(), TlsIdentity::new(&r).unwrap());
    let (server, slot) = connect::server_config(&ot, r.public_key()).unwrap();
    let s1 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let s2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a1, a2) = (s1.local_addr().unwrap(), s2.local_addr().unwrap());
    let e1 = quinn::Endpoint::new(
        Default::default(),
        Some(server),
        s1,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    let e2 =
        quinn::Endpoint::new(Default::default(), None, s2, Arc::new(quinn::TokioRuntime)).unwrap();
    let (client, seen) = connect::client_config(&rt, o.public_key()).unwrap();
    let pk = o.public_key();
    let (acc, con) = tokio::join!(
        connect::accept(&e1, a2, r.public_key(), &slot),
        connect::connect(&e2, client, &seen, a1, pk)
    );
    let (_c1, mut send, _r1) = acc.unwrap();
    let (_c2, _s2, mut recv) = con.unwrap();
    let size: u64 = 1 << 30;
    let t0 = Instant::now();
    let w = tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![7u8; 256 << 10]);
        let mut left = size;
        while left > 0 {
            send.write_chunk(chunk.clone()).await.unwrap();
            left -= chunk.len() as u64;
        }
        send.finish().unwrap();
        let _ = send.stopped().await;
    });
    let mut got = 0u64;
    while let Some(c) = recv.read_chunk(usize::MAX, true).await.unwrap() {
        got += c.bytes.len() as u64;
    }
    let el = t0.elapsed();
    w.await.unwrap();
    assert_eq!(got, size);
    eprintln!(
        "one QUIC stream, quinn alone: {:.2} GiB/s",
        got as f64 / el.as_secs_f64() / (1u64 << 30) as f64
    );
}
