//! Real `fileapp` processes (a server and two clients per mode), driven through the
//! client's plain line-by-line mode, as users run them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A real `fileapp` process driven through its plain line-by-line mode.
pub struct Real {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Real {
    fn spawn(args: &[&str], cwd: &Path) -> Real {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fileapp"))
            .args(args)
            .current_dir(cwd)
            .env("XDG_CONFIG_HOME", cwd.join(".config"))
            .env("XDG_DATA_HOME", cwd.join(".data"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start fileapp");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        Real {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line containing `needle` (panics after 120 s).
    fn expect(&mut self, needle: &str) -> String {
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("no line containing {needle:?}"));
            if l.contains(needle) {
                return l;
            }
        }
    }

    pub fn hwm(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .map(|l| l["VmHWM:".len()..].trim().to_string())
            })
            .unwrap_or_else(|| "?".into())
    }
}

impl Drop for Real {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server and two real clients: B offers the file, C downloads it.
pub struct RealPair {
    _server: Real,
    pub b: Real,
    pub c: Real,
    dest: PathBuf,
}

impl RealPair {
    pub fn start(work: &Path, share: &Path, name: &str, plaintext: bool) -> RealPair {
        let tag = if plaintext { "plain" } else { "tls" };
        let root = work.join(format!("real-{tag}"));
        let dest = root.join("down");
        std::fs::create_dir_all(&dest).unwrap();
        let mut server = Real::spawn(
            &[
                "server",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--db",
                ":memory:",
            ],
            &root,
        );
        let port_line = server.expect("Listening on UDP port");
        let port = port_line.split_whitespace().nth(4).unwrap().to_string();
        let addr = format!("127.0.0.1:{port}");
        let mut extra = vec![];
        if plaintext {
            extra.push("--plaintext");
        }
        let mut args_b = vec!["client", "--name", "B", "--server", &addr];
        args_b.extend(&extra);
        let mut b = Real::spawn(&args_b, &root);
        b.expect("[Welcome, You are registered.]");
        b.send(&format!("setdir {}", share.display()));
        b.expect("Successfully set");
        b.send(&format!("offer {name}"));
        b.expect("[Offer Message Received By Server]");
        let mut args_c = vec!["client", "--name", "C", "--server", &addr];
        args_c.extend(&extra);
        let mut c = Real::spawn(&args_c, &dest);
        c.expect("[Welcome, You are registered.]");
        RealPair {
            _server: server,
            b,
            c,
            dest,
        }
    }

    /// One download: (time from typing `request` to the first byte, transfer time as the
    /// client reports it).
    pub fn run(&mut self, name: &str) -> (Duration, Duration) {
        let t0 = Instant::now();
        self.c.send(&format!("request --force {name} B"));
        self.c.expect(&format!("< Downloading {name}... >"));
        let first = t0.elapsed();
        let stats = self.c.expect(&format!("< {name}: "));
        self.c.expect(" downloaded successfully! >");
        // "< NAME: SIZE bytes, BLAKE3 HASH, SECS s, RATE >"
        let secs: f64 = stats
            .split(", ")
            .find(|p| p.ends_with(" s"))
            .and_then(|p| p.trim_end_matches(" s").parse().ok())
            .expect("seconds in the stats line");
        let _ = std::fs::remove_file(self.dest.join(name));
        (first, Duration::from_secs_f64(secs))
    }
}
