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
use std::path::Path;
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

    let out = dest.join(name);
    // Offering mmaps the source to hash it, which counts in RSS; reset the high-water
    // mark so the figure below covers the transfers only.
    let setup_hwm = vm_hwm();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (mut raw, mut ver, mut ours, mut ttfb) = (vec![], vec![], vec![], vec![]);
    let (mut enc, mut enc_ttfb) = (vec![], vec![]);
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
    println!(
        "time to first byte (provider's answer): plaintext best {:.2} ms, median {:.2} ms; encrypted best {:.2} ms, median {:.2} ms",
        ttfb[0].as_secs_f64() * 1e3,
        ttfb[ttfb.len() / 2].as_secs_f64() * 1e3,
        enc_ttfb[0].as_secs_f64() * 1e3,
        enc_ttfb[enc_ttfb.len() / 2].as_secs_f64() * 1e3
    );
    println!(
        "peak RSS during transfers (VmHWM, whole process: provider and requester sides together): {}",
        vm_hwm()
    );
    println!(
        "peak RSS during setup (includes the mmap used to hash the source at offer time): {setup_hwm}"
    );
}
