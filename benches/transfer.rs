//! Transfer throughput over 127.0.0.1, against two hand-written limits.
//!
//! Run: `cargo bench --bench transfer [-- SIZE [REPS]]`, or set `FILEAPP_BENCH_SIZE`
//! (bytes; suffixes K, M, G allowed) and `FILEAPP_BENCH_REPS`. Defaults: 1G, 5.
//!
//! In each repetition, interleaved so drift in the machine affects all alike:
//! - raw: blocking `sendfile` sender -> `splice` (socket -> pipe -> file) receiver.
//!   No user-space copy, no hashing: the ceiling for moving bytes to disk.
//! - verified: same sender -> receiver that `read`s into a 1 MiB buffer, BLAKE3-hashes
//!   it and writes it, one thread. The simple way to receive *and* verify.
//! - plaintext: `provider::serve` + `fetch::fetch` in `--plaintext` mode (sendfile/splice).
//! - encrypted: the same over TLS 1.3 with pinned keys (the default mode).
//!
//! Every receiver fsyncs the output before the clock stops (ours always does), and the
//! output is deleted between runs. The source file is in the page cache throughout.
//!
//! Files live in `/dev/shm` (tmpfs) unless `FILEAPP_BENCH_DIR` says otherwise: on a disk,
//! the fsync makes all three measure the disk, not the transfer path. Point
//! `FILEAPP_BENCH_DIR` at a disk directory to measure end-to-end durable throughput.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fileapp::identity::Identity;
use fileapp::transfer::fetch::{FetchEvent, FetchSpec, fetch};
use fileapp::transfer::provider::{Library, serve};
use fileapp::transfer::secure::{KeyLookup, PeerAuth, Security, TlsIdentity};

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

fn make_file(path: &Path, size: u64) -> [u8; 32] {
    let mut f = File::create(path).unwrap();
    let mut xof = blake3::Hasher::new().update(b"bench").finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
    *hasher.finalize().as_bytes()
}

/// Minimal blocking sendfile sender: serves `path` once to the first connection.
fn spawn_sender(path: &Path) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let path = path.to_path_buf();
    let h = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let file = File::open(&path).unwrap();
        let size = file.metadata().unwrap().len();
        let mut off: libc::off_t = 0;
        while (off as u64) < size {
            let n =
                unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, 1 << 30) };
            assert!(n > 0, "sendfile: {}", std::io::Error::last_os_error());
        }
    });
    (addr, h)
}

fn raw_run(src: &Path, out: &Path, size: u64) -> Duration {
    let (addr, sender) = spawn_sender(src);
    let t0 = Instant::now();
    let sock = TcpStream::connect(addr).unwrap();
    let file = File::create(out).unwrap();
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // A bigger pipe means fewer splice round trips.
    unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 1 << 20) };
    let mut done = 0u64;
    while done < size {
        let n = unsafe {
            libc::splice(
                sock.as_raw_fd(),
                std::ptr::null_mut(),
                fds[1],
                std::ptr::null_mut(),
                1 << 20,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
            )
        };
        assert!(n > 0, "splice in: {}", std::io::Error::last_os_error());
        let mut left = n as usize;
        while left > 0 {
            let m = unsafe {
                libc::splice(
                    fds[0],
                    std::ptr::null_mut(),
                    file.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
                )
            };
            assert!(m > 0, "splice out: {}", std::io::Error::last_os_error());
            left -= m as usize;
        }
        done += n as u64;
    }
    file.sync_all().unwrap();
    let el = t0.elapsed();
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    sender.join().unwrap();
    el
}

fn verified_run(src: &Path, out: &Path, size: u64, expect: &[u8; 32]) -> Duration {
    let (addr, sender) = spawn_sender(src);
    let t0 = Instant::now();
    let mut sock = TcpStream::connect(addr).unwrap();
    let mut file = File::create(out).unwrap();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < size {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0);
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        done += n as u64;
    }
    file.sync_all().unwrap();
    assert_eq!(hasher.finalize().as_bytes(), expect);
    let el = t0.elapsed();
    sender.join().unwrap();
    el
}

/// Returns (total time, time until the provider's answer arrived).
fn ours_run(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    dest: &Path,
    name: &str,
    expect: &[u8; 32],
    security: Security,
    owner_key: [u8; 32],
) -> (Duration, Duration) {
    let mut spec = FetchSpec::new(addr, "A", name, "bench", dest);
    spec.peer_key = Some(owner_key);
    let ttfb = Arc::new(Mutex::new(None));
    let t = ttfb.clone();
    let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    let report = rt
        .block_on(fetch(
            spec,
            security,
            move |e| {
                if let FetchEvent::Started { .. } = e {
                    t.lock().unwrap().get_or_insert(t0.elapsed());
                }
            },
            cancel,
        ))
        .unwrap();
    let el = t0.elapsed();
    assert_eq!(&report.hash, expect);
    assert!(!report.already_present);
    let ttfb = ttfb.lock().unwrap().unwrap_or_default();
    (el, ttfb)
}

fn gib_s(size: u64, d: Duration) -> f64 {
    size as f64 / d.as_secs_f64() / (1u64 << 30) as f64
}

fn stats(size: u64, v: &[Duration]) -> (f64, f64) {
    let mut r: Vec<f64> = v.iter().map(|d| gib_s(size, *d)).collect();
    r.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let best = *r.last().unwrap();
    let median = if r.len() % 2 == 1 {
        r[r.len() / 2]
    } else {
        (r[r.len() / 2 - 1] + r[r.len() / 2]) / 2.0
    };
    (best, median)
}

/// Throughput of `x` over `base`, rep by rep (each pair ran back to back, so it saw the
/// same machine): (lowest, median, highest).
fn paired(base: &[Duration], x: &[Duration]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = base
        .iter()
        .zip(x)
        .map(|(b, x)| b.as_secs_f64() / x.as_secs_f64())
        .collect();
    r.sort_by(f64::total_cmp);
    (r[0], r[r.len() / 2], r[r.len() - 1])
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A real `fileapp` process driven through its plain line-by-line mode.
struct Real {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Real {
    fn spawn(args: &[&str], cwd: &Path) -> Real {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fileapp"))
            .args(args)
            .current_dir(cwd)
            .env("XDG_CONFIG_HOME", cwd.join(".config"))
            .env("XDG_DATA_HOME", cwd.join(".data"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start fileapp");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        Real {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line containing `needle` (panics after 120 s).
    fn expect(&mut self, needle: &str) -> String {
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("no line containing {needle:?}"));
            if l.contains(needle) {
                return l;
            }
        }
    }

    fn hwm(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .map(|l| l["VmHWM:".len()..].trim().to_string())
            })
            .unwrap_or_else(|| "?".into())
    }
}

impl Drop for Real {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server and two real clients: B offers the file, C downloads it.
struct RealPair {
    _server: Real,
    b: Real,
    c: Real,
    dest: PathBuf,
}

impl RealPair {
    fn start(work: &Path, share: &Path, name: &str, plaintext: bool) -> RealPair {
        let tag = if plaintext { "plain" } else { "tls" };
        let root = work.join(format!("real-{tag}"));
        let dest = root.join("down");
        std::fs::create_dir_all(&dest).unwrap();
        let mut server = Real::spawn(
            &[
                "server",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--db",
                ":memory:",
            ],
            &root,
        );
        let port_line = server.expect("Listening on UDP port");
        let port = port_line.split_whitespace().nth(4).unwrap().to_string();
        let addr = format!("127.0.0.1:{port}");
        let mut extra = vec![];
        if plaintext {
            extra.push("--plaintext");
        }
        let mut args_b = vec!["client", "--name", "B", "--server", &addr];
        args_b.extend(&extra);
        let mut b = Real::spawn(&args_b, &root);
        b.expect("[Welcome, You are registered.]");
        b.send(&format!("setdir {}", share.display()));
        b.expect("Successfully set");
        b.send(&format!("offer {name}"));
        b.expect("[Offer Message Received By Server]");
        let mut args_c = vec!["client", "--name", "C", "--server", &addr];
        args_c.extend(&extra);
        let mut c = Real::spawn(&args_c, &dest);
        c.expect("[Welcome, You are registered.]");
        RealPair {
            _server: server,
            b,
            c,
            dest,
        }
    }

    /// One download: (time from typing `request` to the first byte, transfer time as the
    /// client reports it).
    fn run(&mut self, name: &str) -> (Duration, Duration) {
        let t0 = Instant::now();
        self.c.send(&format!("request --force {name} B"));
        self.c.expect(&format!("< Downloading {name}... >"));
        let first = t0.elapsed();
        let stats = self.c.expect(&format!("< {name}: "));
        self.c.expect(" downloaded successfully! >");
        // "< NAME: SIZE bytes, BLAKE3 HASH, SECS s, RATE >"
        let secs: f64 = stats
            .split(", ")
            .find(|p| p.ends_with(" s"))
            .and_then(|p| p.trim_end_matches(" s").parse().ok())
            .expect("seconds in the stats line");
        let _ = std::fs::remove_file(self.dest.join(name));
        (first, Duration::from_secs_f64(secs))
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other arguments are SIZE and REPS.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let size = args
        .first()
        .cloned()
        .or_else(|| std::env::var("FILEAPP_BENCH_SIZE").ok())
        .and_then(|s| parse_size(&s))
        .unwrap_or(1 << 30);
    let reps: usize = args
        .get(1)
        .cloned()
        .or_else(|| std::env::var("FILEAPP_BENCH_REPS").ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);

    let base = std::env::var("FILEAPP_BENCH_DIR").unwrap_or_else(|_| {
        if Path::new("/dev/shm").is_dir() {
            "/dev/shm".into()
        } else {
            std::env::temp_dir().display().to_string()
        }
    });
    let work = tempfile::tempdir_in(&base).unwrap();
    let share = work.path().join("share");
    let dest = work.path().join("dest");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    let name = "bench.bin";
    let src = share.join(name);
    println!(
        "transfer bench: {size} bytes ({:.2} GiB), {reps} repetitions, in {}",
        size as f64 / (1u64 << 30) as f64,
        work.path().display()
    );
    let expect = make_file(&src, size);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut lib = Library::default();
    lib.set_dir(share.clone());
    lib.offer(name).unwrap();
    let lib = Arc::new(RwLock::new(lib));
    let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
    let (_accepting_tx, accepting) = tokio::sync::watch::channel(true);
    // Two providers on the same library: one plaintext, one TLS (owner "A", requester
    // "bench", each knowing the other's key as the driver would from the table).
    let owner = Identity::generate().unwrap();
    let requester = Identity::generate().unwrap();
    let owner_key = owner.public_key();
    let requester_key = requester.public_key();
    let owner_tls = Arc::new(TlsIdentity::new(&owner).unwrap());
    let requester_tls = Security::Tls(Arc::new(TlsIdentity::new(&requester).unwrap()));
    let lookup: KeyLookup = Arc::new(move |n: &str| (n == "bench").then_some(requester_key));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(serve(
        listener,
        lib.clone(),
        ntx.clone(),
        accepting.clone(),
        PeerAuth::plaintext(),
    ));
    let tls_listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let tls_addr = tls_listener.local_addr().unwrap();
    rt.spawn(serve(
        tls_listener,
        lib,
        ntx,
        accepting,
        PeerAuth::tls(owner_tls, lookup),
    ));

    // Two real client pairs (processes, as users run them): encrypted and plaintext.
    let mut real_tls = RealPair::start(work.path(), &share, name, false);
    let mut real_plain = RealPair::start(work.path(), &share, name, true);
    let out = dest.join(name);
    // Offering mmaps the source to hash it, which counts in RSS; reset the high-water
    // mark so the figure below covers the transfers only.
    let setup_hwm = vm_hwm();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (mut raw, mut ver, mut ours, mut ttfb) = (vec![], vec![], vec![], vec![]);
    let (mut enc, mut enc_ttfb) = (vec![], vec![]);
    let (mut real_enc, mut real_plain_t, mut real_first, mut real_first_plain) =
        (vec![], vec![], vec![], vec![]);
    for i in 0..reps {
        let r = raw_run(&src, &out, size);
        std::fs::remove_file(&out).unwrap();
        let v = verified_run(&src, &out, size, &expect);
        std::fs::remove_file(&out).unwrap();
        let (o, t) = ours_run(
            &rt,
            addr,
            &dest,
            name,
            &expect,
            Security::Plaintext,
            owner_key,
        );
        std::fs::remove_file(&out).unwrap();
        let (e, et) = ours_run(
            &rt,
            tls_addr,
            &dest,
            name,
            &expect,
            requester_tls.clone(),
            owner_key,
        );
        std::fs::remove_file(&out).unwrap();
        println!(
            "rep {}: raw {:.2} GiB/s, verified {:.2} GiB/s, plaintext {:.2} GiB/s (first byte after {:.2} ms), encrypted {:.2} GiB/s (first byte after {:.2} ms)",
            i + 1,
            gib_s(size, r),
            gib_s(size, v),
            gib_s(size, o),
            t.as_secs_f64() * 1e3,
            gib_s(size, e),
            et.as_secs_f64() * 1e3
        );
        raw.push(r);
        ver.push(v);
        ours.push(o);
        ttfb.push(t);
        enc.push(e);
        enc_ttfb.push(et);
        let (rt_first, rt_time) = real_tls.run(name);
        let (rp_first, rp_time) = real_plain.run(name);
        println!(
            "       real clients: encrypted {:.2} GiB/s (request to first byte {:.2} ms), plaintext {:.2} GiB/s (request to first byte {:.2} ms)",
            gib_s(size, rt_time),
            rt_first.as_secs_f64() * 1e3,
            gib_s(size, rp_time),
            rp_first.as_secs_f64() * 1e3
        );
        real_enc.push(rt_time);
        real_plain_t.push(rp_time);
        real_first.push(rt_first);
        real_first_plain.push(rp_first);
        while nrx.try_recv().is_ok() {}
    }
    let (rb, rm) = stats(size, &raw);
    let (vb, vm) = stats(size, &ver);
    let (ob, om) = stats(size, &ours);
    let (eb, em) = stats(size, &enc);
    ttfb.sort();
    enc_ttfb.sort();
    println!();
    println!("                        best        median   (GiB/s, fsync included)");
    println!("raw (splice)          {rb:7.2}      {rm:7.2}");
    println!("verified              {vb:7.2}      {vm:7.2}");
    println!("plaintext             {ob:7.2}      {om:7.2}");
    println!("encrypted (TLS 1.3)   {eb:7.2}      {em:7.2}");
    println!(
        "plaintext/verified    {:7.3}      {:7.3}   (target >= 0.9)",
        ob / vb,
        om / vm
    );
    println!("plaintext/raw         {:7.3}      {:7.3}", ob / rb, om / rm);
    println!(
        "encrypted/raw         {:7.3}      {:7.3}   (target >= 0.6)",
        eb / rb,
        em / rm
    );
    println!("encrypted/plaintext   {:7.3}      {:7.3}", eb / ob, em / om);
    let (lo, mid, hi) = paired(&raw, &enc);
    println!("encrypted/raw of the same rep: median {mid:.3} (lowest {lo:.3}, highest {hi:.3})");
    println!(
        "time to first byte (provider's answer): plaintext best {:.2} ms, median {:.2} ms; encrypted best {:.2} ms, median {:.2} ms",
        ttfb[0].as_secs_f64() * 1e3,
        ttfb[ttfb.len() / 2].as_secs_f64() * 1e3,
        enc_ttfb[0].as_secs_f64() * 1e3,
        enc_ttfb[enc_ttfb.len() / 2].as_secs_f64() * 1e3
    );
    let (tb, tm) = stats(size, &real_enc);
    let (pb, pm) = stats(size, &real_plain_t);
    real_first.sort();
    real_first_plain.sort();
    println!();
    println!("real clients (fileapp processes)  best     median");
    println!(
        "encrypted                       {tb:7.2}  {tm:7.2}   ({:.3} / {:.3} of raw; target >= 0.6)",
        tb / rb,
        tm / rm
    );
    println!(
        "plaintext                       {pb:7.2}  {pm:7.2}   ({:.3} / {:.3} of verified; target >= 0.9)",
        pb / vb,
        pm / vm
    );
    let (lo, mid, hi) = paired(&raw, &real_enc);
    println!("encrypted/raw of the same rep: median {mid:.3} (lowest {lo:.3}, highest {hi:.3})");
    println!(
        "request -> first byte: encrypted best {:.2} ms, median {:.2} ms; plaintext best {:.2} ms, median {:.2} ms (target <= 10 ms)",
        real_first[0].as_secs_f64() * 1e3,
        real_first[real_first.len() / 2].as_secs_f64() * 1e3,
        real_first_plain[0].as_secs_f64() * 1e3,
        real_first_plain[real_first_plain.len() / 2].as_secs_f64() * 1e3
    );
    println!(
        "client peak RSS (VmHWM): encrypted owner {}, requester {}; plaintext owner {}, requester {} (target <= 64 MiB)",
        real_tls.b.hwm(),
        real_tls.c.hwm(),
        real_plain.b.hwm(),
        real_plain.c.hwm()
    );
    println!(
        "bench process peak RSS during transfers (VmHWM, in-process provider and requester together): {}",
        vm_hwm()
    );
    println!(
        "peak RSS during setup (includes the mmap used to hash the source at offer time): {setup_hwm}"
    );
}
