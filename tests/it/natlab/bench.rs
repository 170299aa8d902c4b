//! The reach benchmark, in the NAT lab: for each path, the time from `request` to the
//! first byte and the throughput of a 1 GiB download, each as a ratio to a direct TLS
//! download between two public hosts in the same run. One command:
//!
//! ```text
//! cargo test --release --test it natlab::bench -- --ignored --nocapture
//! ```
//!
//! Files live on tmpfs (`/dev/shm`) so the disk is not measured. `FILEAPP_BENCH_MIB`
//! changes the size (default 1024).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Lab, Nat, until_reach};
use crate::util::Proc;

/// One download's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    /// From sending `request` to the owner's answer (`< Downloading f... >`).
    first_byte: Duration,
    /// Bytes per second, from the first byte to the end.
    rate: f64,
}

fn size_mib() -> usize {
    std::env::var("FILEAPP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// Writes `mib` MiB (a random MiB repeated) to `dir/share/big`.
fn big_file(dir: &Path, mib: usize) {
    use std::io::Write;
    std::fs::create_dir_all(dir.join("share")).unwrap();
    let block = crate::util::random_bytes(1 << 20, 99);
    let mut f = std::fs::File::create(dir.join("share/big")).unwrap();
    for _ in 0..mib {
        f.write_all(&block).unwrap();
    }
}

/// Owner `o` (sharing `big`) to requester `r`: the figures of one download, checked to
/// have taken `via`.
fn download(r: &mut Proc, o: &mut Proc, via: &str, bytes: u64) -> Figures {
    let asked = Instant::now();
    r.send("request big O --force");
    r.expect_within("< Downloading big... >", Duration::from_secs(30));
    let first_byte = asked.elapsed();
    let summary = r.expect_within("< big: ", Duration::from_secs(300));
    let total = asked.elapsed();
    r.expect_line("< big downloaded successfully! >");
    o.expect_line("< big transferred successfully! >");
    assert!(summary.ends_with(&format!(", {via} >")), "{summary}");
    let rate = bytes as f64 / (total - first_byte).as_secs_f64();
    Figures { first_byte, rate }
}

/// A lab with the owner at `owner` and the requester at `requester`, both registered
/// and the owner's reach known to the requester as `reach`.
fn cell(
    lab: &mut Lab,
    owner: Option<Nat>,
    requester: Option<Nat>,
    reach: &str,
    via: &str,
) -> Figures {
    let mib = size_mib();
    let srv = lab.start_server(&["--db", ":memory:"]);
    let mut host = |nat: Option<Nat>| match nat {
        Some(n) => lab.home(n),
        None => lab.public_host(),
    };
    let (oh, rh) = (host(owner), host(requester));
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    big_file(&dir.path().join("o"), mib);
    let mut o = srv.client_in(&oh.ns, "O", &dir.path().join("o"));
    o.send("setdir share");
    o.expect("Successfully set");
    o.send("offer big");
    o.expect_line(">>> [Offer Message Received By Server]");
    let down = dir.path().join("r");
    std::fs::create_dir(&down).unwrap();
    let mut r = srv.client_in(&rh.ns, "R", &down);
    until_reach(&mut r, "O", reach);
    // Twice: the first warms the page cache and the connection paths; the second counts.
    download(&mut r, &mut o, via, (mib as u64) << 20);
    let f = download(&mut r, &mut o, via, (mib as u64) << 20);
    eprintln!(
        "{via:>8}: first byte after {:>8.2?}, {:>8.1} MiB/s",
        f.first_byte,
        f.rate / (1 << 20) as f64
    );
    f
}

#[test]
#[ignore = "benchmark: cargo test --release --test it natlab::bench -- --ignored --nocapture"]
fn bench() {
    let mut lab = lab!("bench");
    let direct = cell(&mut lab, None, None, "reachable", "direct");
    let reverse = cell(&mut lab, Some(Nat::Cone), None, "nat-cone", "reverse");
    let punched = cell(
        &mut lab,
        Some(Nat::Cone),
        Some(Nat::Cone),
        "nat-cone",
        "punched",
    );
    let relayed = cell(
        &mut lab,
        Some(Nat::Symmetric),
        Some(Nat::Symmetric),
        "nat-symmetric",
        "relayed",
    );
    let ratio = |f: Figures| f.rate / direct.rate;
    eprintln!("reverse / direct TLS throughput: {:.2}", ratio(reverse));
    eprintln!(
        "punched / direct TLS throughput: {:.2} (target >= 0.5)",
        ratio(punched)
    );
    assert!(punched.first_byte <= Duration::from_secs(1), "{punched:?}");
    eprintln!(
        "relayed / direct TLS throughput: {:.2} (target >= 0.5)",
        ratio(relayed)
    );
    assert!(
        relayed.first_byte <= Duration::from_millis(300),
        "{relayed:?}"
    );
    assert!(direct.first_byte <= Duration::from_millis(50), "{direct:?}");
    assert!(
        reverse.first_byte <= Duration::from_millis(50),
        "{reverse:?}"
    );
}
