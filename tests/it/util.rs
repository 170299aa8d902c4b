//! Small helpers to run the real `fileapp` binary and read what it prints.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

mod netns;
pub use netns::NetnsServer;

/// How long any single expected line may take to appear.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fileapp"))
}

/// A running `fileapp` process with its output collected line by line.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Everything read so far, for failure messages.
    pub transcript: Vec<String>,
    /// Index in `transcript` of the first line not yet consumed by `expect`.
    cursor: usize,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], cwd: &Path) -> Proc {
        Proc::spawn_cmd(name, Command::new(bin()), args, cwd)
    }

    /// [`Proc::spawn`] inside the network namespace `netns` (`ip netns exec`, which
    /// execs the binary: the child is `fileapp` itself, so signals reach it).
    pub fn spawn_in(netns: &str, name: &str, args: &[&str], cwd: &Path) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]).arg(bin());
        Proc::spawn_cmd(name, cmd, args, cwd)
    }

    fn spawn_cmd(name: &str, mut cmd: Command, args: &[&str], cwd: &Path) -> Proc {
        let mut child = cmd
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            // Like one user on one machine: keys and history in the test's folder.
            .env("XDG_CONFIG_HOME", cwd.join(".xdg-config"))
            .env("XDG_DATA_HOME", cwd.join(".xdg-data"))
            .spawn()
            .expect("spawn fileapp");
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("[stderr] {l}"));
            }
        });
        Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
            transcript: Vec::new(),
            cursor: 0,
        }
    }

    /// Types one command.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to client");
        stdin.flush().unwrap();
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn pull(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => {
                self.transcript.push(l);
                true
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{}: {what}\n--- transcript of {} ---\n{}\n---",
            self.name,
            self.name,
            self.transcript.join("\n")
        );
    }

    /// Waits for the next line (after the last one consumed) that contains `needle`;
    /// returns it. Lines before it are consumed too.
    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_within(needle, WAIT)
    }

    pub fn expect_within(&mut self, needle: &str, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            while self.cursor < self.transcript.len() {
                let l = self.transcript[self.cursor].clone();
                self.cursor += 1;
                if l.contains(needle) {
                    return l;
                }
            }
            if !self.pull(deadline) {
                self.fail(&format!("no line containing {needle:?} within {wait:?}"));
            }
        }
    }

    /// Waits for the next line containing any of `needles`; returns (which, line).
    pub fn expect_any(&mut self, needles: &[&str], wait: Duration) -> (usize, String) {
        let deadline = Instant::now() + wait;
        loop {
            while self.cursor < self.transcript.len() {
                let l = self.transcript[self.cursor].clone();
                self.cursor += 1;
                if let Some(i) = needles.iter().position(|n| l.contains(n)) {
                    return (i, l);
                }
            }
            if !self.pull(deadline) {
                self.fail(&format!("none of {needles:?} within {wait:?}"));
            }
        }
    }

    /// The table as `list --json` prints it, as (file, owner) pairs.
    pub fn list_json(&mut self) -> Vec<(String, String)> {
        self.send("list --json");
        let line = loop {
            let l = self.expect("[");
            if l.starts_with('[') {
                break l;
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("list --json is JSON");
        v.as_array()
            .expect("an array")
            .iter()
            .map(|r| {
                (
                    r["file"].as_str().unwrap().to_string(),
                    r["owner"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Waits for a line equal to `line`.
    pub fn expect_line(&mut self, line: &str) {
        let got = self.expect(line);
        if got != line {
            self.fail(&format!("expected exactly {line:?}, got {got:?}"));
        }
    }

    /// Lines that arrive within `wait` (consumed).
    pub fn lines_for(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        while self.pull(deadline) {}
        let out = self.transcript[self.cursor..].to_vec();
        self.cursor = self.transcript.len();
        out
    }

    /// Asserts no line containing `needle` arrives within `wait`. (A guess from
    /// silence: prefer waiting for an answer that must come after the line.)
    #[allow(dead_code)]
    pub fn expect_none(&mut self, needle: &str, wait: Duration) {
        let lines = self.lines_for(wait);
        if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
            self.fail(&format!("unexpected line {l:?}"));
        }
    }

    /// Sends `list` and returns the rows printed (header excluded), or empty.
    pub fn list(&mut self) -> Vec<String> {
        self.list_args("")
    }

    /// `list` until it shows `n` rows (a table update the client printed may be an
    /// earlier change's, so the one awaited can still be on its way), within [`WAIT`].
    pub fn list_until(&mut self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let rows = self.list();
            if rows.len() == n || Instant::now() >= deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `list <args>` and returns the rows printed (header excluded), or empty.
    ///
    /// The end of the output is known from the output itself, not from a silence:
    /// `whoami` is sent right after, and commands answer in order, so the list ends
    /// where whoami's line starts. Notices printed meanwhile (lines starting with `>>>`
    /// or `<`) are not rows; they are moved after the list in the transcript and left
    /// unconsumed, for later `expect`s.
    pub fn list_args(&mut self, args: &str) -> Vec<String> {
        let start = self.cursor;
        self.send(format!("list {args}").trim_end());
        self.send("whoami");
        let marker = self.expect(&format!(">>> [You are {} (", self.name));
        let end = self.cursor - 1; // index of the marker
        let out: Vec<String> = self.transcript[start..end].to_vec();
        let mut rows = Vec::new();
        let mut notices = Vec::new();
        let (mut header, mut empty) = (0, 0);
        for l in out {
            if l.starts_with("FILENAME") {
                header += 1;
            } else if l == ">>> [No files available for download at the moment.]" {
                empty += 1;
            } else if l.starts_with(">>>") || l.starts_with('<') || l.starts_with("[stderr]") {
                notices.push(l);
            } else if header == 1 {
                rows.push(l);
            } else {
                notices.push(l);
            }
        }
        if header + empty != 1 {
            self.fail(&format!(
                "list {args}: expected one header or the empty-table line before {marker:?}"
            ));
        }
        // Rewrite [start..=end] as: the list's own lines, the marker, then the notices;
        // the cursor points at the first notice.
        let mut own: Vec<String> = Vec::new();
        if header == 1 {
            let h = self.transcript[start..end]
                .iter()
                .find(|l| l.starts_with("FILENAME"))
                .unwrap()
                .clone();
            own.push(h);
            own.extend(rows.iter().cloned());
        } else {
            own.push(">>> [No files available for download at the moment.]".into());
        }
        own.push(marker);
        let n_own = own.len();
        own.extend(notices);
        self.transcript.splice(start..=end, own);
        self.cursor = start + n_own;
        rows
    }

    /// The table as `list --json` prints it, every field of every row.
    pub fn list_json_rows(&mut self) -> Vec<serde_json::Value> {
        self.send("list --json");
        let line = loop {
            let l = self.expect("[");
            if l.starts_with('[') {
                break l;
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("list --json is JSON");
        v.as_array().expect("an array").clone()
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, wait: Duration) -> i32 {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Drain remaining output for the transcript.
                while self.pull(Instant::now() + Duration::from_millis(50)) {}
                return st.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                self.fail("did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) touches no memory of ours. The pid is our child's, and we hold
        // its `Child` (not yet waited for), so it cannot name another process.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on 127.0.0.1 and an OS-chosen port, with its own database in `dir`.
pub struct Server {
    pub proc: Proc,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_in(dir, 0, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, port: u16, extra: &[&str]) -> Server {
        let (proc, port) = spawn_server("127.0.0.1", dir.path(), port, extra);
        Server { proc, port, dir }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts a client named `name` in folder `cwd`; waits for its welcome and first table.
    pub fn client(&self, name: &str, cwd: &Path) -> Proc {
        registered(self.client_raw(name, cwd, &[]))
    }

    /// A client sharing `files` (name, content) from `<cwd>/s`, offered and acknowledged.
    pub fn sharing(&self, name: &str, cwd: &Path, files: &[(&str, &[u8])]) -> Proc {
        offering(cwd, files, |cwd| self.client(name, cwd))
    }

    /// Kills the server with SIGKILL and starts it again on the same port and folder
    /// (same database) with `extra` options.
    pub fn crash_and_restart(self, extra: &[&str]) -> Server {
        let Server {
            mut proc,
            dir,
            port,
        } = self;
        proc.kill9();
        Server::start_in(dir, port, extra)
    }

    pub fn client_raw(&self, name: &str, cwd: &Path, extra: &[&str]) -> Proc {
        let addr = self.addr();
        Proc::spawn(name, &client_args(name, &addr, extra), cwd)
    }
}

fn client_args<'a>(name: &'a str, server: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["client", "--name", name, "--server", server];
    args.extend_from_slice(extra);
    args
}

/// Waits for a new client's welcome and first table.
fn registered(mut c: Proc) -> Proc {
    c.expect_line(">>> [Welcome, You are registered.]");
    // The initial snapshot (it holds at least our own registration).
    c.expect_line(">>> [Client table updated.]");
    c
}

/// Writes `files` into `<cwd>/s`, starts a client with `start`, and offers them.
fn offering(cwd: &Path, files: &[(&str, &[u8])], start: impl FnOnce(&Path) -> Proc) -> Proc {
    std::fs::create_dir_all(cwd.join("s")).unwrap();
    for (f, data) in files {
        std::fs::write(cwd.join("s").join(f), data).unwrap();
    }
    let mut p = start(cwd);
    p.send("setdir s");
    p.expect("Successfully set");
    let names: Vec<&str> = files.iter().map(|f| f.0).collect();
    p.send(&format!("offer {}", names.join(" ")));
    p.expect_line(">>> [Offer Message Received By Server]");
    p
}

/// Starts `fileapp server --bind <bind> --port <port>` in `dir`; returns it and the port
/// it listens on (read from its start-up line).
pub fn spawn_server(bind: &str, dir: &Path, port: u16, extra: &[&str]) -> (Proc, u16) {
    spawn_server_in(None, bind, dir, port, extra)
}

/// [`spawn_server`] in the network namespace `netns` (`None`: the test's own).
fn spawn_server_in(
    netns: Option<&str>,
    bind: &str,
    dir: &Path,
    port: u16,
    extra: &[&str],
) -> (Proc, u16) {
    let port_s = port.to_string();
    let mut args = vec!["server", "--bind", bind, "--port", &port_s];
    args.extend_from_slice(extra);
    let mut proc = match netns {
        None => Proc::spawn("server", &args, dir),
        Some(ns) => Proc::spawn_in(ns, "server", &args, dir),
    };
    proc.expect("Server host name:");
    let l = proc.expect("Listening on UDP port");
    let port = l
        .split_whitespace()
        .nth(4)
        .and_then(|p| p.parse().ok())
        .expect("port in start-up line");
    (proc, port)
}

/// Whether `tool` can be run (`tool -V` succeeds). When it cannot: under `CI=true` the
/// calling test fails (nothing passes by skipping in CI); elsewhere it prints that the
/// test is skipped and returns false.
pub fn tool_available(tool: &str, test: &str) -> bool {
    let ok = Command::new(tool)
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        cannot_run(
            test,
            &format!("{tool} not found"),
            &format!("install {tool} (.ci/run does)"),
        );
    }
    ok
}

/// `test` cannot run because of `why`: under `CI=true` it fails with `fix`; elsewhere
/// it says it is skipped (the caller then returns).
pub fn cannot_run(test: &str, why: &str, fix: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}, and CI=true: {fix}");
    }
    eprintln!("note: {why}, so {test} did not run (with CI=true this fails)");
}

/// A free port number >= 1024 (bound then released; good enough for a test).
pub fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = std::net::TcpListener::bind(("127.0.0.1", s.local_addr().unwrap().port()));
    let p = s.local_addr().unwrap().port();
    drop(t);
    p
}

/// Random bytes from a seed (no OS randomness needed; reproducible).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
