//! A lossy UDP relay between clients and the server: drops, duplicates and reorders
//! datagrams at a settable rate, and, turned hostile, flips bytes, replays old
//! datagrams, injects one client's datagrams into another's path and sends clients
//! datagrams from the server's address. Each client gets its own upstream socket, so
//! the server still sees one distinct source address per client.
//!
//! The tests here run real clients through it against the real server.

use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{Proc, Server, WAIT};

/// A datagram waiting for its (jittered) delivery time.
struct Pending {
    at: Instant,
    via: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.at.cmp(&self.at) // min-heap on delivery time
    }
}

/// Fault settings shared with the relay threads.
struct Faults {
    loss_pct: AtomicU32,
    dup_pct: AtomicU32,
    rng: Mutex<u64>,
    hostile: AtomicBool,
    /// Datagrams seen, each way, for replays and cross-session injection.
    seen_up: Mutex<Vec<Vec<u8>>>,
    seen_down: Mutex<Vec<Vec<u8>>>,
    /// Datagrams the relay forged or replayed.
    injected: AtomicU32,
}

impl Faults {
    fn roll(&self) -> u32 {
        let mut x = self.rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x % 100) as u32
    }
}

pub struct Relay {
    pub addr: SocketAddr,
    faults: Arc<Faults>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Relays to `server`, listening on 127.0.0.1 on a free port.
    pub fn start(server: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        front
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = front.local_addr().unwrap();
        let faults = Arc::new(Faults {
            loss_pct: AtomicU32::new(0),
            dup_pct: AtomicU32::new(0),
            rng: Mutex::new(0x9e37_79b9_7f4a_7c15),
            hostile: AtomicBool::new(false),
            seen_up: Mutex::new(Vec::new()),
            seen_down: Mutex::new(Vec::new()),
            injected: AtomicU32::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel::<Pending>();

        // Scheduler: delivers datagrams at their time, out of order when jittered.
        let stop_s = stop.clone();
        std::thread::spawn(move || {
            let mut heap = BinaryHeap::new();
            while !stop_s.load(Ordering::Relaxed) {
                let wait = heap
                    .peek()
                    .map(|p: &Pending| p.at.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(20))
                    .min(Duration::from_millis(20));
                if let Ok(p) = rx.recv_timeout(wait) {
                    heap.push(p);
                }
                while heap.peek().is_some_and(|p| p.at <= Instant::now()) {
                    let p = heap.pop().unwrap();
                    let _ = p.via.send_to(&p.bytes, p.to);
                }
            }
        });

        let (f, s) = (faults.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, client)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let up = upstreams
                    .entry(client)
                    .or_insert_with(|| {
                        let up = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
                        up.set_read_timeout(Some(Duration::from_millis(50)))
                            .unwrap();
                        // Server -> client direction for this client.
                        let (up2, front2, f2, s2, tx2) =
                            (up.clone(), front.clone(), f.clone(), s.clone(), tx.clone());
                        std::thread::spawn(move || {
                            let mut b = [0u8; 2048];
                            while !s2.load(Ordering::Relaxed) {
                                if let Ok((n, _)) = up2.recv_from(&mut b) {
                                    schedule(&f2, &tx2, &front2, client, &b[..n]);
                                    attack(&f2, &f2.seen_down, &front2, client, &b[..n]);
                                }
                            }
                        });
                        up
                    })
                    .clone();
                schedule(&f, &tx, &up, server, &buf[..n]);
                attack(&f, &f.seen_up, &up, server, &buf[..n]);
            }
        });
        Relay { addr, faults, stop }
    }

    /// Turns the hostile path on or off (see [`attack`]).
    pub fn set_hostile(&self, on: bool) {
        self.faults.hostile.store(on, Ordering::Relaxed);
    }

    /// Datagrams forged or replayed so far.
    pub fn injected(&self) -> u32 {
        self.faults.injected.load(Ordering::Relaxed)
    }

    /// Sets the loss and duplication rates, in percent.
    pub fn set_faults(&self, loss_pct: u32, dup_pct: u32) {
        self.faults.loss_pct.store(loss_pct, Ordering::Relaxed);
        self.faults.dup_pct.store(dup_pct, Ordering::Relaxed);
    }
}

/// When hostile, around each real datagram `b` going `to` through `via`: a copy with a
/// flipped byte, a replay of an earlier datagram of this direction (from any client:
/// into another client's session when it was someone else's), and random bytes. Toward
/// a client these come from the address it knows as the server's.
fn attack(f: &Faults, seen: &Mutex<Vec<Vec<u8>>>, via: &UdpSocket, to: SocketAddr, b: &[u8]) {
    if !f.hostile.load(Ordering::Relaxed) {
        return;
    }
    let mut flipped = b.to_vec();
    let at = (f.roll() as usize * 7919) % flipped.len().max(1);
    if let Some(x) = flipped.get_mut(at) {
        *x ^= 1 << (f.roll() % 8);
    }
    let mut out = vec![flipped];
    {
        let mut seen = seen.lock().unwrap();
        if !seen.is_empty() {
            let pick = (f.roll() as usize * 104_729) % seen.len();
            out.push(seen[pick].clone());
        }
        if seen.len() < 4096 {
            seen.push(b.to_vec());
        }
    }
    let len = 1 + (f.roll() as usize * 13) % 1200;
    let mut junk = vec![0u8; len];
    for (i, x) in junk.iter_mut().enumerate() {
        *x = (f.roll() as u8).wrapping_add(i as u8);
    }
    junk[0] = [1u8, 2, 3, 4][f.roll() as usize % 4];
    out.push(junk);
    for d in out {
        f.injected.fetch_add(1, Ordering::Relaxed);
        let _ = via.send_to(&d, to);
    }
}

fn schedule(f: &Faults, tx: &Sender<Pending>, via: &Arc<UdpSocket>, to: SocketAddr, b: &[u8]) {
    let loss = f.loss_pct.load(Ordering::Relaxed);
    let dup = f.dup_pct.load(Ordering::Relaxed);
    if loss > 0 && f.roll() < loss {
        return;
    }
    let copies = if dup > 0 && f.roll() < dup { 2 } else { 1 };
    for _ in 0..copies {
        // With faults on, up to 20 ms of jitter reorders datagrams.
        let jitter = if loss > 0 || dup > 0 {
            Duration::from_millis(f.roll() as u64 / 5)
        } else {
            Duration::ZERO
        };
        let _ = tx.send(Pending {
            at: Instant::now() + jitter,
            via: via.clone(),
            to,
            bytes: b.to_vec(),
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Does the observer's table (the server's, pushed to it without loss) list `name`?
fn listed(observer: &mut Proc, name: &str) -> bool {
    observer.list_json().iter().any(|(_, owner)| owner == name)
}

/// Waits, on the observer's table updates, until it lists `name` or not.
fn wait_listed(observer: &mut Proc, name: &str, want: bool) {
    let deadline = Instant::now() + WAIT;
    while listed(observer, name) != want {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the server still {} {name}",
            if want { "does not list" } else { "lists" }
        );
        observer.expect_within(">>> [Client table updated.]", left);
    }
}

/// `dereg` under 30% loss, round after round: once a client said Bye, the server must
/// not list it, neither then nor once everything the client had in flight has landed.
/// Heartbeats are frequent, so some always race the Dereg.
#[test]
fn dereg_under_loss_never_leaves_the_client_listed() {
    const HEARTBEAT_MS: u64 = 100;
    const RETRY_MS: u64 = 100;
    const ROUNDS: usize = 20;
    let hb = HEARTBEAT_MS.to_string();
    // A session nobody heartbeats stays listed for the whole test: a client wrongly
    // left online on the server shows.
    let srv = Server::start(&[
        "--db",
        ":memory:",
        "--heartbeat-ms",
        &hb,
        "--offline-after-ms",
        "120000",
    ]);
    let relay = Relay::start(srv.addr().parse().unwrap());
    let relay_addr = relay.addr.to_string();
    let retry = RETRY_MS.to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("s")).unwrap();
    std::fs::write(dir.path().join("s/f"), b"shared").unwrap();
    // Talks to the server directly: its table is the server's.
    let mut observer = srv.client("O", dir.path());
    // What a client started before its Bye has ended after its retry budget (first send
    // and 3 retries, then the verdict); its effect then reaches the observer at once.
    let settle = Duration::from_millis(4 * RETRY_MS + 2 * HEARTBEAT_MS + 300);

    let (mut checked, mut timeouts, mut subjects) = (0, 0, 0);
    while checked < ROUNDS {
        // A dereg gets no answer to any of its 4 sends now and then (about 7% of the
        // time at 30% loss each way); that client exits, and the next one takes over.
        assert!(
            timeouts < 8,
            "{timeouts} dereg timeouts in {checked} rounds"
        );
        relay.set_faults(0, 0);
        let name = format!("D{subjects}");
        subjects += 1;
        let args = [
            "client",
            "--name",
            &name,
            "--server",
            &relay_addr,
            "--retry-ms",
            &retry,
        ];
        let mut d = Proc::spawn(&name, &args, dir.path());
        d.expect_line(">>> [Welcome, You are registered.]");
        d.send("setdir s");
        d.expect("Successfully set");
        d.send("offer f");
        d.expect_line(">>> [Offer Message Received By Server]");
        wait_listed(&mut observer, &name, true);
        relay.set_faults(30, 10);
        loop {
            d.send("dereg");
            let (which, _) = d.expect_any(
                &["[You are Offline. Bye.]", "[Server not responding]"],
                WAIT,
            );
            if which == 1 {
                // The server may never have heard the Dereg: it times the session out.
                d.expect_line(">>> [Exiting]");
                assert_ne!(d.wait_exit(WAIT), 0);
                timeouts += 1;
                break;
            }
            wait_listed(&mut observer, &name, false);
            let lines = observer.lines_for(settle);
            assert!(
                !listed(&mut observer, &name),
                "round {checked}: {name} said Bye, but the server lists it again; \
                 observer saw {lines:?}\n{}",
                d.transcript.join("\n")
            );
            checked += 1;
            if checked == ROUNDS {
                break;
            }
            // Back online; the user tries again while the server does not answer.
            loop {
                d.send("reg");
                let (which, line) = d.expect_any(
                    &[
                        "[Welcome, You are registered.]",
                        "[Server not responding]",
                        "[Registration rejected",
                    ],
                    WAIT,
                );
                match which {
                    0 => break,
                    1 => continue,
                    _ => panic!("{name}: {line}"),
                }
            }
            // Its offer is kept across dereg/reg.
            wait_listed(&mut observer, &name, true);
        }
    }
}

/// A hostile path between two clients and the server: every datagram each way comes
/// with a flipped copy, a replay of an older one (often another client's: injected into
/// this session) and random bytes, those toward clients from the server's address. No
/// table changes but by the server's real updates, no client crashes, and once the
/// attack stops every table equals the server's within 3 s.
#[test]
fn a_hostile_path_changes_no_table_and_crashes_no_client() {
    const HEARTBEAT_MS: u64 = 200;
    let hb = HEARTBEAT_MS.to_string();
    let srv = Server::start(&["--db", ":memory:", "--heartbeat-ms", &hb]);
    let relay = Relay::start(srv.addr().parse().unwrap());
    let relay_addr = relay.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("s")).unwrap();
    for f in ["a1", "a2", "b1"] {
        std::fs::write(dir.path().join("s").join(f), f.as_bytes()).unwrap();
    }
    let mut observer = srv.client("O", dir.path());
    let spawn = |name: &str| {
        let args = ["client", "--name", name, "--server", &relay_addr];
        let mut p = Proc::spawn(name, &args, dir.path());
        p.expect_line(">>> [Welcome, You are registered.]");
        p.send("setdir s");
        p.expect("Successfully set");
        p
    };
    let mut a = spawn("A");
    let mut b = spawn("B");
    relay.set_hostile(true);
    // Real changes during the attack: they must arrive, and nothing else.
    a.send("offer a1");
    a.expect_line(">>> [Offer Message Received By Server]");
    b.send("offer b1");
    b.expect_line(">>> [Offer Message Received By Server]");
    a.send("offer a2");
    a.expect_line(">>> [Offer Message Received By Server]");
    // Let heartbeats and pushes run under attack for a while.
    let until = Instant::now() + Duration::from_millis(10 * HEARTBEAT_MS);
    // Every row the observer has listed (a row carries reachability, which changes).
    let mut seen = Vec::new();
    while Instant::now() < until {
        for p in [&mut a, &mut b] {
            let rows = p.list_json_rows();
            // Whatever a client lists, the server listed too: the observer (direct, no
            // attack) may get a push later than the client, or earlier (the client's
            // are delayed and dropped), never a different one.
            // `verified` is each client's own judgement, and a row's unsigned moment
            // may pass unseen by the observer: compared without it.
            let settle = Instant::now() + Duration::from_secs(2);
            let mut look = |seen: &mut Vec<serde_json::Value>| {
                for mut r in observer.list_json_rows() {
                    r.as_object_mut().map(|o| o.remove("verified"));
                    if !seen.contains(&r) {
                        seen.push(r);
                    }
                }
            };
            look(&mut seen);
            let rows: Vec<_> = rows
                .into_iter()
                .map(|mut r| {
                    r.as_object_mut().map(|o| o.remove("verified"));
                    r
                })
                .collect();
            while !rows.iter().all(|r| seen.contains(r)) {
                assert!(
                    Instant::now() < settle,
                    "{} lists {rows:?}, the server listed {seen:?}",
                    p.name
                );
                std::thread::sleep(Duration::from_millis(20));
                look(&mut seen);
            }
        }
        std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
    }
    assert!(
        relay.injected() > 50,
        "the attack ran ({} injected)",
        relay.injected()
    );
    relay.set_hostile(false);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let truth = observer.list_json_rows();
        let same = [&mut a, &mut b]
            .into_iter()
            .all(|p| p.list_json_rows() == truth);
        if same && truth.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tables differ 3 s after the attack"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Both still answer (nothing crashed) and leave cleanly.
    for mut p in [a, b] {
        p.close_stdin();
        assert_eq!(p.wait_exit(Duration::from_secs(10)), 0, "{}", p.name);
    }
}
