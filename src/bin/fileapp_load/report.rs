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
    pub sockets: usize,
    pub db: String,
    /// Servers of the deployment phases 1-3 ran against (clients spread over them).
    pub servers: u8,
    /// With several servers: the same phases against one server on SQLite, in the same
    /// run.
    pub baseline: Option<Box<Report>>,
    pub registration: RegReport,
    pub registration_kernel_drops: UdpCounters,
    pub sync: SyncReport,
    /// Phase 2a: heartbeats only.
    pub throughput: TputReport,
    pub throughput_server: ServerUse,
    pub throughput_client_cpu_cores: f64,
    pub throughput_kernel_drops: UdpCounters,
    /// Phase 2b: heartbeats, offers and registrations from scratch.
    pub mixed: TputReport,
    pub mixed_server: ServerUse,
    pub mixed_client_cpu_cores: f64,
    pub mixed_kernel_drops: UdpCounters,
    pub propagation: PropReport,
    pub propagation_kernel_drops: UdpCounters,
    /// With several servers: phase 5.
    pub failover: Option<FailoverReport>,
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
    /// Sockets the clients took turns on (one each if as many as clients): the server
    /// holds one channel session per socket at most.
    pub sockets: usize,
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
    /// Channel handshakes completed, and challenges answered (one each per client).
    pub handshakes: u64,
    pub challenges: u64,
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
    /// Requests outstanding, all clients together.
    pub window: u32,
    /// One request in this many was a registration from scratch / an offer (0: none).
    pub register_every: u64,
    pub offer_every: u64,
    /// Requests acknowledged within the window: `Ack`s (heartbeats, offers) and
    /// `Welcome`s (registrations, each after its handshake and challenge).
    pub acked: u64,
    pub acked_per_sec: f64,
    pub heartbeats_per_sec: f64,
    pub offers_per_sec: f64,
    pub registrations_per_sec: f64,
    /// Channel handshakes completed per second (one per registration from scratch).
    pub handshakes_per_sec: f64,
    pub rtt_p50_us: u32,
    pub rtt_p99_us: u32,
    pub rtt_max_us: u32,
    pub retransmits: u64,
    pub gave_up: u64,
    pub rejected: u64,
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

/// Phase 5: one server of several killed with SIGKILL under load.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FailoverReport {
    /// Clients that spoke to the killed server.
    pub clients_of_dead: usize,
    /// Their offers the killed server acknowledged just before it was killed.
    pub offers_acked: u64,
    /// Welcomed by another server, and how long after the kill.
    pub moved: usize,
    pub not_moved: usize,
    pub moved_p50_ms: f64,
    pub moved_p99_ms: f64,
    pub moved_max_ms: f64,
    /// Acknowledged files missing from a surviving server's fresh snapshot.
    pub acked_files_lost: usize,
    pub observer_found: bool,
    /// Heartbeats acknowledged per second, all servers, during the failover.
    pub heartbeats_per_sec_during: f64,
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

fn yes(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "MET",
        Some(false) => "MISSED",
        None => "n/a",
    }
}

/// A phase's first line: name, figure, target, whether it was met (`None`: cannot
/// tell from this run).
fn row(phase: &str, measured: String, target: &str, ok: impl Into<Option<bool>>) {
    println!("{phase:<28} {measured:<50} {target:<14} {}", yes(ok.into()));
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
    print_comparison(r);
    print_failover(r.failover.as_ref());
    print_memory(r.memory.as_ref());
    print_footer(r);
}

fn print_failover(f: Option<&FailoverReport>) {
    let Some(f) = f else { return };
    row(
        "5 kill -9 one server",
        format!(
            "{}/{} clients moved, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            f.moved, f.clients_of_dead, f.moved_p50_ms, f.moved_p99_ms, f.moved_max_ms
        ),
        "all, <= 5 s",
        f.not_moved == 0 && f.moved_max_ms <= 5000.0,
    );
    row(
        "",
        format!(
            "{} acknowledged offers lost of {} (fresh snapshot)",
            f.acked_files_lost, f.offers_acked
        ),
        "none lost",
        f.observer_found && f.acked_files_lost == 0,
    );
    detail(
        "",
        format!(
            "{}/s heartbeats acknowledged during the failover",
            thousands(f.heartbeats_per_sec_during)
        ),
    );
}

/// With several servers: their figures next to one server on SQLite's, same run.
fn print_comparison(r: &Report) {
    let Some(b) = &r.baseline else { return };
    let phases = [
        ("heartbeats", &r.throughput, &b.throughput),
        ("mixed", &r.mixed, &b.mixed),
    ];
    for (i, (what, ours, base)) in phases.into_iter().enumerate() {
        let (ours, base) = (ours.acked_per_sec, base.acked_per_sec);
        let ratio = if base > 0.0 { ours / base } else { 0.0 };
        let phase = if i == 0 {
            format!("{} servers / 1 on SQLite", r.servers)
        } else {
            String::new()
        };
        row(
            &phase,
            format!(
                "{what} {ratio:.2} ({}/s vs {}/s)",
                thousands(ours),
                thousands(base)
            ),
            ">= 0.5",
            ratio >= 0.5,
        );
    }
    detail(
        "  one server on SQLite",
        format!(
            "registration {}/{} in {:.0} ms; propagation p99 {:.2} ms",
            b.registration.welcomed,
            b.registration.clients,
            b.registration.seconds * 1000.0,
            b.propagation.all_p99_ms
        ),
    );
}

fn print_header(r: &Report) {
    println!();
    println!(
        "fileapp-load: {} clients, one socket each ({} bound), {} server(s), db {}, {} s total",
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
            "{} handshakes, {} challenges; lost: {} retransmitted, {} unanswered, {} rejected",
            reg.handshakes, reg.challenges, reg.retransmits, reg.unanswered, reg.rejected
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
    // The targets are ratios to aquatic_udp on the same machine, which this tool does
    // not run (see docs/LOAD.md): they cannot be judged here.
    let h = &r.throughput;
    row(
        "2a acked requests/s",
        format!("{}/s heartbeats", thousands(h.acked_per_sec)),
        ">= 0.9 aquatic",
        None,
    );
    print_tput_details(h, &r.throughput_server, r.throughput_client_cpu_cores);
    let m = &r.mixed;
    row(
        "2b acked requests/s, mixed",
        format!("{}/s", thousands(m.acked_per_sec)),
        ">= 0.5 aquatic",
        None,
    );
    detail(
        "",
        format!(
            "heartbeats {}/s, offers {}/s, registrations {}/s (1 in {} / {})",
            thousands(m.heartbeats_per_sec),
            thousands(m.offers_per_sec),
            thousands(m.registrations_per_sec),
            m.offer_every,
            m.register_every
        ),
    );
    print_tput_details(m, &r.mixed_server, r.mixed_client_cpu_cores);
}

fn print_tput_details(t: &TputReport, server: &ServerUse, client_cores: f64) {
    detail(
        "",
        format!(
            "{:.1} s, window {}; rtt p50 {} us, p99 {} us, max {} us",
            t.seconds, t.window, t.rtt_p50_us, t.rtt_p99_us, t.rtt_max_us
        ),
    );
    detail(
        "",
        format!(
            "table parts in {}/s, TableAcks out {}/s; datagrams out {}/s, in {}/s",
            thousands(t.table_parts_per_sec),
            thousands(t.table_acks_per_sec),
            thousands(t.datagrams_out_per_sec),
            thousands(t.datagrams_in_per_sec)
        ),
    );
    detail(
        "",
        format!(
            "retransmits {}, gave up {}, rejected {}, unanswered {}",
            t.retransmits, t.gave_up, t.rejected, t.unanswered_after_drain
        ),
    );
    detail(
        "",
        format!(
            "task cpu (no softirq): server {:.2}, generator {:.2} cores",
            server.cpu_cores, client_cores
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
            "retransmits {}, gave up {}, server cpu {:.1} s; {} sockets (live sessions <= that)",
            m.load.retransmits, m.load.gave_up, m.server_cpu_seconds, m.sockets
        ),
    );
}

fn print_footer(r: &Report) {
    println!("{:-<100}", "");
    let drops = [
        ("registration", r.registration_kernel_drops),
        ("heartbeats", r.throughput_kernel_drops),
        ("mixed", r.mixed_kernel_drops),
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
