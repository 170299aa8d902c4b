//! The relay of last resort (`fileapp::reach::relay`): pairing by server-signed tickets,
//! refusals with their status byte, the splice both ways with half-closes, the rate
//! limits, many sessions at once; in process, as a `fileapp relay` process, and as the
//! relay `fileapp server` runs beside its index. Everything on 127.0.0.1, port 0.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fileapp::identity::Identity;
use fileapp::reach::relay::{self, RelayConfig, RelayError, RelayRefusal};
use fileapp_core::reach::relay::hello_bytes;
use fileapp_core::reach::ticket::{Role, TICKET_LEN, Ticket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::util::{Proc, random_bytes, spawn_server};

mod limits;

/// Long enough for any answer the relay owes; the tests never wait it out on success.
pub(super) const ANSWER: Duration = Duration::from_secs(10);

pub(super) struct InProcess {
    pub(super) addr: SocketAddr,
    pub(super) server: Identity,
    _stop: watch::Sender<bool>,
}

pub(super) async fn start(tune: impl FnOnce(&mut RelayConfig)) -> InProcess {
    let server = Identity::generate().unwrap();
    let mut cfg = RelayConfig::new(server.public_key());
    tune(&mut cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(relay::run(listener, cfg, rx));
    InProcess {
        addr,
        server,
        _stop: tx,
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub(super) fn ticket(server: &Identity, id: u8, role: Role) -> [u8; TICKET_LEN] {
    Ticket {
        id: [id; 16],
        role,
        expires_ms: now_ms() + 30_000,
    }
    .seal(server)
}

/// Both halves of `id`, connected at once.
pub(super) async fn pair(addr: SocketAddr, server: &Identity, id: u8) -> (TcpStream, TcpStream) {
    let (r, o) = (
        ticket(server, id, Role::Requester),
        ticket(server, id, Role::Owner),
    );
    let (a, b) = tokio::join!(
        relay::connect(addr, &r, ANSWER),
        relay::connect(addr, &o, ANSWER)
    );
    (a.expect("requester paired"), b.expect("owner paired"))
}

/// Sends raw `hello` bytes and reads everything the relay answers until it closes.
pub(super) async fn raw(addr: SocketAddr, hello: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(hello).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(ANSWER, s.read_to_end(&mut out))
        .await
        .expect("the relay closes")
        .ok();
    out
}

/// Writes `data` then shuts down the write half; reads the other side to its end.
pub(super) async fn exchange(mut s: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let recv = r.read_to_end(&mut got);
    let ((), n) = tokio::join!(send, recv);
    n.unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_splice_carries_mebibytes_both_ways_byte_identical() {
    let r = start(|_| {}).await;
    let (a, b) = pair(r.addr, &r.server, 1).await;
    // The requester sends 6 MiB, the owner 5 MiB, at the same time.
    let (to_b, to_a) = (random_bytes(6 << 20, 1), random_bytes(5 << 20, 2));
    let (got_a, got_b) = tokio::join!(exchange(a, to_b.clone()), exchange(b, to_a.clone()));
    assert!(
        got_b == to_b,
        "owner got {} bytes, not the requester's",
        got_b.len()
    );
    assert!(
        got_a == to_a,
        "requester got {} bytes, not the owner's",
        got_a.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_is_passed_on_and_the_other_direction_goes_on() {
    let r = start(|_| {}).await;
    let (mut a, mut b) = pair(r.addr, &r.server, 1).await;
    a.write_all(b"request").await.unwrap();
    a.shutdown().await.unwrap();
    let mut got = Vec::new();
    b.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"request", "EOF reached the owner after the bytes");
    // The owner still answers over the open direction, then ends it.
    b.write_all(b"response").await.unwrap();
    b.shutdown().await.unwrap();
    let mut back = Vec::new();
    a.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"response");
}

/// The counters the server's metrics and status page read follow the sessions: one
/// waiting half, then a pair, then none once both leave; refusals counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_follow_sessions_and_refusals() {
    let mut counters = None;
    let r = start(|c| counters = Some(c.counters.clone())).await;
    let counters = counters.unwrap();
    let until = |want: relay::RelayNumbers| {
        let counters = counters.clone();
        async move {
            let deadline = Instant::now() + ANSWER;
            while counters.read() != want {
                assert!(
                    Instant::now() < deadline,
                    "{:?}, not {want:?}",
                    counters.read()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let stranger = Identity::generate().unwrap();
    let forged = ticket(&stranger, 9, Role::Owner);
    assert_eq!(raw(r.addr, &hello_bytes(&forged)).await, [0x01]);
    let (addr, t) = (r.addr, ticket(&r.server, 1, Role::Requester));
    let first = tokio::spawn(async move { relay::connect(addr, &t, ANSWER).await });
    until(relay::RelayNumbers {
        waiting: 1,
        refused: 1,
        ..Default::default()
    })
    .await;
    let o = ticket(&r.server, 1, Role::Owner);
    let b = relay::connect(r.addr, &o, ANSWER).await.unwrap();
    let a = first.await.unwrap().unwrap();
    until(relay::RelayNumbers {
        sessions: 1,
        paired: 1,
        refused: 1,
        waiting: 0,
    })
    .await;
    drop((a, b));
    until(relay::RelayNumbers {
        paired: 1,
        refused: 1,
        ..Default::default()
    })
    .await;
}

/// The requester half of id 1 waits for its partner; the forged or refused attempts
/// must not pair with it, so it is given up with 0x05.
async fn partner_times_out(
    r: &InProcess,
) -> tokio::task::JoinHandle<Result<TcpStream, RelayError>> {
    let t = ticket(&r.server, 1, Role::Requester);
    let addr = r.addr;
    tokio::spawn(async move { relay::connect(addr, &t, ANSWER).await })
}

fn short_pair(c: &mut RelayConfig) {
    c.pair_timeout = Duration::from_millis(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tickets_are_refused_and_pair_with_nothing() {
    let r = start(short_pair).await;
    let waiting = partner_times_out(&r).await;
    tokio::task::yield_now().await;
    let stranger = Identity::generate().unwrap();
    let wrong_key = ticket(&stranger, 1, Role::Owner);
    assert_eq!(raw(r.addr, &hello_bytes(&wrong_key)).await, [0x01]);
    let mut flipped = ticket(&r.server, 1, Role::Owner);
    flipped[40] ^= 1;
    assert_eq!(raw(r.addr, &hello_bytes(&flipped)).await, [0x01]);
    let e = relay::connect(r.addr, &flipped, ANSWER).await.unwrap_err();
    assert!(
        matches!(e, RelayError::Refused(RelayRefusal::BadTicket)),
        "{e}"
    );
    // Not a hello at all: closed without a byte.
    assert_eq!(raw(r.addr, b"GET / HTTP/1.1\r\n\r\n").await, b"");
    let mut bad_magic = hello_bytes(&ticket(&r.server, 1, Role::Owner));
    bad_magic[0] = b'X';
    assert_eq!(raw(r.addr, &bad_magic).await, b"");
    let e = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(e, RelayError::Refused(RelayRefusal::PartnerTimeout)),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ticket_is_refused() {
    let r = start(short_pair).await;
    let waiting = partner_times_out(&r).await;
    let old = Ticket {
        id: [1; 16],
        role: Role::Owner,
        expires_ms: now_ms() - 1,
    }
    .seal(&r.server);
    assert_eq!(raw(r.addr, &hello_bytes(&old)).await, [0x02]);
    let e = relay::connect(r.addr, &old, ANSWER).await.unwrap_err();
    assert!(
        matches!(e, RelayError::Refused(RelayRefusal::Expired)),
        "{e}"
    );
    assert!(
        waiting.await.unwrap().is_err(),
        "paired with an expired ticket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_ticket_and_a_second_half_of_the_same_role_are_refused() {
    let r = start(short_pair).await;
    // Two requesters of one id: whichever comes second is refused, the first waits
    // alone and is given up.
    let req = hello_bytes(&ticket(&r.server, 1, Role::Requester));
    let (x, y) = tokio::join!(raw(r.addr, &req), raw(r.addr, &req));
    let mut got = [x, y];
    got.sort();
    assert_eq!(got, [vec![0x03], vec![0x05]], "same role twice");
    // A pair that did meet: both tickets are used up.
    let (a, b) = pair(r.addr, &r.server, 2).await;
    for role in [Role::Requester, Role::Owner] {
        let again = ticket(&r.server, 2, role);
        let e = relay::connect(r.addr, &again, ANSWER).await.unwrap_err();
        assert!(
            matches!(e, RelayError::Refused(RelayRefusal::AlreadyUsed)),
            "{e}"
        );
    }
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_whose_partner_never_comes_is_given_up_after_the_pair_timeout() {
    let r = start(short_pair).await;
    let t0 = Instant::now();
    let t = ticket(&r.server, 9, Role::Owner);
    let got = raw(r.addr, &hello_bytes(&t)).await;
    assert_eq!(got, [0x05], "only the status byte, then closed");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "gave up early: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_relay_refuses_new_halves() {
    let r = start(|c| {
        c.max_sessions = 1;
        short_pair(c);
    })
    .await;
    // Two first halves of two ids: one waits (and is given up), one finds no room.
    let one = hello_bytes(&ticket(&r.server, 1, Role::Requester));
    let two = hello_bytes(&ticket(&r.server, 2, Role::Owner));
    let (x, y) = tokio::join!(raw(r.addr, &one), raw(r.addr, &two));
    let mut got = [x, y];
    got.sort();
    assert_eq!(got, [vec![0x04], vec![0x05]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_slow_hello_is_closed_without_a_byte_at_the_hello_timeout() {
    let r = start(|c| c.hello_timeout = Duration::from_millis(300)).await;
    let hello = hello_bytes(&ticket(&r.server, 1, Role::Owner));
    for sent in [&hello[..0], &hello[..50]] {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(sent).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(ANSWER, s.read_to_end(&mut out))
            .await
            .expect("closed by the relay")
            .unwrap();
        assert!(out.is_empty(), "answered {out:?} to {} bytes", sent.len());
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
    }
    // The ticket the slow hello carried was never used.
    let (a, b) = pair(r.addr, &r.server, 1).await;
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_half_that_leaves_frees_its_place() {
    let r = start(|c| {
        c.max_sessions = 1;
        c.pair_timeout = Duration::from_secs(5);
    })
    .await;
    let mut first = TcpStream::connect(r.addr).await.unwrap();
    first
        .write_all(&hello_bytes(&ticket(&r.server, 1, Role::Owner)))
        .await
        .unwrap();
    // One of the two waits and holds the only place, the other is refused; then the
    // one that waits leaves (dropped).
    let probe = |id| hello_bytes(&ticket(&r.server, id, Role::Owner));
    match tokio::time::timeout(Duration::from_secs(1), raw(r.addr, &probe(2))).await {
        Ok(answer) => {
            assert_eq!(answer, [0x04], "the first half holds the place");
            drop(first);
        }
        Err(_) => {
            // The probe came first, waited, and was dropped by the timeout.
            let mut b = Vec::new();
            first.read_to_end(&mut b).await.unwrap();
            assert_eq!(b, [0x04]);
        }
    }
    let deadline = Instant::now() + ANSWER;
    let mut id = 3;
    let freed = loop {
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(&probe(id)).await.unwrap();
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
            // No answer yet: it waits, so the place was free.
            Err(_) => break true,
            Ok(Ok(1)) if b[0] == 0x04 => {}
            other => panic!("{other:?} {b:?}"),
        }
        assert!(Instant::now() < deadline, "the place was never freed");
        id += 1;
    };
    assert!(freed);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One pair through the relay at `addr` (1 MiB each way), then a refused reuse.
async fn pair_and_refuse_reuse(addr: SocketAddr, server: &Identity) {
    let (a, b) = pair(addr, server, 7).await;
    let (x, y) = (random_bytes(1 << 20, 5), random_bytes(1 << 20, 6));
    let (got_a, got_b) = tokio::join!(exchange(a, x.clone()), exchange(b, y.clone()));
    assert!(got_b == x && got_a == y);
    let again = ticket(server, 7, Role::Owner);
    let e = relay::connect(addr, &again, ANSWER).await.unwrap_err();
    assert!(
        matches!(e, RelayError::Refused(RelayRefusal::AlreadyUsed)),
        "{e}"
    );
}

#[test]
fn fileapp_relay_pairs_what_the_server_key_signed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Identity::generate().unwrap();
    let key = hex::encode(server.public_key());
    let args = [
        "relay",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--server-key",
        &key,
        "--pair-timeout-ms",
        "300",
    ];
    let mut proc = Proc::spawn("relay", &args, dir.path());
    let line = proc.expect("Relay listening on ");
    let addr: SocketAddr = line["Relay listening on ".len()..].parse().unwrap();
    runtime().block_on(async {
        pair_and_refuse_reuse(addr, &server).await;
        let alone = ticket(&server, 8, Role::Requester);
        assert_eq!(raw(addr, &hello_bytes(&alone)).await, [0x05]);
    });
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(crate::util::WAIT), 0);
}

#[test]
fn the_server_relays_on_its_port_number_with_its_own_key_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("server.key");
    let server = fileapp::identity::load_or_create(&key_path).unwrap();
    let key_arg = key_path.to_str().unwrap();
    let extra = ["--db", ":memory:", "--key", key_arg];
    let (mut proc, port) = spawn_server("127.0.0.1", dir.path(), 0, &extra);
    let relay_line = format!("Relay on TCP port {port}");
    let key_at = proc
        .transcript
        .iter()
        .position(|l| l.starts_with("Server key: "));
    let relay_at = proc.transcript.iter().position(|l| *l == relay_line);
    assert_eq!(
        relay_at,
        key_at.map(|k| k + 1),
        "{relay_line:?} right after the key line: {:?}",
        proc.transcript
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    runtime().block_on(pair_and_refuse_reuse(addr, &server));
    proc.kill9();

    let extra = ["--db", ":memory:", "--key", key_arg, "--no-relay"];
    let (mut proc, port) = spawn_server("127.0.0.1", dir.path(), 0, &extra);
    assert!(
        !proc.transcript.iter().any(|l| l.contains("Relay on")),
        "{:?}",
        proc.transcript
    );
    let e = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    proc.kill9();
}
