//! The requester's peak memory for a folder of 1,000,000 files, with real client
//! processes (a server, owner B, requester C) as users run them. The files are empty
//! (1,000 folders of 1,000): what grows with the count is the bookkeeping, which is what
//! this measures; the data path does not depend on it.

#[path = "../transfer/real.rs"]
mod real;

use std::path::Path;
use std::time::Instant;

pub fn run(work: &Path) {
    let share = work.join("mshare");
    let t0 = Instant::now();
    for d in 0..1000 {
        let dir = share.join("m").join(format!("dir{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            std::fs::File::create(dir.join(format!("file{f:04}"))).unwrap();
        }
    }
    println!(
        "1,000,000-file tree made in {:.1} s; offering and downloading it with real clients...",
        t0.elapsed().as_secs_f64()
    );
    let mut pair = real::RealPair::start(work, &share, "m", false);
    let (_, took) = pair.run("m/");
    let hwm = pair.c.hwm();
    let kib: u64 = hwm
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    println!(
        "1,000,000 files in {:.1} s; requester peak RSS (VmHWM) {hwm} (target ≤ 64 MiB) {}; owner {}",
        took.as_secs_f64(),
        if kib <= 64 * 1024 { "MET" } else { "MISSED" },
        pair.b.hwm()
    );
}
