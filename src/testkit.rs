//! Test support shared by the unit tests and `tests/it`: a throwaway PostgreSQL cluster.
//!
//! [`pg_cluster`] starts one cluster per test process (initdb and postgres from Debian's
//! packages, in a temporary folder, on a free loopback port, trust authentication) and
//! [`pg_database`] gives each test its own empty database in it. As root the cluster runs
//! as the `postgres` user (or `nobody`), which owns the folder: postgres refuses root. A
//! watchdog shell stops the server and removes the folder once the test process is gone,
//! so nothing outlives the run.
//!
//! Without PostgreSQL the tests that need it are skipped with a line saying so; under
//! `CI=true` they fail instead (nothing passes by skipping).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running cluster: where to reach it.
#[derive(Debug)]
pub struct PgCluster {
    pub port: u16,
    pub dir: PathBuf,
}

/// The folder holding `initdb`, `postgres` and `pg_ctl`, if PostgreSQL is installed.
pub fn pg_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FILEAPP_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("postgres").is_file() && p.join("initdb").is_file())
        .collect();
    found.sort(); // the newest major version last
    found.pop()
}

/// Is this run under CI, where a missing tool must fail the test?
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();

/// The process's cluster, started on first use. `None` (after printing why) when
/// PostgreSQL is missing and not under CI; under CI that panics.
pub fn pg_cluster() -> Option<&'static PgCluster> {
    match CLUSTER.get_or_init(start_cluster) {
        Ok(c) => Some(c),
        Err(why) if under_ci() => panic!("PostgreSQL is needed under CI=true: {why}"),
        Err(why) => {
            eprintln!(
                "note: PostgreSQL is not available ({why}); its tests did not run (with CI=true they fail)"
            );
            None
        }
    }
}

/// A new, empty database in the process's cluster, as a connection string.
pub fn pg_database() -> Option<String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let c = pg_cluster()?;
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let bin = pg_bin_dir()?;
    let psql = bin.join("psql");
    let psql = if psql.is_file() {
        psql
    } else {
        PathBuf::from("psql")
    };
    let out = Command::new(psql)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &c.port.to_string(),
            "-U",
            "fileapp",
        ])
        .args([
            "-d",
            "postgres",
            "-q",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "CREATE DATABASE: {out:?}");
    Some(format!("postgres://fileapp@127.0.0.1:{}/{name}", c.port))
}

/// `url` (from [`pg_database`]) through the cluster's Unix socket instead of TCP on
/// 127.0.0.1: the form a process in another network namespace (the NAT lab's) reaches
/// it by, since the namespaces share the file system but not the loopback.
pub fn pg_unix_url(url: &str) -> Option<String> {
    let c = pg_cluster()?;
    let dir = c.dir.display().to_string().replace('/', "%2F");
    Some(url.replacen("@127.0.0.1:", &format!("@{dir}:"), 1))
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// As root: the unprivileged user the cluster runs as, with its uid and gid.
fn run_as() -> Option<(String, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
        return None;
    }
    for user in ["postgres", "nobody"] {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, user]).output().ok()?;
            String::from_utf8(out.stdout).ok()?.trim().parse().ok()
        };
        if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
            return Some((user.to_string(), uid, gid));
        }
    }
    None
}

fn command(user: &Option<(String, u32, u32)>, program: &Path) -> Command {
    match user {
        Some((name, _, _)) => {
            let mut c = Command::new("runuser");
            c.args(["-u", name, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn start_cluster() -> Result<PgCluster, String> {
    let bin = pg_bin_dir().ok_or("no /usr/lib/postgresql/*/bin (apt-get install postgresql)")?;
    let user = run_as();
    let dir = std::env::temp_dir().join(format!("fileapp-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some((_, uid, gid)) = &user {
        std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)).map_err(|e| e.to_string())?;
    }
    let data = dir.join("data");
    let out = command(&user, &bin.join("initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "fileapp",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .arg("-D")
        .arg(&data)
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = free_port()?;
    // The watchdog: postgres runs as its child and is stopped (fast shutdown) when the
    // test process is gone; then the folder goes too.
    let script = format!(
        "\"$0\" -D \"$1\" -p {port} -k \"$2\" -c listen_addresses=127.0.0.1 -c fsync=off \
         -c max_connections=200 -c shared_buffers=32MB >\"$2/log\" 2>&1 & pg=$!; \
         while [ -d /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 0.3; done; \
         kill -INT $pg 2>/dev/null; wait $pg; rm -rf \"$2\"",
        parent = std::process::id()
    );
    let mut sh = command(&user, Path::new("/bin/sh"));
    sh.arg("-c")
        .arg(script)
        .arg(bin.join("postgres"))
        .arg(&data)
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    sh.spawn().map_err(|e| format!("start postgres: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Accepting connections; wait until it answers as a database too.
            let ok = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok(PgCluster { port, dir });
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    Err(format!("postgres did not start within 30 s: {log}"))
}
