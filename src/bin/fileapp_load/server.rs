//! The real server binary as a child process: started with raised limits, its UDP port
//! read from its stdout, killed when dropped (also on early return).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct ServerProc {
    child: Child,
    pub addr: SocketAddr,
    /// The channel key's fingerprint the server printed ("Server key: ..."), for the
    /// clients to pin.
    pub key: Option<String>,
    /// Lines the server printed (start-up lines, and errors if it dies).
    lines: mpsc::Receiver<String>,
}

/// The `fileapp` binary next to ours (built by the same `cargo build`).
pub fn default_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot locate this executable")?;
    Ok(me.with_file_name("fileapp"))
}

impl ServerProc {
    /// Starts `bin server --bind 127.0.0.1 --port 0 --db <db> ...extra` and waits for its
    /// "Listening on UDP port" line (10 s at most), noting the key it printed before.
    pub fn start(bin: &Path, db: &str, extra: &[String]) -> anyhow::Result<ServerProc> {
        if !bin.is_file() {
            bail!(
                "server binary {} not found: build it first with `cargo build --release` \
                 (or pass --server-bin PATH)",
                bin.display()
            );
        }
        let mut child = Command::new(bin)
            .args(["server", "--bind", "127.0.0.1", "--port", "0", "--db", db])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        // Drains stdout for the server's whole life so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("server did not report its port within 10 s; it printed {seen:?}");
                }
            };
            if let Some(rest) = line.strip_prefix("Listening on UDP port ") {
                let port: u16 = rest
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .with_context(|| format!("unparsable port line {line:?}"))?;
                let key = seen
                    .iter()
                    .find_map(|l: &String| l.strip_prefix("Server key: "))
                    .map(|k| k.trim().to_string());
                return Ok(ServerProc {
                    child,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    key,
                    lines: rx,
                });
            }
            seen.push(line);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Anything the server printed since start-up (e.g. "[Server stopped: ...]").
    pub fn output(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// SIGTERM, then SIGKILL after 2 s. Returns the exit status text.
    pub fn stop(&mut self) -> String {
        if let Ok(Some(st)) = self.child.try_wait() {
            return format!("had already exited: {st}");
        }
        // If the signal cannot be sent, the SIGKILL below still stops the child.
        let _ = super::sys::terminate(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return format!("stopped: {st}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(st) => format!("killed after 2 s: {st}"),
            Err(e) => format!("cannot reap: {e}"),
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl ServerProc {
    /// SIGKILL, as `kill -9`: no goodbye, no last commit.
    pub fn kill(&self) -> anyhow::Result<()> {
        super::sys::kill_hard(self.pid())
    }

    /// The pin for the server's key, if it printed one.
    pub fn pin(&self) -> Option<fileapp::channel::ServerPin> {
        self.key
            .as_deref()
            .and_then(fileapp::channel::ServerPin::parse)
    }
}
