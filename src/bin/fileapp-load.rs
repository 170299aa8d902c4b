//! `fileapp-load`: load generator for the fileapp index server.
//!
//! Starts the real `fileapp` server binary (the one next to this executable) on
//! 127.0.0.1 with raised limits, simulates N clients from one thread over a few UDP
//! sockets, and reports four phases: registration storm, acknowledged-request
//! throughput, propagation latency of a new offer to all clients, and the server's peak
//! memory with many clients and files (separate server run). See docs/LOAD.md.
//!
//! Build both binaries first: `cargo build --release`, then
//! `target/release/fileapp-load` (or `cargo run --release --bin fileapp-load`).

#[path = "fileapp_load/net.rs"]
mod net;
#[path = "fileapp_load/server.rs"]
mod server;
#[path = "fileapp_load/sim.rs"]
mod sim;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

use net::UdpCounters;
use server::ServerProc;
use sim::{MemLoadReport, PropReport, RegReport, Sim, SyncReport, TputReport};

/// Load generator for the fileapp index server (127.0.0.1 only).
#[derive(Parser, Debug, Clone)]
#[command(name = "fileapp-load")]
struct Args {
    /// Simulated clients for phases 1-3.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// UDP sockets the clients are spread over (clients share sockets).
    #[arg(long, default_value_t = 64)]
    sockets: usize,
    /// Length of the throughput phase, in seconds.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Outstanding requests per socket in the throughput phase.
    #[arg(long, default_value_t = 16)]
    window: u32,
    /// In the throughput phase, one request in this many is an Offer of a new file
    /// (which makes the server push a table delta to every client). 0: heartbeats only.
    #[arg(long, default_value_t = 10_000)]
    offer_every: u64,
    /// Propagation rounds.
    #[arg(long, default_value_t = 50)]
    rounds: u32,
    /// Clients of the memory phase (separate server run); 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    memory_clients: usize,
    /// Files each memory-phase client offers.
    #[arg(long, default_value_t = 10)]
    memory_files: u32,
    /// Outstanding requests per socket in the memory phase.
    #[arg(long, default_value_t = 32)]
    memory_window: u32,
    /// Use a SQLite database in a temporary folder instead of :memory: (both server runs).
    #[arg(long)]
    db_file: bool,
    /// Server-side rate limit per source address (datagrams/s, 0 = off).
    #[arg(long, default_value_t = 0)]
    rate_limit: u32,
    /// The server binary (default: `fileapp` next to this executable).
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Print the report as JSON (one object) instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize)]
struct ServerUse {
    cpu_seconds: f64,
    /// Share of one core used by the server during the phase.
    cpu_cores: f64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    /// 1-minute load average before the run: other work on the 2 cores skews results.
    loadavg_before: f64,
    clients: usize,
    sockets: usize,
    db: String,
    registration: RegReport,
    registration_kernel_drops: UdpCounters,
    sync: SyncReport,
    throughput: TputReport,
    throughput_server: ServerUse,
    throughput_client_cpu_cores: f64,
    throughput_kernel_drops: UdpCounters,
    propagation: PropReport,
    propagation_kernel_drops: UdpCounters,
    memory: Option<MemReport>,
    server_exit: String,
    server_output: Vec<String>,
    total_seconds: f64,
}

#[derive(Debug, Default, Serialize)]
struct MemReport {
    db: String,
    load: MemLoadReport,
    baseline_rss_kib: u64,
    peak_rss_kib: u64,
    rss_kib: u64,
    server_cpu_seconds: f64,
    kernel_drops: UdpCounters,
    server_exit: String,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("fileapp-load: {e}");
                        std::process::exit(1);
                    }
                }
            } else {
                print_report(&args, &report);
            }
        }
        Err(e) => {
            eprintln!("fileapp-load: {e:#}");
            std::process::exit(1);
        }
    }
}

fn server_args(args: &Args, clients: usize) -> Vec<String> {
    vec![
        "--rate-limit".into(),
        args.rate_limit.to_string(),
        "--max-clients-per-ip".into(),
        (clients + 100).to_string(),
        // Nobody goes offline during a run: liveness is not what is measured.
        "--heartbeat-ms".into(),
        "600000".into(),
    ]
}

/// A temporary folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!("fileapp-load-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn progress(args: &Args, msg: &str) {
    if !args.json {
        eprintln!("[fileapp-load] {msg}");
    }
}

fn run(args: &Args) -> anyhow::Result<Report> {
    let start = Instant::now();
    let bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => server::default_binary()?,
    };
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    let tmp = if args.db_file {
        Some(TempDir::new()?)
    } else {
        None
    };
    let db = match &tmp {
        Some(t) => t.0.join("load.db").to_string_lossy().into_owned(),
        None => ":memory:".to_string(),
    };
    let mut report = Report {
        loadavg_before: loadavg(),
        clients: args.clients,
        db: db.clone(),
        ..Report::default()
    };

    // ---- phases 1-3: one server ---------------------------------------------------------
    let mut srv = ServerProc::start(&bin, &db, &server_args(args, args.clients))?;
    progress(args, &format!("server pid {} on {}", srv.pid(), srv.addr));
    let mut sim = Sim::new(srv.addr, args.clients, args.sockets, "load-")?;
    report.sockets = sim.local_addrs();

    let k0 = UdpCounters::read();
    report.registration = sim.phase_register();
    report.registration_kernel_drops = UdpCounters::read().since(k0);
    progress(
        args,
        &format!(
            "registration: {}/{} welcomed",
            report.registration.welcomed, report.registration.clients
        ),
    );

    report.sync = sim.sync(Duration::from_secs(10));
    progress(
        args,
        &format!(
            "sync: in_sync={} at version {} in {:.3} s",
            report.sync.in_sync, report.sync.version, report.sync.seconds
        ),
    );

    let k0 = UdpCounters::read();
    let (cpu0, me0) = (
        net::cpu_seconds(srv.pid()),
        net::cpu_seconds(std::process::id()),
    );
    let t0 = Instant::now();
    report.throughput = sim.phase_throughput(
        Duration::from_secs(args.duration_secs),
        args.window,
        args.offer_every,
    );
    let wall = t0.elapsed().as_secs_f64();
    let cpu = net::cpu_seconds(srv.pid()) - cpu0;
    report.throughput_server = ServerUse {
        cpu_seconds: cpu,
        cpu_cores: cpu / wall.max(1e-9),
    };
    report.throughput_client_cpu_cores =
        (net::cpu_seconds(std::process::id()) - me0) / wall.max(1e-9);
    report.throughput_kernel_drops = UdpCounters::read().since(k0);
    progress(
        args,
        &format!("throughput: {:.0} acked/s", report.throughput.acked_per_sec),
    );

    let resync = sim.sync(Duration::from_secs(10));
    progress(
        args,
        &format!(
            "resync: in_sync={} at version {} in {:.3} s",
            resync.in_sync, resync.version, resync.seconds
        ),
    );
    let k0 = UdpCounters::read();
    report.propagation = sim.phase_propagation(args.rounds, Duration::from_secs(2));
    report.propagation_kernel_drops = UdpCounters::read().since(k0);
    progress(
        args,
        &format!(
            "propagation: {}/{} rounds, p99 {:.2} ms",
            report.propagation.completed, report.propagation.rounds, report.propagation.all_p99_ms
        ),
    );
    drop(sim);
    report.server_output = srv.output();
    report.server_exit = srv.stop();
    drop(srv);

    // ---- phase 4: memory, separate server ------------------------------------------------
    if args.memory_clients > 0 {
        let mem_db = match &tmp {
            Some(t) => t.0.join("memory.db").to_string_lossy().into_owned(),
            None => ":memory:".to_string(),
        };
        let mut srv = ServerProc::start(&bin, &mem_db, &server_args(args, args.memory_clients))?;
        progress(
            args,
            &format!(
                "memory: server pid {}, {} clients x {} files",
                srv.pid(),
                args.memory_clients,
                args.memory_files
            ),
        );
        let baseline = net::vm_kib(srv.pid(), "VmHWM:").unwrap_or(0);
        let mut sim = Sim::new(srv.addr, args.memory_clients, args.sockets, "m-")?;
        let k0 = UdpCounters::read();
        let load = sim.phase_memory_load(
            args.memory_files,
            args.memory_window,
            Duration::from_secs(90),
        );
        let kernel_drops = UdpCounters::read().since(k0);
        // Let the server finish its last batch before reading its memory.
        std::thread::sleep(Duration::from_millis(100));
        let peak = net::vm_kib(srv.pid(), "VmHWM:").unwrap_or(0);
        let rss = net::vm_kib(srv.pid(), "VmRSS:").unwrap_or(0);
        let cpu = net::cpu_seconds(srv.pid());
        let alive = srv.alive();
        drop(sim);
        let mut exit = srv.stop();
        if !alive {
            exit = format!("died during the memory phase ({exit})");
        }
        report.server_output.extend(srv.output());
        report.memory = Some(MemReport {
            db: mem_db,
            load,
            baseline_rss_kib: baseline,
            peak_rss_kib: peak,
            rss_kib: rss,
            server_cpu_seconds: cpu,
            kernel_drops,
            server_exit: exit,
        });
    }
    report.total_seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The host's 1-minute load average.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

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

fn print_report(args: &Args, r: &Report) {
    let reg = &r.registration;
    let t = &r.throughput;
    let p = &r.propagation;
    println!();
    println!(
        "fileapp-load: {} clients over {} sockets, server db {}, {} s total",
        r.clients, r.sockets, r.db, r.total_seconds as u64
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
    let reg_ok = reg.welcomed == reg.clients && reg.retransmits == 0 && reg.unanswered == 0;
    println!(
        "{:<28} {:<50} {:<14} {}",
        "1 registration storm",
        format!(
            "{}/{} welcomed in {:.1} ms = {}/s",
            reg.welcomed,
            reg.clients,
            reg.seconds * 1000.0,
            thousands(reg.per_sec)
        ),
        "all, 0 lost",
        yes(reg_ok)
    );
    println!(
        "{:<28} {:<50}",
        "",
        format!(
            "lost: {} retransmitted, {} unanswered, {} rejected",
            reg.retransmits, reg.unanswered, reg.rejected
        )
    );
    println!(
        "{:<28} {:<50}",
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
        )
    );
    println!(
        "{:<28} {:<50} {:<14} {}",
        "2 acked requests/s",
        format!(
            "{}/s over {:.1} s (window {}x{})",
            thousands(t.acked_per_sec),
            t.seconds,
            r.sockets,
            t.window_per_socket
        ),
        ">= 100,000/s",
        yes(t.acked_per_sec >= 100_000.0)
    );
    println!(
        "{:<28} {:<50}",
        "",
        format!(
            "rtt p50 {} us, p99 {} us, max {} us",
            t.rtt_p50_us, t.rtt_p99_us, t.rtt_max_us
        )
    );
    println!(
        "{:<28} {:<50}",
        "",
        format!(
            "table parts in {}/s, TableAcks out {}/s",
            thousands(t.table_parts_per_sec),
            thousands(t.table_acks_per_sec)
        )
    );
    println!(
        "{:<28} {:<50}",
        "",
        format!(
            "datagrams out {}/s, in {}/s",
            thousands(t.datagrams_out_per_sec),
            thousands(t.datagrams_in_per_sec)
        )
    );
    println!(
        "{:<28} {:<50}",
        "",
        format!(
            "retransmits {}, gave up {}, unanswered {}",
            t.retransmits, t.gave_up, t.unanswered_after_drain
        )
    );
    println!(
        "{:<28} {:<50}",
        "",
        format!(
            "task cpu (no softirq): server {:.2}, generator {:.2} cores",
            r.throughput_server.cpu_cores, r.throughput_client_cpu_cores
        )
    );
    println!(
        "{:<28} {:<50} {:<14} {}",
        "3 propagation to all",
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({}/{} rounds)",
            p.all_p50_ms, p.all_p99_ms, p.all_max_ms, p.completed, p.rounds
        ),
        "p99 <= 100 ms",
        yes(p.completed == p.rounds && p.all_p99_ms <= 100.0)
    );
    println!(
        "{:<28} {:<50}",
        "",
        format!(
            "per client p50 {:.2} ms, p99 {:.2} ms; offer ack p50 {:.2} ms",
            p.each_p50_ms, p.each_p99_ms, p.offer_ack_p50_ms
        )
    );
    match &r.memory {
        Some(m) => {
            println!(
                "{:<28} {:<50} {:<14} {}",
                "4 server peak RSS",
                format!(
                    "{:.1} MB (VmHWM) for {} clients x {} files{}",
                    m.peak_rss_kib as f64 / 1024.0,
                    m.load.welcomed,
                    m.load.files_per_client,
                    if m.db == ":memory:" { "" } else { " (SQLite)" }
                ),
                "<= 200 MB",
                yes(m.peak_rss_kib <= 200 * 1024
                    && m.load.welcomed == m.load.clients
                    && m.load.offers_acked == m.load.clients as u64)
            );
            println!(
                "{:<28} {:<50}",
                "",
                format!(
                    "baseline {:.1} MB, end {:.1} MB; {} offers acked; {:.1} s = {}/s",
                    m.baseline_rss_kib as f64 / 1024.0,
                    m.rss_kib as f64 / 1024.0,
                    m.load.offers_acked,
                    m.load.seconds,
                    thousands(m.load.requests_per_sec)
                )
            );
            println!(
                "{:<28} {:<50}",
                "",
                format!(
                    "retransmits {}, gave up {}, server cpu {:.1} s",
                    m.load.retransmits, m.load.gave_up, m.server_cpu_seconds
                )
            );
        }
        None => println!("{:<28} skipped (--memory-clients 0)", "4 server peak RSS"),
    }
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
    let _ = args;
}
