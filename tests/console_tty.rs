//! The console on a real terminal: runs `examples/console_demo.rs` inside tmux, types
//! with `send-keys` and reads the screen with `capture-pane`. Skipped (with a note) when
//! tmux is not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const NOTICE: &str = ">>> [Client table updated.]";

/// A private tmux server (own socket, no user config), killed when dropped, even if the
/// test fails half-way.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(tag: &str) -> Tmux {
        Tmux {
            socket: format!("fileapp-console-{tag}-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Starts `cmd` in a detached session named `name`.
    fn start(&self, name: &str, cmd: &str) {
        let out = self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "100",
            "-y",
            "30",
            cmd,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
    }

    fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", name];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    fn type_text(&self, name: &str, text: &str) {
        assert!(
            self.run(&["send-keys", "-t", name, "-l", text])
                .status
                .success()
        );
    }

    /// The whole pane, scroll-back included, trailing blanks trimmed off each line and
    /// empty lines at the end dropped.
    fn screen(&self, name: &str) -> Vec<String> {
        let out = self.run(&["capture-pane", "-p", "-t", name, "-S", "-", "-E", "-"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }

    /// Polls the screen until `ok` holds, for at most 10 s; the failure shows the screen.
    fn wait(&self, name: &str, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.screen(name);
            if ok(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; screen:\n{}", s.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn count(s: &[String], line: &str) -> usize {
    s.iter().filter(|l| *l == line).count()
}

fn last(s: &[String]) -> &str {
    s.last().map_or("", String::as_str)
}

/// Builds the demo (a no-op when fresh) next to this test binary and returns its path.
fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    // <target>/<profile>/deps/console_tty-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--example",
            "console_demo",
            "--target-dir",
        ])
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building console_demo failed");
    let bin = target_dir.join("debug/examples/console_demo");
    assert!(bin.exists(), "no {}", bin.display());
    bin
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn notices_history_and_completion_on_a_real_terminal() {
    if !tmux_available() {
        eprintln!("note: tmux not found; skipping the real-terminal console test");
        return;
    }
    let bin = demo_binary();
    let tmp = tempfile::tempdir().unwrap();
    let history = tmp.path().join("state/history.txt");
    let cmd = format!(
        "cd '{}' && NO_COLOR=1 exec '{}' --history '{}'",
        tmp.path().display(),
        bin.display(),
        history.display()
    );
    let tmux = Tmux::new("a");
    let s = "demo";
    tmux.start(s, &cmd);

    // The prompt is up and notices arrive above it.
    tmux.wait(s, "first notice and prompt", |l| {
        count(l, NOTICE) >= 1 && last(l) == ">>>"
    });

    // A notice that arrives while a line is half typed goes above the prompt and leaves
    // the typed text intact.
    tmux.type_text(s, "half-typed");
    let before = count(
        &tmux.wait(s, "typed text", |l| last(l) == ">>> half-typed"),
        NOTICE,
    );
    tmux.wait(s, "a notice above the half-typed line", |l| {
        let n = l.len();
        n >= 2
            && count(l, NOTICE) > before + 1
            && l[n - 1] == ">>> half-typed"
            && l[n - 2] == NOTICE
            // Nothing mixed into the notices or left behind by the redraws.
            && l[..n - 1].iter().all(|x| x == NOTICE || x.is_empty())
    });

    // Finishing the line gives the whole line to the driver.
    tmux.type_text(s, " rest");
    tmux.keys(s, &["Enter"]);
    tmux.wait(s, "echo of the full line", |l| {
        count(l, "got: half-typed rest") == 1 && last(l) == ">>>"
    });

    // Up recalls it.
    tmux.keys(s, &["Up"]);
    tmux.wait(s, "recalled line", |l| last(l) == ">>> half-typed rest");
    tmux.keys(s, &["Enter"]);
    tmux.wait(s, "second echo", |l| count(l, "got: half-typed rest") == 2);

    // Tab completes a command name (plus the space a finished word gets).
    tmux.type_text(s, "he");
    tmux.keys(s, &["Tab"]);
    tmux.wait(s, "completed command", |l| last(l) == ">>> help");
    tmux.keys(s, &["Enter"]);
    // (The screen is captured with trailing blanks trimmed, so "help " reads "help".)
    tmux.wait(s, "echo of the completed command", |l| {
        count(l, "got: help") == 1 && last(l) == ">>>"
    });

    // Ctrl-C at the prompt is an interrupt, and the prompt comes back.
    tmux.keys(s, &["C-c"]);
    tmux.wait(s, "interrupt", |l| {
        count(l, "got: <interrupt>") == 1 && last(l) == ">>>"
    });

    // Ctrl-D ends input.
    tmux.keys(s, &["C-d"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.run(&["has-session", "-t", s]).status.success() {
        assert!(Instant::now() < deadline, "demo did not exit on Ctrl-D");
        std::thread::sleep(Duration::from_millis(50));
    }

    // History survives the restart: a new run recalls the last line with Up.
    let saved = std::fs::read_to_string(&history).expect("history saved");
    assert!(saved.contains("half-typed rest"), "history file: {saved}");
    let s2 = "demo2";
    tmux.start(s2, &cmd);
    tmux.wait(s2, "prompt of the second run", |l| {
        last(l).starts_with(">>>")
    });
    tmux.keys(s2, &["Up"]);
    tmux.wait(s2, "recalled from the history file", |l| {
        last(l) == ">>> help"
    });
    tmux.keys(s2, &["C-u"]);
    tmux.type_text(s2, "quit");
    tmux.keys(s2, &["Enter"]);
}

#[test]
fn plain_mode_reads_a_script() {
    // No terminal needed: stdin is a pipe, so the console runs in plain mode.
    let bin = demo_binary();
    let mut child = Command::new(bin)
        .args(["--notice-ms", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"first\nsecond line\n\nlast").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "got: first\ngot: second line\ngot: \ngot: last\ngot: <eof>\n"
    );
}
