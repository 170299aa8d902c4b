//! Folders over 127.0.0.1 against the tools people would otherwise use, all in one run.
//!
//! Layout: `baseline.rs` (rsync daemon, `tar | nc | tar`, `b3sum`), `ours.rs` (an
//! in-process owner and requester over TLS), `million.rs` (real client processes for
//! the 1,000,000-file memory figure); this file makes the trees, runs and reports.
//!
//! Run: `cargo bench --bench tree [-- FILES [REPS [MILLION]]]`. Defaults: 100000 files
//! of 1–16 KiB in nested folders, 3 repetitions, and the 1,000,000-file requester memory
//! run (`MILLION` = 0 skips it). Files live in `/dev/shm` (`FILEAPP_BENCH_DIR` to change).
//!
//! Every figure is a ratio against a baseline measured in the same run (best of the
//! repetitions on each side), never a bare time:
//! - small files: fileapp files/s ÷ an rsync daemon's, and ÷ an unverified tar stream's;
//! - 1 GiB in 1,000 files ÷ fileapp's own single-file throughput (1 GiB, one file);
//! - offer hashing of the small-file tree ÷ `b3sum` over the same files;
//! - the requester's peak memory for a 1,000,000-file tree (target ≤ 64 MiB).

mod baseline;
mod million;
mod ours;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `files` files of 1–16 KiB, 100 per folder, folders nested two deep.
pub fn small_tree(root: &Path, files: u64) -> u64 {
    let mut xof = blake3::Hasher::new().update(b"tree").finalize_xof();
    let mut buf = vec![0u8; 16 << 10];
    let mut bytes = 0;
    for i in 0..files {
        let dir = root.join(format!("d{:03}/e{:02}", i / 1000, (i / 100) % 10));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let len = 1024 + (i * 7919 % (15 * 1024 + 1)) as usize;
        xof.fill(&mut buf[..len]);
        std::fs::write(dir.join(format!("f{i:06}")), &buf[..len]).unwrap();
        bytes += len as u64;
    }
    bytes
}

/// `files` files of `size` bytes in ten folders.
fn big_tree(root: &Path, files: u64, size: usize) {
    let mut xof = blake3::Hasher::new().update(b"big").finalize_xof();
    let mut buf = vec![0u8; size];
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        xof.fill(&mut buf);
        std::fs::write(dir.join(format!("f{i:04}")), &buf).unwrap();
    }
}

fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
}

fn best(v: &[Duration]) -> Duration {
    v.iter().copied().min().unwrap_or_default()
}

fn main() {
    let files = arg(0, 100_000);
    let reps = arg(1, 3).max(1) as usize;
    let million = arg(2, 1) != 0;
    let base = std::env::var("FILEAPP_BENCH_DIR").unwrap_or_else(|_| "/dev/shm".into());
    let work = tempfile::tempdir_in(base).unwrap();
    let w = work.path();
    let share = w.join("share");
    println!(
        "tree bench in {}: {files} small files, {reps} repetitions",
        w.display()
    );
    let bytes = small_tree(&share.join("small"), files);
    big_tree(&share.join("big"), 1000, 1 << 20);
    let mut f = std::fs::File::create(share.join("single")).unwrap();
    let mut xof = blake3::Hasher::new().update(b"single").finalize_xof();
    let mut buf = vec![0u8; 4 << 20];
    for _ in 0..256 {
        xof.fill(&mut buf);
        f.write_all(&buf).unwrap();
    }
    drop(f);
    println!("made: {files} files ({bytes} bytes), 1000 × 1 MiB, one 1 GiB file");

    let missing: Vec<&str> = ["rsync", "tar", "nc", "b3sum"]
        .into_iter()
        .filter(|t| !baseline::have(t))
        .collect();
    if !missing.is_empty() {
        println!(
            "MISSING baseline tools: {} (e.g. `apt-get install rsync netcat-openbsd b3sum`); their ratios are not reported",
            missing.join(", ")
        );
    }
    let has = |t: &str| !missing.contains(&t);

    let owner = ours::Owner::start(&share);
    owner.offer_file("single");
    let (_, big_hash) = owner.offer_folder(&share, "big");
    let rsyncd = has("rsync").then(|| baseline::RsyncDaemon::start(w, &share.join("small")));
    let dest = w.join("dest");
    let (mut hash_ours, mut hash_b3) = (vec![], vec![]);
    let (mut small_ours, mut small_rsync, mut small_tar) = (vec![], vec![], vec![]);
    let (mut big_ours, mut single) = (vec![], vec![]);
    let mut small_hash = [0; 32];
    for rep in 1..=reps {
        // Interleaved, so drift in the machine affects every path alike.
        let (t, h) = owner.offer_folder(&share, "small");
        small_hash = h;
        hash_ours.push(t);
        if has("b3sum") {
            hash_b3.push(baseline::b3sum(&share.join("small")));
        }
        fresh(&dest);
        small_ours.push(owner.fetch_folder("small", small_hash, &dest));
        if let Some(d) = &rsyncd {
            fresh(&dest);
            small_rsync.push(d.pull(&dest));
        }
        if has("tar") && has("nc") {
            fresh(&dest);
            small_tar.push(baseline::tar_nc(&share.join("small"), &dest));
        }
        fresh(&dest);
        big_ours.push(owner.fetch_folder("big", big_hash, &dest));
        fresh(&dest);
        single.push(owner.fetch_file("single", &dest));
        let fps = |d: &Duration| files as f64 / d.as_secs_f64();
        let gib = |d: &Duration| 1.0 / d.as_secs_f64();
        println!(
            "rep {rep}: small tree: fileapp {:.0} files/s, rsync {}, tar|nc|tar {}; hashing: fileapp {:.2} s, b3sum {}; 1 GiB: 1000 files {:.2} GiB/s, one file {:.2} GiB/s",
            fps(small_ours.last().unwrap()),
            small_rsync
                .last()
                .map_or("-".into(), |d| format!("{:.0} files/s", fps(d))),
            small_tar
                .last()
                .map_or("-".into(), |d| format!("{:.0} files/s", fps(d))),
            hash_ours.last().unwrap().as_secs_f64(),
            hash_b3.last().map_or("-".into(), |d: &Duration| format!(
                "{:.2} s",
                d.as_secs_f64()
            )),
            gib(big_ours.last().unwrap()),
            gib(single.last().unwrap()),
        );
    }
    let _ = small_hash;
    drop(rsyncd);
    fresh(&dest);
    let ratio = |num: Duration, den: Duration| den.as_secs_f64() / num.as_secs_f64();
    println!("--- ratios (best of {reps} on each side; ≥ target is met) ---");
    let line = |what: &str, r: Option<f64>, target: f64| match r {
        Some(r) => println!(
            "{what}: {r:.2} (target ≥ {target}) {}",
            if r >= target { "MET" } else { "MISSED" }
        ),
        None => println!("{what}: not measured (baseline tool missing)"),
    };
    let so = best(&small_ours);
    let some = |v: &[Duration]| (!v.is_empty()).then(|| best(v));
    line(
        "small files/s, fileapp ÷ rsync daemon",
        some(&small_rsync).map(|r| ratio(so, r)),
        1.5,
    );
    line(
        "small files/s, fileapp ÷ tar|nc|tar",
        some(&small_tar).map(|t| ratio(so, t)),
        0.75,
    );
    line(
        "1 GiB in 1000 files ÷ one 1 GiB file (fileapp)",
        Some(ratio(best(&big_ours), best(&single))),
        0.8,
    );
    line(
        "offer hashing speed, fileapp ÷ b3sum",
        some(&hash_b3).map(|b| ratio(best(&hash_ours), b)),
        0.8,
    );
    drop(owner);
    if million {
        let _ = std::fs::remove_dir_all(&share);
        million::run(w);
    }
}
