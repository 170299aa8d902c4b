//! The figures: best and median throughput per path, ratios against the baselines
//! measured in the same run, and the paired (rep by rep) ratios.

use std::time::Duration;

/// Every rep's timings, one vector per path.
#[derive(Default)]
pub struct Samples {
    raw: Vec<Duration>,
    verified: Vec<Duration>,
    plain: Vec<Duration>,
    plain_first: Vec<Duration>,
    enc: Vec<Duration>,
    enc_first: Vec<Duration>,
    real_enc: Vec<Duration>,
    real_plain: Vec<Duration>,
    real_enc_first: Vec<Duration>,
    real_plain_first: Vec<Duration>,
}

impl Samples {
    /// One rep: raw, verified, plaintext (+ first byte), encrypted (+ first byte), real
    /// encrypted, real plaintext, and the real clients' request-to-first-byte times.
    pub fn push_rep(&mut self, d: [Duration; 10]) {
        let [r, v, o, t, e, et, re, rp, ref_, rpf] = d;
        self.raw.push(r);
        self.verified.push(v);
        self.plain.push(o);
        self.plain_first.push(t);
        self.enc.push(e);
        self.enc_first.push(et);
        self.real_enc.push(re);
        self.real_plain.push(rp);
        self.real_enc_first.push(ref_);
        self.real_plain_first.push(rpf);
    }
}

pub fn gib_s(size: u64, d: Duration) -> f64 {
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

pub fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Best and median of a sorted copy, in milliseconds.
fn best_median_ms(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    (ms(v[0]), ms(v[v.len() / 2]))
}

pub fn print(size: u64, s: &mut Samples) {
    let (rb, rm) = stats(size, &s.raw);
    let (vb, vm) = stats(size, &s.verified);
    let (ob, om) = stats(size, &s.plain);
    let (eb, em) = stats(size, &s.enc);
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
    let (lo, mid, hi) = paired(&s.raw, &s.enc);
    println!("encrypted/raw of the same rep: median {mid:.3} (lowest {lo:.3}, highest {hi:.3})");
    let (pfb, pfm) = best_median_ms(&mut s.plain_first);
    let (efb, efm) = best_median_ms(&mut s.enc_first);
    println!(
        "time to first byte (provider's answer): plaintext best {pfb:.2} ms, median {pfm:.2} ms; encrypted best {efb:.2} ms, median {efm:.2} ms"
    );
    let (tb, tm) = stats(size, &s.real_enc);
    let (pb, pm) = stats(size, &s.real_plain);
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
    let (lo, mid, hi) = paired(&s.raw, &s.real_enc);
    println!("encrypted/raw of the same rep: median {mid:.3} (lowest {lo:.3}, highest {hi:.3})");
    let (efb, efm) = best_median_ms(&mut s.real_enc_first);
    let (pfb, pfm) = best_median_ms(&mut s.real_plain_first);
    println!(
        "request -> first byte: encrypted best {efb:.2} ms, median {efm:.2} ms; plaintext best {pfb:.2} ms, median {pfm:.2} ms (target <= 10 ms)"
    );
}
