//! A whole run: starts the server, drives the phases in order, measures the server's
//! CPU, memory and the kernel's UDP drops around them, and fills in the [`Report`].

use std::path::{Path, PathBuf};

use anyhow::Context;
use std::time::{Duration, Instant};

use super::args::Args;
use super::engine::Sim;
use super::procfs::{self, UdpCounters};
use super::report::{MemReport, Report, ServerUse};
use super::server::{self, ServerProc};

/// How long the table sync between phases may take before it is reported as failed.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one propagation round may take before it counts as not completed.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on the memory phase's load (100,000 clients take a few seconds).
const MEMORY_TIMEOUT: Duration = Duration::from_secs(90);

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

    /// `name` inside the folder, as the server's `--db` argument.
    fn db(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs every phase the options ask for.
pub fn run(args: &Args) -> anyhow::Result<Report> {
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
    let db = |name: &str| tmp.as_ref().map_or(":memory:".to_string(), |t| t.db(name));
    let shared_db = if args.servers > 1 || args.pg.is_some() {
        match &args.pg {
            Some(url) => url.clone(),
            None => fileapp::testkit::pg_database()
                .context("--servers > 1 needs PostgreSQL: pass --pg URL or install postgresql")?,
        }
    } else {
        db("load.db")
    };
    let mut report = Report {
        loadavg_before: procfs::loadavg(),
        clients: args.clients,
        servers: args.servers.max(1),
        db: shared_db,
        ..Report::default()
    };
    run_shared_server(args, &bin, &mut report)?;
    if args.memory_clients > 0 {
        report.memory = Some(run_memory(args, &bin, db("memory.db"), &mut report)?);
    }
    report.total_seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Phases 1-3 against the servers (one, or several on one database), with the table
/// sync between them.
fn run_shared_server(args: &Args, bin: &Path, report: &mut Report) -> anyhow::Result<()> {
    let mut srvs = Vec::new();
    for i in 0..args.servers.max(1) {
        let mut extra = args.server_args(args.clients);
        if args.servers > 1 || args.pg.is_some() {
            extra.extend(["--server-id".to_string(), format!("load-{i}")]);
        }
        let srv = ServerProc::start(bin, &report.db, &extra)?;
        args.progress(&format!("server pid {} on {}", srv.pid(), srv.addr));
        srvs.push(srv);
    }
    let addrs: Vec<_> = srvs.iter().map(|s| s.addr).collect();
    let mut sim = Sim::new(&addrs, args.clients, args.sockets, "load-")?;
    report.sockets = sim.local_addrs();

    let k0 = UdpCounters::read();
    report.registration = sim.phase_register()?;
    report.registration_kernel_drops = UdpCounters::read().since(k0);
    args.progress(&format!(
        "registration: {}/{} welcomed",
        report.registration.welcomed, report.registration.clients
    ));

    report.sync = sim.sync(SYNC_TIMEOUT)?;
    args.progress(&format!(
        "sync: in_sync={} at version {} in {:.3} s",
        report.sync.in_sync, report.sync.version, report.sync.seconds
    ));

    measure_throughput(args, &mut sim, &srvs, report)?;

    let resync = sim.sync(SYNC_TIMEOUT)?;
    args.progress(&format!(
        "resync: in_sync={} at version {} in {:.3} s",
        resync.in_sync, resync.version, resync.seconds
    ));
    let k0 = UdpCounters::read();
    report.propagation = sim.phase_propagation(args.rounds, ROUND_TIMEOUT)?;
    report.propagation_kernel_drops = UdpCounters::read().since(k0);
    args.progress(&format!(
        "propagation: {}/{} rounds, p99 {:.2} ms",
        report.propagation.completed, report.propagation.rounds, report.propagation.all_p99_ms
    ));
    drop(sim);
    for srv in &mut srvs {
        report.server_output.extend(srv.output());
        let exit = srv.stop();
        if !report.server_exit.is_empty() {
            report.server_exit.push_str("; ");
        }
        report.server_exit.push_str(&exit);
    }
    Ok(())
}

/// Phase 2, with the CPU both processes used during it.
fn measure_throughput(
    args: &Args,
    sim: &mut Sim,
    srvs: &[ServerProc],
    report: &mut Report,
) -> anyhow::Result<()> {
    let me = std::process::id();
    let k0 = UdpCounters::read();
    let servers_cpu = || {
        srvs.iter()
            .map(|s| procfs::cpu_seconds(s.pid()))
            .sum::<f64>()
    };
    let (cpu0, me0) = (servers_cpu(), procfs::cpu_seconds(me));
    let t0 = Instant::now();
    report.throughput = sim.phase_throughput(
        Duration::from_secs(args.duration_secs),
        args.window,
        args.offer_every,
    )?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = servers_cpu() - cpu0;
    report.throughput_server = ServerUse {
        cpu_seconds: cpu,
        cpu_cores: cpu / wall.max(1e-9),
    };
    report.throughput_client_cpu_cores = (procfs::cpu_seconds(me) - me0) / wall.max(1e-9);
    report.throughput_kernel_drops = UdpCounters::read().since(k0);
    args.progress(&format!(
        "throughput: {:.0} acked/s",
        report.throughput.acked_per_sec
    ));
    Ok(())
}

/// Phase 4 against a fresh server, so its memory holds only this phase's clients.
fn run_memory(
    args: &Args,
    bin: &Path,
    db: String,
    report: &mut Report,
) -> anyhow::Result<MemReport> {
    let mut srv = ServerProc::start(bin, &db, &args.server_args(args.memory_clients))?;
    args.progress(&format!(
        "memory: server pid {}, {} clients x {} files",
        srv.pid(),
        args.memory_clients,
        args.memory_files
    ));
    let baseline = procfs::vm_kib(srv.pid(), "VmHWM:").unwrap_or(0);
    let mut sim = Sim::new(&[srv.addr], args.memory_clients, args.sockets, "m-")?;
    let k0 = UdpCounters::read();
    let load = sim.phase_memory_load(args.memory_files, args.memory_window, MEMORY_TIMEOUT)?;
    let kernel_drops = UdpCounters::read().since(k0);
    // Let the server finish its last batch before reading its memory.
    std::thread::sleep(Duration::from_millis(100));
    let peak = procfs::vm_kib(srv.pid(), "VmHWM:").unwrap_or(0);
    let rss = procfs::vm_kib(srv.pid(), "VmRSS:").unwrap_or(0);
    let cpu = procfs::cpu_seconds(srv.pid());
    let alive = srv.alive();
    drop(sim);
    let mut exit = srv.stop();
    if !alive {
        exit = format!("died during the memory phase ({exit})");
    }
    report.server_output.extend(srv.output());
    Ok(MemReport {
        db,
        load,
        baseline_rss_kib: baseline,
        peak_rss_kib: peak,
        rss_kib: rss,
        server_cpu_seconds: cpu,
        kernel_drops,
        server_exit: exit,
    })
}
