//! The hole-punched path's throughput on 127.0.0.1, as a ratio to a direct TLS transfer
//! measured in the same run, with the real transfer engine on both.
//!
//! Run: `cargo bench --bench punch [-- SIZE [REPS]]` (SIZE in bytes, suffixes K, M, G;
//! defaults 1G and 5), or `FILEAPP_BENCH_SIZE` / `FILEAPP_BENCH_REPS`.
//!
//! In each repetition, interleaved:
//! - direct: `provider::serve` on a TCP listener + `fetch::fetch` over TLS 1.3 (the
//!   default mode: sendfile-style sealing, splice into the partial).
//! - punched: a tiny fake index server on loopback, two `reach::quic::punch` calls (the
//!   default `PunchConfig`), then `serve_stream` + `fetch_stream` on the punched
//!   streams: the peer protocol inside QUIC, with no TLS session of its own (mode
//!   `0xF3`). Its clock starts before the punch, so the
//!   figure includes probing, punching and both handshakes; the first-byte time is from
//!   the start of the punch to the owner's answer.
//!
//! The target: punched / direct >= 0.5. Files live in `/dev/shm` unless
//! `FILEAPP_BENCH_DIR` says otherwise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fileapp::identity::{Identity, PublicKey};
use fileapp::reach::quic::{PunchConfig, PunchSpec, Side, parse_probe, punch};
use fileapp::transfer::fetch::{FetchEvent, FetchSpec, fetch, fetch_stream};
use fileapp::transfer::provider::{Library, ServeConfig, SharedLibrary, serve, serve_stream};
use fileapp::transfer::secure::{KeyLookup, PeerAuth, Security, TlsIdentity};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

#[path = "../common/mod.rs"]
mod common;
use common::{make_file, size_and_reps};

const NAME: &str = "bench.bin";

/// Owner "A" and requester "bench", each knowing the other's key.
struct Pair {
    owner: Arc<Identity>,
    requester: Arc<Identity>,
    lib: SharedLibrary,
    auth: PeerAuth,
    security: Security,
}

impl Pair {
    fn new(share: &Path) -> Pair {
        let owner = Arc::new(Identity::generate().unwrap());
        let requester = Arc::new(Identity::generate().unwrap());
        let mut lib = Library::default();
        lib.set_dir(share.to_path_buf());
        lib.offer(NAME).unwrap();
        let table = HashMap::from([("bench".to_string(), requester.public_key())]);
        let lookup: KeyLookup = Arc::new(RwLock::new(table));
        let auth = PeerAuth::tls(Arc::new(TlsIdentity::new(&owner).unwrap()), lookup);
        let security = Security::Tls(Arc::new(TlsIdentity::new(&requester).unwrap()));
        Pair {
            owner,
            requester,
            lib: Arc::new(RwLock::new(lib)),
            auth,
            security,
        }
    }

    fn spec(&self, peer: SocketAddr, dest: &Path) -> FetchSpec {
        let mut spec = FetchSpec::new(peer, "A", NAME, "bench", dest);
        spec.peer_key = Some(self.owner.public_key());
        spec
    }
}

/// Records when the owner's answer arrived, measured from `t0`.
fn first_byte(t0: Instant) -> (Arc<Mutex<Option<Duration>>>, impl FnMut(FetchEvent) + Send) {
    let slot = Arc::new(Mutex::new(None));
    let s = slot.clone();
    (slot, move |e| {
        if let FetchEvent::Started { .. } = e {
            s.lock().unwrap().get_or_insert(t0.elapsed());
        }
    })
}

/// One direct TLS download: (total, first byte).
async fn direct(
    p: &Pair,
    addr: SocketAddr,
    dest: &Path,
    expect: &[u8; 32],
) -> (Duration, Duration) {
    let (_c, cancel) = watch::channel(false);
    let t0 = Instant::now();
    let (first, on_event) = first_byte(t0);
    let report = fetch(p.spec(addr, dest), p.security.clone(), on_event, cancel)
        .await
        .unwrap();
    let el = t0.elapsed();
    assert_eq!(&report.hash, expect);
    let first = first.lock().unwrap().unwrap_or_default();
    (el, first)
}

/// The fake index server: names each side's probe source to the other.
async fn fake_server(
    to_r: oneshot::Sender<SocketAddr>,
    to_o: oneshot::Sender<SocketAddr>,
) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut seen: HashMap<[u8; 16], SocketAddr> = HashMap::new();
        let mut buf = [0u8; 64];
        while seen.len() < 2 {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            if let Some(secret) = parse_probe(&buf[..n]) {
                seen.entry(secret).or_insert(from);
            }
        }
        let _ = to_r.send(seen[&[1; 16]]);
        let _ = to_o.send(seen[&[2; 16]]);
    });
    addr
}

fn punch_spec(side: Side, server: SocketAddr, me: &Arc<Identity>, peer: PublicKey) -> PunchSpec {
    PunchSpec {
        side,
        id: [9; 16],
        secret: if side == Side::Requester {
            [2; 16]
        } else {
            [1; 16]
        },
        server,
        cfg: PunchConfig::default(),
        identity: me.clone(),
        peer_key: peer,
    }
}

/// One punched download, the punch included: (total, first byte, punch and QUIC
/// handshake alone).
async fn punched(p: &Pair, dest: &Path, expect: &[u8; 32]) -> (Duration, Duration, Duration) {
    let t0 = Instant::now();
    let (tx_r, rx_r) = oneshot::channel();
    let (tx_o, rx_o) = oneshot::channel();
    let server = fake_server(tx_r, tx_o).await;
    let (pr, po) = tokio::join!(
        punch(
            punch_spec(Side::Requester, server, &p.requester, p.owner.public_key()),
            rx_r
        ),
        punch(
            punch_spec(Side::Owner, server, &p.owner, p.requester.public_key()),
            rx_o
        ),
    );
    let (pr, po) = (pr.unwrap(), po.unwrap());
    let open = t0.elapsed();
    let (ntx, _notices) = mpsc::unbounded_channel();
    let served = tokio::spawn(serve_stream(
        po.stream,
        po.peer,
        p.lib.clone(),
        ntx,
        p.auth.clone(),
        ServeConfig::default(),
    ));
    let (_c, cancel) = watch::channel(false);
    let (first, on_event) = first_byte(t0);
    let report = fetch_stream(
        pr.stream,
        p.spec(pr.peer, dest),
        p.security.clone(),
        on_event,
        cancel,
    )
    .await
    .unwrap();
    let el = t0.elapsed();
    assert_eq!(&report.hash, expect);
    served.await.unwrap();
    let first = first.lock().unwrap().unwrap_or_default();
    (el, first, open)
}

/// Raw bytes through the punched streams, no TLS inside and no files: (time for `size`
/// bytes owner → requester, punch excluded). The ceiling of the QUIC path itself.
async fn raw_punched(p: &Pair, size: u64) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx_r, rx_r) = oneshot::channel();
    let (tx_o, rx_o) = oneshot::channel();
    let server = fake_server(tx_r, tx_o).await;
    let (pr, po) = tokio::join!(
        punch(
            punch_spec(Side::Requester, server, &p.requester, p.owner.public_key()),
            rx_r
        ),
        punch(
            punch_spec(Side::Owner, server, &p.owner, p.requester.public_key()),
            rx_o
        ),
    );
    let (mut r, mut o) = (pr.unwrap().stream, po.unwrap().stream);
    let t0 = Instant::now();
    let writer = tokio::spawn(async move {
        let buf = vec![0x5au8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            o.write_all(&buf[..n]).await.unwrap();
            left -= n as u64;
        }
        o.shutdown().await.unwrap();
        o
    });
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let el = t0.elapsed();
    assert_eq!(got, size);
    drop(writer.await.unwrap());
    el
}

fn gib_s(size: u64, d: Duration) -> f64 {
    size as f64 / d.as_secs_f64() / (1u64 << 30) as f64
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let (size, reps) = size_and_reps();
    let base = std::env::var("FILEAPP_BENCH_DIR").unwrap_or_else(|_| {
        if Path::new("/dev/shm").is_dir() {
            "/dev/shm".into()
        } else {
            std::env::temp_dir().display().to_string()
        }
    });
    let work = tempfile::tempdir_in(base).unwrap();
    let share = work.path().join("share");
    let dest = work.path().join("dest");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    println!(
        "punch bench: {size} bytes ({:.2} GiB), {reps} repetitions, in {}",
        size as f64 / (1u64 << 30) as f64,
        work.path().display()
    );
    let expect = make_file(&share.join(NAME), size);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pair = Pair::new(&share);
    let (ntx, _notices) = mpsc::unbounded_channel();
    let (_accepting_tx, accepting) = watch::channel(true);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(serve(
        listener,
        pair.lib.clone(),
        ntx,
        accepting,
        pair.auth.clone(),
    ));
    let out = dest.join(NAME);
    let (mut d_all, mut d_first, mut p_all, mut p_first, mut p_open, mut ratios) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..reps {
        let (d, df) = rt.block_on(direct(&pair, addr, &dest, &expect));
        std::fs::remove_file(&out).unwrap();
        let (p, pf, po) = rt.block_on(punched(&pair, &dest, &expect));
        std::fs::remove_file(&out).unwrap();
        println!(
            "rep {}: direct TLS {:.2} GiB/s (first byte {:.2} ms); punched QUIC {:.2} GiB/s (punch + QUIC {:.2} ms, first byte {:.2} ms); ratio {:.2}",
            i + 1,
            gib_s(size, d),
            ms(df),
            gib_s(size, p),
            ms(po),
            ms(pf),
            d.as_secs_f64() / p.as_secs_f64()
        );
        let raw = rt.block_on(raw_punched(&pair, size));
        println!(
            "       raw bytes through the punched streams: {:.2} GiB/s",
            gib_s(size, raw)
        );
        ratios.push(d.as_secs_f64() / p.as_secs_f64());
        d_all.push(d);
        d_first.push(df);
        p_all.push(p);
        p_first.push(pf);
        p_open.push(po);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median: direct TLS {:.2} GiB/s, punched QUIC {:.2} GiB/s; punched / direct {:.2} (paired median {:.2}; target >= 0.5)",
        gib_s(size, median(&mut d_all)),
        gib_s(size, median(&mut p_all)),
        median(&mut d_all).as_secs_f64() / median(&mut p_all).as_secs_f64(),
        ratios[ratios.len() / 2]
    );
    println!(
        "median start to first byte: direct {:.2} ms; punched {:.2} ms (of which punch + QUIC handshake {:.2} ms)",
        ms(median(&mut d_first)),
        ms(median(&mut p_first)),
        ms(median(&mut p_open))
    );
}
