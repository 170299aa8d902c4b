//! A whole run: starts the server, drives the phases in order, measures the server's
//! CPU, memory and the kernel's UDP drops around them, and fills in the [`Report`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::args::Args;
use super::engine::Sim;
use super::phases::Mix;
use super::procfs::{self, UdpCounters};
use super::report::{MemReport, Report, ServerUse, TputReport};
use super::server::{self, ServerProc};

/// How long the table sync between phases may take before it is reported as failed.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one propagation round may take before it counts as not completed.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long heartbeats run after a server is killed (its clients move meanwhile).
const FAILOVER_LOAD: Duration = Duration::from_secs(6);
/// Descriptors kept for everything but the clients' sockets.
const FILES_SPARE: u64 = 256;
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
    // One socket per simulated client, and a few for the rest.
    let want = args.clients.max(args.memory_clients) as u64 + FILES_SPARE;
    let got = super::sys::raise_nofile(want).context("cannot raise the open-files limit")?;
    anyhow::ensure!(
        got >= args.clients as u64 + FILES_SPARE,
        "the open-files limit is {got}, {} clients need {} (one socket each): raise it \
         (ulimit -n) or simulate fewer clients",
        args.clients,
        args.clients as u64 + FILES_SPARE
    );
    // The memory phase takes turns on sockets past the limit.
    let memory_sockets = args
        .memory_clients
        .min(usize::try_from(got - FILES_SPARE).unwrap_or(usize::MAX));
    let tmp = if args.db_file {
        Some(TempDir::new()?)
    } else {
        None
    };
    let db = |name: &str| tmp.as_ref().map_or(":memory:".to_string(), |t| t.db(name));
    let mut report = Report {
        loadavg_before: procfs::loadavg(),
        clients: args.clients,
        db: db("load.db"),
        ..Report::default()
    };
    if args.servers > 1 {
        // The baseline first: one server on SQLite, in a file (durable, as PostgreSQL is).
        let base_dir = TempDir::new()?;
        let mut base = Report {
            loadavg_before: procfs::loadavg(),
            clients: args.clients,
            db: base_dir.db("baseline.db"),
            servers: 1,
            ..Report::default()
        };
        let dbs = [base.db.clone()];
        run_phases(args, &bin, &dbs, None, &mut base)?;
        report.baseline = Some(Box::new(base));
        let url = match &args.pg {
            Some(u) => u.clone(),
            None => fileapp::testkit::pg_database().context(
                "--servers needs PostgreSQL: give --pg URL, or install it (apt-get install \
                 postgresql) for a throwaway cluster",
            )?,
        };
        let key_dir = TempDir::new()?;
        let key = key_dir.db("deployment.key");
        report.db = "postgres (shared)".into();
        report.servers = args.servers;
        let dbs = vec![url; usize::from(args.servers)];
        run_phases(args, &bin, &dbs, Some(&key), &mut report)?;
    } else {
        report.servers = 1;
        run_phases(
            args,
            &bin,
            std::slice::from_ref(&report.db.clone()),
            None,
            &mut report,
        )?;
    }
    if args.memory_clients > 0 {
        report.memory = Some(run_memory(
            args,
            &bin,
            db("memory.db"),
            memory_sockets,
            &mut report,
        )?);
    }
    report.total_seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Phases 1-3 against one server per entry of `dbs` (started one after the other, all
/// with the key file `key` when given: one deployment), with the table sync between them.
fn run_phases(
    args: &Args,
    bin: &Path,
    dbs: &[String],
    key: Option<&str>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut extra = args.server_args();
    if let Some(k) = key {
        extra.extend(["--key".into(), k.into()]);
    }
    let mut srvs = Vec::with_capacity(dbs.len());
    for db in dbs {
        let srv = ServerProc::start(bin, db, &extra)?;
        args.progress(&format!("server pid {} on {}", srv.pid(), srv.addr));
        srvs.push(srv);
    }
    let addrs: Vec<_> = srvs.iter().map(|s| s.addr).collect();
    let mut sim = Sim::new(&addrs, args.clients, args.clients, "load-", srvs[0].pin())?;
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

    let heartbeats = Mix::default();
    let (t, use_, cores, drops) = measure_throughput(args, &mut sim, &srvs, heartbeats)?;
    args.progress(&format!("heartbeats: {:.0} acked/s", t.acked_per_sec));
    report.throughput = t;
    report.throughput_server = use_;
    report.throughput_client_cpu_cores = cores;
    report.throughput_kernel_drops = drops;

    let resync = sim.sync(SYNC_TIMEOUT)?;
    args.progress(&format!(
        "resync: in_sync={} at version {} in {:.3} s",
        resync.in_sync, resync.version, resync.seconds
    ));
    let mixed = Mix {
        register_every: args.register_every,
        offer_every: args.offer_every,
    };
    let (t, use_, cores, drops) = measure_throughput(args, &mut sim, &srvs, mixed)?;
    args.progress(&format!("mixed: {:.0} acked/s", t.acked_per_sec));
    report.mixed = t;
    report.mixed_server = use_;
    report.mixed_client_cpu_cores = cores;
    report.mixed_kernel_drops = drops;

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
    if srvs.len() > 1 {
        let dead = srvs.len() - 1;
        let kill = || srvs[dead].kill();
        let f = sim.phase_failover(dead, kill, FAILOVER_LOAD, args.window)?;
        args.progress(&format!(
            "failover: {}/{} moved, max {:.0} ms, {} acknowledged files lost",
            f.moved, f.clients_of_dead, f.moved_max_ms, f.acked_files_lost
        ));
        report.failover = Some(f);
    }
    drop(sim);
    let mut exits = Vec::new();
    for srv in &mut srvs {
        report.server_output.extend(srv.output());
        exits.push(srv.stop());
    }
    report.server_exit = exits.join("; ");
    Ok(())
}

/// Phase 2 with `mix`: its figures, the servers' CPU (together), the generator's CPU
/// share and the kernel's drops during it.
fn measure_throughput(
    args: &Args,
    sim: &mut Sim,
    srvs: &[ServerProc],
    mix: Mix,
) -> anyhow::Result<(TputReport, ServerUse, f64, UdpCounters)> {
    let me = std::process::id();
    let k0 = UdpCounters::read();
    let servers_cpu = || -> f64 { srvs.iter().map(|s| procfs::cpu_seconds(s.pid())).sum() };
    let (cpu0, me0) = (servers_cpu(), procfs::cpu_seconds(me));
    let t0 = Instant::now();
    let t = sim.phase_throughput(Duration::from_secs(args.duration_secs), args.window, mix)?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = servers_cpu() - cpu0;
    let server = ServerUse {
        cpu_seconds: cpu,
        cpu_cores: cpu / wall.max(1e-9),
    };
    let cores = (procfs::cpu_seconds(me) - me0) / wall.max(1e-9);
    Ok((t, server, cores, UdpCounters::read().since(k0)))
}

/// Phase 4 against a fresh server, so its memory holds only this phase's clients.
fn run_memory(
    args: &Args,
    bin: &Path,
    db: String,
    sockets: usize,
    report: &mut Report,
) -> anyhow::Result<MemReport> {
    let mut srv = ServerProc::start(bin, &db, &args.server_args())?;
    args.progress(&format!(
        "memory: server pid {}, {} clients x {} files",
        srv.pid(),
        args.memory_clients,
        args.memory_files
    ));
    let baseline = procfs::vm_kib(srv.pid(), "VmHWM:").unwrap_or(0);
    let mut sim = Sim::new(&[srv.addr], args.memory_clients, sockets, "m-", srv.pin())?;
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
        sockets,
        load,
        baseline_rss_kib: baseline,
        peak_rss_kib: peak,
        rss_kib: rss,
        server_cpu_seconds: cpu,
        kernel_drops,
        server_exit: exit,
    })
}
