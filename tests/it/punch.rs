//! The hole-punched path in process, on 127.0.0.1: two `punch()` calls meet through a
//! tiny fake index server (it reads each side's probe and tells each the other's source
//! endpoint), connect QUIC with pinned keys, and carry bytes through the punched QUIC
//! streams; wrong keys, a silent peer and a control channel that never answers
//! fail with typed errors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fileapp::identity::{Identity, PublicKey};
use fileapp::reach::quic::{PunchConfig, PunchError, PunchSpec, Punched, Side, parse_probe, punch};
use fileapp::transfer::fetch::{FetchSpec, fetch_stream};
use fileapp::transfer::provider::{Library, ServeConfig, serve_stream};
use fileapp::transfer::secure::{KeyLookup, PeerAuth, Security, TlsIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

const SECRET_R: [u8; 16] = [0x11; 16];
const SECRET_O: [u8; 16] = [0x22; 16];
const ID: [u8; 16] = [0x33; 16];

fn cfg() -> PunchConfig {
    PunchConfig {
        probe_every: Duration::from_millis(20),
        punch_every: Duration::from_millis(10),
        learn_timeout: Duration::from_secs(3),
        punch_timeout: Duration::from_millis(1500),
    }
}

/// The fake index server: records the source endpoint of each side's probe (by its
/// secret) and, once it has both, names each side's endpoint to the other.
async fn fake_server(
    to_requester: oneshot::Sender<SocketAddr>,
    to_owner: oneshot::Sender<SocketAddr>,
) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut seen: HashMap<[u8; 16], SocketAddr> = HashMap::new();
        let mut buf = [0u8; 64];
        while seen.len() < 2 {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            if let Some(secret) = parse_probe(&buf[..n])
                && (secret == SECRET_R || secret == SECRET_O)
            {
                seen.entry(secret).or_insert(from);
            }
        }
        let _ = to_requester.send(seen[&SECRET_O]);
        let _ = to_owner.send(seen[&SECRET_R]);
    });
    addr
}

fn spec(side: Side, server: SocketAddr, me: &Arc<Identity>, peer_key: PublicKey) -> PunchSpec {
    PunchSpec {
        side,
        id: ID,
        secret: if side == Side::Requester {
            SECRET_R
        } else {
            SECRET_O
        },
        server,
        cfg: cfg(),
        identity: me.clone(),
        peer_key,
    }
}

fn ids() -> (Arc<Identity>, Arc<Identity>) {
    (
        Arc::new(Identity::generate().unwrap()),
        Arc::new(Identity::generate().unwrap()),
    )
}

/// Both sides punch through the fake server; `r_pins` / `o_pins` are the keys each
/// requires of the other.
async fn punch_pair(
    r: &Arc<Identity>,
    o: &Arc<Identity>,
    r_pins: PublicKey,
    o_pins: PublicKey,
) -> (Result<Punched, PunchError>, Result<Punched, PunchError>) {
    let (tx_r, rx_r) = oneshot::channel();
    let (tx_o, rx_o) = oneshot::channel();
    let server = fake_server(tx_r, tx_o).await;
    tokio::join!(
        punch(spec(Side::Requester, server, r, r_pins), rx_r),
        punch(spec(Side::Owner, server, o, o_pins), rx_o),
    )
}

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn punched_quic_carries_mebibytes_both_ways() {
    let (r, o) = ids();
    let t0 = Instant::now();
    let (pr, po) = punch_pair(&r, &o, o.public_key(), r.public_key()).await;
    let (pr, po) = (pr.unwrap(), po.unwrap());
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    assert!(pr.peer.ip().is_loopback() && po.peer.ip().is_loopback());
    let up = payload(9 << 20, 1);
    let down = payload(7 << 20 | 123, 2);
    // Each side writes its payload, shuts down, and reads the other's to the end.
    let exchange = |p: Punched, out: Vec<u8>| async move {
        let (mut rd, mut wr) = tokio::io::split(p.stream);
        let writer = tokio::spawn(async move {
            wr.write_all(&out).await.unwrap();
            wr.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        got
    };
    let (at_owner, at_requester) =
        tokio::join!(exchange(pr, up.clone()), exchange(po, down.clone()));
    assert!(at_requester == up, "requester → owner bytes differ");
    assert!(at_owner == down, "owner → requester bytes differ");
}

#[tokio::test]
async fn a_wrong_pinned_key_at_the_requester_fails_typed_with_no_stream() {
    let (r, o) = ids();
    let stranger = Identity::generate().unwrap().public_key();
    let (pr, po) = punch_pair(&r, &o, stranger, r.public_key()).await;
    assert!(matches!(pr, Err(PunchError::WrongKey { .. })), "{pr:?}");
    let e = pr.unwrap_err().to_string();
    assert!(e.contains("not the pinned") && !e.contains('\n'), "{e}");
    assert!(po.is_err(), "the owner got a stream: {po:?}");
}

#[tokio::test]
async fn a_wrong_pinned_key_at_the_owner_fails_typed_with_no_stream() {
    let (r, o) = ids();
    let stranger = Identity::generate().unwrap().public_key();
    let (pr, po) = punch_pair(&r, &o, o.public_key(), stranger).await;
    assert!(matches!(po, Err(PunchError::WrongKey { .. })), "{po:?}");
    assert!(matches!(pr, Err(PunchError::RefusedOurKey(_))), "{pr:?}");
}

#[tokio::test]
async fn a_peer_that_never_answers_fails_within_the_punch_timeout() {
    let (r, o) = ids();
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = oneshot::channel();
    tx.send(silent.local_addr().unwrap()).unwrap();
    let t0 = Instant::now();
    let mut s = spec(
        Side::Requester,
        server.local_addr().unwrap(),
        &r,
        o.public_key(),
    );
    s.cfg.punch_timeout = Duration::from_millis(300);
    let got = punch(s, rx).await;
    let took = t0.elapsed();
    assert!(matches!(got, Err(PunchError::NoAnswer(_))), "{got:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(
        got.unwrap_err().to_string(),
        "no UDP path to the peer could be punched (no answer within 300 ms)"
    );
    // The silent peer did see our punches, and the server our probes.
    let mut buf = [0u8; 64];
    let (n, _) = silent.try_recv_from(&mut buf).unwrap();
    assert_eq!(n, 21);
    let (n, _) = server.try_recv_from(&mut buf).unwrap();
    assert_eq!(parse_probe(&buf[..n]), Some(SECRET_R));
}

#[tokio::test]
async fn no_endpoint_from_the_control_channel_fails_typed() {
    let (r, o) = ids();
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (_keep, rx) = oneshot::channel();
    let mut s = spec(Side::Owner, addr, &o, r.public_key());
    s.cfg.learn_timeout = Duration::from_millis(200);
    let got = punch(s, rx).await;
    assert!(matches!(got, Err(PunchError::NoPeerEndpoint(_))), "{got:?}");
    let (gone, rx) = oneshot::channel::<SocketAddr>();
    drop(gone);
    let got = punch(spec(Side::Owner, addr, &o, r.public_key()), rx).await;
    assert!(matches!(got, Err(PunchError::ControlClosed)), "{got:?}");
}

/// The owner's side of a download on the punched path: `file` (holding `data`) served
/// on `po` with TLS, the table binding each name in `table` to its key.
fn serve_punched(
    po: Punched,
    o: &Arc<Identity>,
    table: &[(&str, PublicKey)],
    file: &str,
    data: &[u8],
) -> (
    tempfile::TempDir,
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedReceiver<String>,
) {
    let share = tempfile::tempdir().unwrap();
    std::fs::write(share.path().join(file), data).unwrap();
    let mut lib = Library::default();
    lib.set_dir(share.path().to_path_buf());
    lib.offer(file).unwrap();
    let keys: HashMap<String, PublicKey> = table.iter().map(|(n, k)| (n.to_string(), *k)).collect();
    let lookup: KeyLookup = Arc::new(RwLock::new(keys));
    let auth = PeerAuth::tls(Arc::new(TlsIdentity::new(o).unwrap()), lookup);
    let (ntx, notices) = mpsc::unbounded_channel();
    let served = tokio::spawn(serve_stream(
        po.stream,
        po.peer,
        Arc::new(RwLock::new(lib)),
        ntx,
        auth,
        ServeConfig::default(),
    ));
    (share, served, notices)
}

/// Requester B (identity `r`) fetches `file` from owner A (`o`, its key pinned) into
/// `dest` on the punched stream `pr`, with TLS configured.
async fn fetch_punched(
    pr: Punched,
    r: &Arc<Identity>,
    o: &Arc<Identity>,
    file: &str,
    dest: &std::path::Path,
) -> Result<fileapp::transfer::fetch::FetchReport, fileapp::transfer::fetch::FetchError> {
    let mut fs = FetchSpec::new(pr.peer, "A", file, "B", dest);
    fs.peer_key = Some(o.public_key());
    fs.timeout = Duration::from_secs(10);
    let security = Security::Tls(Arc::new(TlsIdentity::new(r).unwrap()));
    let (_cancel, cancel) = watch::channel(false);
    fetch_stream(pr.stream, fs, security, |_| {}, cancel).await
}

/// Waits (up to 10 s) for the owner's serving of the punched stream to end; everything
/// it said.
async fn owner_done(
    served: tokio::task::JoinHandle<()>,
    notices: &mut mpsc::UnboundedReceiver<String>,
) -> Vec<String> {
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .unwrap()
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(n) = notices.try_recv() {
        seen.push(n);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_download_runs_over_the_punched_path() {
    let (r, o) = ids();
    let (pr, po) = punch_pair(&r, &o, o.public_key(), r.public_key()).await;
    let (pr, po) = (pr.unwrap(), po.unwrap());
    let data = payload(5 << 20 | 77, 3);
    let (_share, served, mut notices) =
        serve_punched(po, &o, &[("B", r.public_key())], "big.bin", &data);

    // The requester: the usual fetch, on the punched stream.
    let dest = tempfile::tempdir().unwrap();
    let report = fetch_punched(pr, &r, &o, "big.bin", dest.path())
        .await
        .unwrap();
    assert_eq!(report.size, data.len() as u64);
    assert!(std::fs::read(dest.path().join("big.bin")).unwrap() == data);
    let seen = owner_done(served, &mut notices).await;
    assert!(seen.iter().any(|n| n.contains("big.bin")), "{seen:#?}");
}

/// Inside the punched QUIC connection the peer protocol runs without a TLS session of
/// its own: the owner's mode byte is `MODE_QUIC` (0xf3), and a requester that asks for
/// TLS inside QUIC is refused rather than served in some other way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_quic_the_owner_speaks_the_quic_mode_and_refuses_tls_inside() {
    let (r, o) = ids();
    let (pr, po) = punch_pair(&r, &o, o.public_key(), r.public_key()).await;
    let (pr, po) = (pr.unwrap(), po.unwrap());
    let (_share, served, mut notices) =
        serve_punched(po, &o, &[("B", r.public_key())], "f.bin", &payload(4096, 1));
    let mut s = pr.stream;
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(first[0], 0xF3, "the owner's mode on the punched path");
    s.write_all(&[0xF1]).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "the owner sent {rest:?} after refusing");
    let seen = owner_done(served, &mut notices).await;
    assert!(
        seen.iter()
            .any(|n| n.contains("on the punched path: mode 0xf1")),
        "{seen:#?}"
    );
}

/// Without a TLS session inside, the requester's key is the one QUIC's handshake
/// verified; the name it claims must be bound to that key in the owner's table, as on
/// TCP. Here B's QUIC key is not the key the owner's table has for "B".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_punched_path_the_claimed_name_must_hold_the_quic_key() {
    let (r, o) = ids();
    let someone_else = Identity::generate().unwrap().public_key();
    let (pr, po) = punch_pair(&r, &o, o.public_key(), r.public_key()).await;
    let (pr, po) = (pr.unwrap(), po.unwrap());
    let (_share, served, mut notices) = serve_punched(
        po,
        &o,
        &[("B", someone_else)],
        "f.bin",
        &payload(1 << 20, 2),
    );
    let dest = tempfile::tempdir().unwrap();
    let err = fetch_punched(pr, &r, &o, "f.bin", dest.path())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is not the key B is registered with"),
        "{err}"
    );
    assert!(!dest.path().join("f.bin").exists());
    let seen = owner_done(served, &mut notices).await;
    assert!(
        !seen.iter().any(|n| n.contains("Transferring")),
        "{seen:#?}"
    );
}

/// Plaintext mode on the punched path (no TCP, so no `splice` or `sendfile`): the
/// portable copy paths carry a verified download, resumed from a partial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_download_resumes_over_the_punched_path() {
    let (r, o) = ids();
    let (pr, po) = punch_pair(&r, &o, o.public_key(), r.public_key()).await;
    let (pr, po) = (pr.unwrap(), po.unwrap());
    let share = tempfile::tempdir().unwrap();
    let data = payload(3 << 20 | 5, 4);
    std::fs::write(share.path().join("plain.bin"), &data).unwrap();
    let mut lib = Library::default();
    lib.set_dir(share.path().to_path_buf());
    lib.offer("plain.bin").unwrap();
    let (ntx, _notices) = mpsc::unbounded_channel();
    let served = tokio::spawn(serve_stream(
        po.stream,
        po.peer,
        Arc::new(RwLock::new(lib)),
        ntx,
        PeerAuth::plaintext(),
        ServeConfig::default(),
    ));
    let dest = tempfile::tempdir().unwrap();
    // A partial of the first mebibyte, as an interrupted attempt leaves it.
    let first = leave_first_mib(&data, dest.path());
    let mut fs = FetchSpec::new(pr.peer, "A", "plain.bin", "B", dest.path());
    fs.timeout = Duration::from_secs(10);
    let (_cancel, cancel) = watch::channel(false);
    let report = fetch_stream(pr.stream, fs, Security::Plaintext, |_| {}, cancel)
        .await
        .unwrap();
    assert_eq!(report.resumed_from, first);
    assert!(std::fs::read(dest.path().join("plain.bin")).unwrap() == data);
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .unwrap()
        .unwrap();
}

/// Leaves the partial (and its sidecar) of `data`'s first mebibyte in `dir`, saved as
/// `plain.bin`; returns its length.
fn leave_first_mib(data: &[u8], dir: &std::path::Path) -> u64 {
    let n = 1usize << 20;
    std::fs::write(dir.join(".plain.bin.fileapp-partial"), &data[..n]).unwrap();
    std::fs::write(
        dir.join(".plain.bin.fileapp-partial.meta"),
        format!(
            "fileapp-partial 1\nsize {}\nhash {}\n",
            data.len(),
            blake3::hash(data).to_hex()
        ),
    )
    .unwrap();
    n as u64
}

/// A `--plaintext` requester meets an owner with TLS on the punched path: refused both
/// ways with the messages of a TCP connection, and no byte of the file moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_tls_on_the_punched_path_refuse_each_other_as_on_tcp() {
    let (r, o) = ids();
    let (pr, po) = punch_pair(&r, &o, o.public_key(), r.public_key()).await;
    let (pr, po) = (pr.unwrap(), po.unwrap());
    let (_share, served, mut notices) =
        serve_punched(po, &o, &[("B", r.public_key())], "f.bin", &payload(4096, 5));
    let dest = tempfile::tempdir().unwrap();
    let fs = FetchSpec::new(pr.peer, "A", "f.bin", "B", dest.path());
    let (_cancel, cancel) = watch::channel(false);
    let err = fetch_stream(pr.stream, fs, Security::Plaintext, |_| {}, cancel)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "A requires encryption; this client runs with --plaintext (both sides must use the same mode)"
    );
    assert!(!dest.path().join("f.bin").exists());
    let seen = owner_done(served, &mut notices).await;
    assert!(
        seen.iter()
            .any(|n| n.contains("Refused plaintext request from")),
        "{seen:#?}"
    );
}
