//! What the single-file benchmarks (`transfer`, `punch`) share: their size and
//! repetition arguments, and the test file they make.

use std::fs::File;
use std::io::Write;
use std::path::Path;

pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// Writes `size` pseudo-random bytes (the same in every run) to `path`, synced; returns
/// their BLAKE3.
pub fn make_file(path: &Path, size: u64) -> [u8; 32] {
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

/// SIZE and REPS from the command line (`cargo bench` passes `--bench`; anything else is
/// SIZE then REPS) or the environment.
/// The size (first argument or `FILEAPP_BENCH_SIZE`, default 1 GiB; `k`, `M`, `G`
/// suffixes) and repetitions (second argument or `FILEAPP_BENCH_REPS`, default 5).
pub fn size_and_reps() -> (u64, usize) {
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
    (size, reps)
}
