//! The figures a run produces (one struct per phase, all serialisable for `--json`) and
//! the table printed from them.

use serde::Serialize;

use super::counters::Counters;
use super::procfs::UdpCounters;

/// The whole run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// 1-minute load average before the run: other work on the 2 cores skews results.
    pub loadavg_before: f64,
    pub clients: usize,
    /// Servers the clients were spread over (on one database when more than one).
    pub servers: usize,
    pub sockets: usize,
    pub db: String,
    pub registration: RegReport,
    pub registration_kernel_drops: UdpCounters,
    pub sync: SyncReport,
    pub throughput: TputReport,
    pub throughput_server: ServerUse,
    pub throughput_client_cpu_cores: f64,
    pub throughput_kernel_drops: UdpCounters,
    pub propagation: PropReport,
    pub propagation_kernel_drops: UdpCounters,
    pub memory: Option<MemReport>,
    pub server_exit: String,
    pub server_output: Vec<String>,
    pub total_seconds: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct ServerUse {
    pub cpu_seconds: f64,
    /// Share of one core used by the server during the phase.
    pub cpu_cores: f64,
}

/// Phase 4, with its own server.
#[derive(Debug, Default, Serialize)]
pub struct MemReport {
    pub db: String,
    pub load: MemLoadReport,
    pub baseline_rss_kib: u64,
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
    pub server_cpu_seconds: f64,
    pub kernel_drops: UdpCounters,
    pub server_exit: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RegReport {
    pub clients: usize,
    pub welcomed: usize,
    pub rejected: u64,
    pub seconds: f64,
    pub per_sec: f64,
    /// Register datagrams sent again after the retry interval without a reply.
    pub retransmits: u64,
    /// Clients that never got an answer (after all retries).
    pub unanswered: u64,
    pub counters: Counters,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct SyncReport {
    pub in_sync: bool,
    pub seconds: f64,
    pub version: u64,
    pub counters: Counters,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct TputReport {
    pub seconds: f64,
    pub window_per_socket: u32,
    pub acked: u64,
    pub acked_per_sec: f64,
    pub rtt_p50_us: u32,
    pub rtt_p99_us: u32,
    pub rtt_max_us: u32,
    pub retransmits: u64,
    pub gave_up: u64,
    /// Table parts received / TableAcks sent per second during the window.
    pub table_parts_per_sec: f64,
    pub table_acks_per_sec: f64,
    /// All datagrams the clients sent / received per second.
    pub datagrams_out_per_sec: f64,
    pub datagrams_in_per_sec: f64,
    /// Left unanswered when the drain after the window ([`super::phases::DRAIN`]) ended.
    pub unanswered_after_drain: u64,
    pub counters: Counters,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PropReport {
    pub rounds: u32,
    pub completed: u32,
    pub clients: usize,
    /// Time from sending the offer until the last of the N clients got a part with the
    /// file, per round.
    pub all_p50_ms: f64,
    pub all_p99_ms: f64,
    pub all_max_ms: f64,
    /// Same, per (client, round) pair.
    pub each_p50_ms: f64,
    pub each_p99_ms: f64,
    /// Time until the offer itself was acknowledged.
    pub offer_ack_p50_ms: f64,
    pub counters: Counters,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct MemLoadReport {
    pub clients: usize,
    pub welcomed: usize,
    pub offers_acked: u64,
    pub files_per_client: u32,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub retransmits: u64,
    pub gave_up: u64,
    pub counters: Counters,
}

/// The `p` quantile (0..=1) of ascending `sorted`, nearest rank; 0 when empty.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---- the table --------------------------------------------------------------------------

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn yes(ok: bool) -> &'static str {
    if ok { "MET" } else { "MISSED" }
}

/// A phase's first line: name, figure, target, whether it was met.
fn row(phase: &str, measured: String, target: &str, ok: bool) {
    println!("{phase:<28} {measured:<50} {target:<14} {}", yes(ok));
}

/// A line of detail under a phase (or a line with no target).
fn detail(label: &str, text: String) {
    println!("{label:<28} {text:<50}");
}

/// Prints the report as the human-readable table.
pub fn print(r: &Report) {
    print_header(r);
    print_registration(r);
    print_throughput(r);
    print_propagation(&r.propagation);
    print_memory(r.memory.as_ref());
    print_footer(r);
}

fn print_header(r: &Report) {
    println!();
    println!(
        "fileapp-load: {} clients over {} sockets and {} server(s), db {}, {} s total",
        r.clients, r.sockets, r.servers, r.db, r.total_seconds as u64
    );
    if r.loadavg_before >= 0.5 {
        println!(
            "WARNING: load average was {:.2} before the run: other processes share the cores, \
             numbers are pessimistic",
            r.loadavg_before
        );
    }
    println!("{:-<100}", "");
    println!("{:<28} {:<50} {:<14} status", "phase", "measured", "target");
    println!("{:-<100}", "");
}

fn print_registration(r: &Report) {
    let reg = &r.registration;
    row(
        "1 registration storm",
        format!(
            "{}/{} welcomed in {:.1} ms = {}/s",
            reg.welcomed,
            reg.clients,
            reg.seconds * 1000.0,
            thousands(reg.per_sec)
        ),
        "all, 0 lost",
        reg.welcomed == reg.clients && reg.retransmits == 0 && reg.unanswered == 0,
    );
    detail(
        "",
        format!(
            "lost: {} retransmitted, {} unanswered, {} rejected",
            reg.retransmits, reg.unanswered, reg.rejected
        ),
    );
    detail(
        "  table sync (setup)",
        format!(
            "{} in {:.0} ms, {} parts in, {} dup",
            if r.sync.in_sync {
                "all in sync"
            } else {
                "NOT in sync"
            },
            r.sync.seconds * 1000.0,
            r.sync.counters.table_parts,
            r.sync.counters.table_parts_dup
        ),
    );
}

fn print_throughput(r: &Report) {
    let t = &r.throughput;
    row(
        "2 acked requests/s",
        format!(
            "{}/s over {:.1} s (window {}x{})",
            thousands(t.acked_per_sec),
            t.seconds,
            r.sockets,
            t.window_per_socket
        ),
        ">= 100,000/s",
        t.acked_per_sec >= 100_000.0,
    );
    detail(
        "",
        format!(
            "rtt p50 {} us, p99 {} us, max {} us",
            t.rtt_p50_us, t.rtt_p99_us, t.rtt_max_us
        ),
    );
    detail(
        "",
        format!(
            "table parts in {}/s, TableAcks out {}/s",
            thousands(t.table_parts_per_sec),
            thousands(t.table_acks_per_sec)
        ),
    );
    detail(
        "",
        format!(
            "datagrams out {}/s, in {}/s",
            thousands(t.datagrams_out_per_sec),
            thousands(t.datagrams_in_per_sec)
        ),
    );
    detail(
        "",
        format!(
            "retransmits {}, gave up {}, unanswered {}",
            t.retransmits, t.gave_up, t.unanswered_after_drain
        ),
    );
    detail(
        "",
        format!(
            "task cpu (no softirq): server {:.2}, generator {:.2} cores",
            r.throughput_server.cpu_cores, r.throughput_client_cpu_cores
        ),
    );
}

fn print_propagation(p: &PropReport) {
    row(
        "3 propagation to all",
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({}/{} rounds)",
            p.all_p50_ms, p.all_p99_ms, p.all_max_ms, p.completed, p.rounds
        ),
        "p99 <= 100 ms",
        p.completed == p.rounds && p.all_p99_ms <= 100.0,
    );
    detail(
        "",
        format!(
            "per client p50 {:.2} ms, p99 {:.2} ms; offer ack p50 {:.2} ms",
            p.each_p50_ms, p.each_p99_ms, p.offer_ack_p50_ms
        ),
    );
}

fn print_memory(m: Option<&MemReport>) {
    let Some(m) = m else {
        println!("{:<28} skipped (--memory-clients 0)", "4 server peak RSS");
        return;
    };
    row(
        "4 server peak RSS",
        format!(
            "{:.1} MB (VmHWM) for {} clients x {} files{}",
            m.peak_rss_kib as f64 / 1024.0,
            m.load.welcomed,
            m.load.files_per_client,
            if m.db == ":memory:" { "" } else { " (SQLite)" }
        ),
        "<= 200 MB",
        m.peak_rss_kib <= 200 * 1024
            && m.load.welcomed == m.load.clients
            && m.load.offers_acked == m.load.clients as u64,
    );
    detail(
        "",
        format!(
            "baseline {:.1} MB, end {:.1} MB; {} offers acked; {:.1} s = {}/s",
            m.baseline_rss_kib as f64 / 1024.0,
            m.rss_kib as f64 / 1024.0,
            m.load.offers_acked,
            m.load.seconds,
            thousands(m.load.requests_per_sec)
        ),
    );
    detail(
        "",
        format!(
            "retransmits {}, gave up {}, server cpu {:.1} s",
            m.load.retransmits, m.load.gave_up, m.server_cpu_seconds
        ),
    );
}

fn print_footer(r: &Report) {
    println!("{:-<100}", "");
    let drops = [
        ("registration", r.registration_kernel_drops),
        ("throughput", r.throughput_kernel_drops),
        ("propagation", r.propagation_kernel_drops),
    ];
    let d: Vec<String> = drops
        .iter()
        .chain(r.memory.as_ref().map(|m| ("memory", m.kernel_drops)).iter())
        .map(|(n, c)| format!("{n} {}", c.rcvbuf_errors))
        .collect();
    println!(
        "kernel UDP receive-buffer drops (host-wide): {}",
        d.join(", ")
    );
    println!("server: {}", r.server_exit);
    for line in &r.server_output {
        println!("server said: {line}");
    }
}

/// `--compare`: the two runs' headline figures side by side, with their ratios.
pub fn print_comparison(single: &Report, shared: &Report) {
    println!();
    println!(
        "comparison: 1 server on SQLite vs {} servers on one PostgreSQL, same run",
        shared.servers
    );
    let (a, b) = (
        single.throughput.acked_per_sec,
        shared.throughput.acked_per_sec,
    );
    println!(
        "  acknowledged requests/s: {a:.0} vs {b:.0}, ratio {:.2} (target >= 0.5)",
        b / a.max(1e-9)
    );
    println!(
        "  one change to all clients, p99: {:.2} ms vs {:.2} ms (target <= 250 ms)",
        single.propagation.all_p99_ms, shared.propagation.all_p99_ms
    );
    println!(
        "  registration storm: {}/{} vs {}/{} welcomed",
        single.registration.welcomed,
        single.registration.clients,
        shared.registration.welcomed,
        shared.registration.clients
    );
}
