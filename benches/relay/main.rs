//! The relay of last resort against a direct loopback connection, and its memory under
//! many sessions. The relay runs as a `fileapp relay` process, so what it costs is its
//! own (CPU and RSS), apart from the load's.
//!
//! Run: `cargo bench --bench relay`. Settings (environment; sizes take K, M, G):
//! `FILEAPP_RELAY_BENCH_SIZE` (default 1G), `FILEAPP_RELAY_BENCH_REPS` (3),
//! `FILEAPP_RELAY_BENCH_SESSIONS` (100), `FILEAPP_RELAY_BENCH_PER_SESSION` (32M).
//!
//! (a) Throughput: SIZE bytes over one TCP connection on 127.0.0.1, then the same bytes
//!     through the relay (sender -> relay -> receiver), interleaved REPS times; the
//!     ratio of the medians is reported. Blocking sockets, 1 MiB buffers on both ends.
//! (b) SESSIONS relayed sessions paired first, then all moving PER_SESSION bytes one
//!     way at once (the other way carries only its end); reports the aggregate rate and
//!     the relay process's peak RSS (`VmHWM` in `/proc/<pid>/status`, of a fresh relay
//!     process).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fileapp::identity::Identity;
use fileapp_core::reach::relay::hello_bytes;
use fileapp_core::reach::ticket::{Role, Ticket};

const BUF: usize = 1 << 20;

fn env_size(name: &str, default: u64) -> u64 {
    let Ok(s) = std::env::var(name) else {
        return default;
    };
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().map_or(default, |n| n * mult)
}

/// A `fileapp relay` process on 127.0.0.1, killed when dropped.
struct RelayProc {
    child: Child,
    addr: SocketAddr,
}

impl RelayProc {
    fn start(server: &Identity) -> RelayProc {
        let key = hex::encode(server.public_key());
        let mut child = Command::new(env!("CARGO_BIN_EXE_fileapp"))
            .args(["relay", "--bind", "127.0.0.1", "--port", "0"])
            .args(["--server-key", &key, "--max-sessions", "1024"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start fileapp relay");
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("Relay listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"));
        RelayProc { child, addr }
    }

    /// The relay's peak resident set, in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the relay's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ticket(server: &Identity, id: [u8; 16], role: Role) -> [u8; 94] {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let t = Ticket {
        id,
        role,
        expires_ms: now.as_millis() as u64 + 30_000,
    };
    hello_bytes(&t.seal(server))
}

/// One half through the relay: hello, then the status byte, which must be "paired".
fn relay_half(addr: SocketAddr, hello: [u8; 94]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&hello).unwrap();
    let mut status = [0u8; 1];
    s.read_exact(&mut status).unwrap();
    assert_eq!(status[0], 0, "the relay refused ({})", status[0]);
    s
}

/// Both halves of `id` (the first waits for the second on its own thread).
fn relay_pair(addr: SocketAddr, server: &Identity, id: [u8; 16]) -> (TcpStream, TcpStream) {
    let (a, b) = (
        ticket(server, id, Role::Requester),
        ticket(server, id, Role::Owner),
    );
    let first = thread::spawn(move || relay_half(addr, a));
    let second = relay_half(addr, b);
    (first.join().unwrap(), second)
}

fn send(mut s: TcpStream, size: u64) {
    let buf = vec![0x5au8; BUF];
    let mut left = size;
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        s.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write).unwrap();
    // Wait for the receiver's end, so the close is not a reset.
    let _ = s.read(&mut [0u8; 1]);
}

fn receive(mut s: TcpStream) -> u64 {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf).unwrap() {
            0 => break,
            n => total += n as u64,
        }
    }
    total
}

/// Moves `size` bytes from `tx` to `rx`; returns the seconds it took.
fn timed(tx: TcpStream, rx: TcpStream, size: u64, t0: Instant) -> f64 {
    let sender = thread::spawn(move || send(tx, size));
    let got = receive(rx);
    let secs = t0.elapsed().as_secs_f64();
    sender.join().unwrap();
    assert_eq!(got, size);
    secs
}

fn direct(size: u64) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t0 = Instant::now();
    let tx = TcpStream::connect(addr).unwrap();
    let (rx, _) = l.accept().unwrap();
    timed(tx, rx, size, t0)
}

fn relayed(relay: &RelayProc, server: &Identity, size: u64, rep: u8) -> f64 {
    let t0 = Instant::now();
    let (tx, rx) = relay_pair(relay.addr, server, [rep; 16]);
    timed(tx, rx, size, t0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn gbs(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn throughput(server: &Identity, size: u64, reps: u8) {
    let relay = RelayProc::start(server);
    let (mut d, mut r) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        d.push(gbs(size, direct(size)));
        r.push(gbs(size, relayed(&relay, server, size, rep)));
        println!(
            "  rep {}: direct {:.2} GB/s, relayed {:.2} GB/s",
            rep + 1,
            d[rep as usize],
            r[rep as usize]
        );
    }
    let (d, r) = (median(d), median(r));
    println!(
        "(a) {} MiB over loopback: direct {d:.2} GB/s, through the relay {r:.2} GB/s, \
         ratio {:.2} (median of {reps})",
        size >> 20,
        r / d
    );
}

fn many(server: &Identity, sessions: usize, per_session: u64) {
    let relay = RelayProc::start(server);
    let idle_rss = relay.peak_rss();
    let pairs: Vec<_> = (0..sessions)
        .map(|i| {
            let mut id = [0xee; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            relay_pair(relay.addr, server, id)
        })
        .collect();
    let t0 = Instant::now();
    let workers: Vec<_> = pairs
        .into_iter()
        .map(|(tx, rx)| {
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let sender = thread::spawn(move || send(tx, per_session));
                    let got = receive(rx);
                    sender.join().unwrap();
                    got
                })
                .unwrap()
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.join().unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(total, per_session * sessions as u64);
    let peak = relay.peak_rss();
    println!(
        "(b) {sessions} sessions at once, {} MiB each: {:.2} GB/s in all; relay peak RSS \
         {:.1} MB (idle {:.1} MB; target <= 200 MB)",
        per_session >> 20,
        gbs(total, secs),
        peak as f64 / 1e6,
        idle_rss as f64 / 1e6
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the arguments.
    let size = env_size("FILEAPP_RELAY_BENCH_SIZE", 1 << 30);
    let reps = env_size("FILEAPP_RELAY_BENCH_REPS", 3).clamp(1, 255) as u8;
    let sessions = env_size("FILEAPP_RELAY_BENCH_SESSIONS", 100).max(1) as usize;
    let per_session = env_size("FILEAPP_RELAY_BENCH_PER_SESSION", 32 << 20);
    let server = Identity::generate().unwrap();
    println!(
        "relay benchmark ({} cores)",
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    throughput(&server, size, reps);
    many(&server, sessions, per_session);
}
