//! Transfer throughput over 127.0.0.1, against two hand-written limits.
//!
//! Layout: `baseline.rs` (the raw and verified limits), `real.rs` (real client
//! processes), `report.rs` (figures and ratios); this file sets up and runs the reps.
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

mod baseline;
#[path = "../common/mod.rs"]
mod common;
mod real;
mod report;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fileapp::identity::Identity;
use fileapp::transfer::fetch::{FetchEvent, FetchSpec, fetch};
use fileapp::transfer::provider::{Library, serve};
use fileapp::transfer::secure::{KeyLookup, PeerAuth, Security, TlsIdentity};

use common::{make_file, size_and_reps};
use real::RealPair;
use report::{Samples, gib_s, vm_hwm};

/// Where the files live: `FILEAPP_BENCH_DIR`, else tmpfs, else the temp folder.
fn bench_dir() -> String {
    std::env::var("FILEAPP_BENCH_DIR").unwrap_or_else(|_| {
        if Path::new("/dev/shm").is_dir() {
            "/dev/shm".into()
        } else {
            std::env::temp_dir().display().to_string()
        }
    })
}

/// Two in-process providers on one library, one plaintext and one TLS (owner "A",
/// requester "bench", each knowing the other's key as the driver would from the table).
struct InProcess {
    rt: tokio::runtime::Runtime,
    plain: SocketAddr,
    tls: SocketAddr,
    owner_key: [u8; 32],
    requester: Security,
    notices: tokio::sync::mpsc::UnboundedReceiver<String>,
    _accepting: tokio::sync::watch::Sender<bool>,
}

impl InProcess {
    fn start(share: &Path, name: &str) -> InProcess {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut lib = Library::default();
        lib.set_dir(share.to_path_buf());
        lib.offer(name).unwrap();
        let lib = Arc::new(RwLock::new(lib));
        let (ntx, notices) = tokio::sync::mpsc::unbounded_channel();
        let (accepting_tx, accepting) = tokio::sync::watch::channel(true);
        let owner = Identity::generate().unwrap();
        let requester = Identity::generate().unwrap();
        let requester_key = requester.public_key();
        let owner_tls = Arc::new(TlsIdentity::new(&owner).unwrap());
        let table = std::collections::HashMap::from([("bench".to_string(), requester_key)]);
        let lookup: KeyLookup = Arc::new(RwLock::new(table));
        let bind = || {
            rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap()
        };
        let (plain_listener, tls_listener) = (bind(), bind());
        let plain = plain_listener.local_addr().unwrap();
        let tls = tls_listener.local_addr().unwrap();
        let auth = PeerAuth::plaintext();
        rt.spawn(serve(
            plain_listener,
            lib.clone(),
            ntx.clone(),
            accepting.clone(),
            auth,
        ));
        let auth = PeerAuth::tls(owner_tls, lookup);
        rt.spawn(serve(tls_listener, lib, ntx, accepting, auth));
        InProcess {
            rt,
            plain,
            tls,
            owner_key: owner.public_key(),
            requester: Security::Tls(Arc::new(TlsIdentity::new(&requester).unwrap())),
            notices,
            _accepting: accepting_tx,
        }
    }

    /// One in-process download: (total time, time until the provider's answer arrived).
    fn run(&self, tls: bool, dest: &Path, name: &str, expect: &[u8; 32]) -> (Duration, Duration) {
        let (addr, security) = if tls {
            (self.tls, self.requester.clone())
        } else {
            (self.plain, Security::Plaintext)
        };
        let mut spec = FetchSpec::new(addr, "A", name, "bench", dest);
        spec.peer_key = Some(self.owner_key);
        let ttfb = Arc::new(Mutex::new(None));
        let t = ttfb.clone();
        let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
        let t0 = Instant::now();
        let on_event = move |e| {
            if let FetchEvent::Started { .. } = e {
                t.lock().unwrap().get_or_insert(t0.elapsed());
            }
        };
        let report = self
            .rt
            .block_on(fetch(spec, security, on_event, cancel))
            .unwrap();
        let el = t0.elapsed();
        assert_eq!(&report.hash, expect);
        assert!(!report.already_present);
        let ttfb = ttfb.lock().unwrap().unwrap_or_default();
        (el, ttfb)
    }
}

fn main() {
    let (size, reps) = size_and_reps();
    let work = tempfile::tempdir_in(bench_dir()).unwrap();
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
    let mut local = InProcess::start(&share, name);
    let mut real_tls = RealPair::start(work.path(), &share, name, false);
    let mut real_plain = RealPair::start(work.path(), &share, name, true);
    let out = dest.join(name);
    // Offering mmaps the source to hash it, which counts in RSS; reset the high-water
    // mark so the figure below covers the transfers only.
    let setup_hwm = vm_hwm();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let mut s = Samples::default();
    for i in 0..reps {
        // Interleaved, so drift in the machine affects every path alike.
        let measured = |d: Duration| {
            std::fs::remove_file(&out).unwrap();
            d
        };
        let r = measured(baseline::raw_run(&src, &out, size));
        let v = measured(baseline::verified_run(&src, &out, size, &expect));
        let (o, t) = local.run(false, &dest, name, &expect);
        let o = measured(o);
        let (e, et) = local.run(true, &dest, name, &expect);
        let e = measured(e);
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
        let (rt_first, rt_time) = real_tls.run(name);
        let (rp_first, rp_time) = real_plain.run(name);
        println!(
            "       real clients: encrypted {:.2} GiB/s (request to first byte {:.2} ms), plaintext {:.2} GiB/s (request to first byte {:.2} ms)",
            gib_s(size, rt_time),
            rt_first.as_secs_f64() * 1e3,
            gib_s(size, rp_time),
            rp_first.as_secs_f64() * 1e3
        );
        s.push_rep([r, v, o, t, e, et, rt_time, rp_time, rt_first, rp_first]);
        while local.notices.try_recv().is_ok() {}
    }
    report::print(size, &mut s);
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
