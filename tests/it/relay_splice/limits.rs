//! The relay's limits: hellos in progress per address, the session and total rates,
//! many sessions at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fileapp::reach::relay;
use fileapp_core::reach::relay::{TokenBucket, hello_bytes};
use fileapp_core::reach::ticket::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ANSWER, exchange, pair, start, ticket};
use crate::util::random_bytes;

/// A connection to `addr` from the loopback address `from` (any of 127.0.0.0/8).
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    sock.connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_silent_connections_does_not_lock_others_out() {
    let r = start(|c| c.hello_timeout = Duration::from_secs(5)).await;
    let mut silent = Vec::new();
    for _ in 0..relay::MAX_PENDING_HELLOS_PER_IP {
        silent.push(connect_from([127, 0, 0, 1], r.addr).await);
    }
    // One more from that address is closed at once, without a byte.
    let mut s = connect_from([127, 0, 0, 1], r.addr).await;
    s.write_all(&hello_bytes(&ticket(&r.server, 1, Role::Owner)))
        .await
        .unwrap();
    let mut out = Vec::new();
    let t0 = Instant::now();
    let _ = tokio::time::timeout(ANSWER, s.read_to_end(&mut out)).await;
    assert!(
        out.is_empty() && t0.elapsed() < Duration::from_secs(4),
        "{out:?}"
    );
    // Another address pairs as usual.
    let mut halves = Vec::new();
    for role in [Role::Requester, Role::Owner] {
        let hello = hello_bytes(&ticket(&r.server, 2, role));
        halves.push(tokio::spawn(async move {
            let mut s = connect_from([127, 0, 0, 2], r.addr).await;
            s.write_all(&hello).await.unwrap();
            let mut b = [9u8; 1];
            s.read_exact(&mut b).await.unwrap();
            b[0]
        }));
    }
    for h in halves {
        assert_eq!(h.await.unwrap(), 0x00);
    }
    drop(silent);
}

/// Reads `streams` for `span`, asserting after every read that the bytes received since
/// `t0` never exceed `rate` × elapsed + `burst`; returns the total.
async fn read_under_limit(
    streams: Vec<TcpStream>,
    t0: Instant,
    span: Duration,
    rate: u64,
    burst: u64,
) -> u64 {
    let total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut s in streams {
        let total = total.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while t0.elapsed() < span {
                let Ok(Ok(n)) = tokio::time::timeout(span, s.read(&mut buf)).await else {
                    break;
                };
                let sum = total.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                let bound = rate as f64 * t0.elapsed().as_secs_f64() + burst as f64;
                assert!(sum as f64 <= bound, "{sum} bytes by {:?}", t0.elapsed());
                if n == 0 {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    total.load(Ordering::SeqCst)
}

/// Keeps writing into `s` until the test drops the task.
fn flood(mut s: TcpStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let chunk = random_bytes(256 * 1024, 3);
        while s.write_all(&chunk).await.is_ok() {}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_rate_limit_holds() {
    let rate = 1_000_000;
    let r = start(|c| c.session_rate = Some(rate)).await;
    let t0 = Instant::now();
    let (a, b) = pair(r.addr, &r.server, 1).await;
    let writer = flood(a);
    let span = Duration::from_millis(1500);
    let got = read_under_limit(vec![b], t0, span, rate, TokenBucket::default_burst(rate)).await;
    writer.abort();
    assert!(got >= rate, "only {got} bytes in {span:?} at {rate} B/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_rate_limit_holds_across_sessions() {
    let rate = 1_000_000;
    let r = start(|c| c.total_rate = Some(rate)).await;
    let t0 = Instant::now();
    let (a1, b1) = pair(r.addr, &r.server, 1).await;
    let (a2, b2) = pair(r.addr, &r.server, 2).await;
    let writers = [flood(a1), flood(a2)];
    let span = Duration::from_millis(1500);
    let got = read_under_limit(
        vec![b1, b2],
        t0,
        span,
        rate,
        TokenBucket::default_burst(rate),
    )
    .await;
    for w in writers {
        w.abort();
    }
    assert!(got >= rate, "only {got} bytes in {span:?} at {rate} B/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sessions_at_once() {
    let r = Arc::new(start(|_| {}).await);
    let mut sessions = Vec::new();
    for id in 0..100u8 {
        let r = r.clone();
        sessions.push(tokio::spawn(async move {
            let (a, b) = pair(r.addr, &r.server, id).await;
            let (x, y) = (
                random_bytes(128 * 1024, u64::from(id) * 2 + 1),
                random_bytes(96 * 1024, u64::from(id) * 2 + 2),
            );
            let (got_a, got_b) = tokio::join!(exchange(a, x.clone()), exchange(b, y.clone()));
            assert!(got_b == x && got_a == y, "session {id} mixed up");
        }));
    }
    for s in sessions {
        s.await.unwrap();
    }
}
