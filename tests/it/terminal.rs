//! The real client on a real terminal: tmux runs `fileapp client`, `send-keys` types and
//! `capture-pane` reads the screen. Where tmux is missing it fails under `CI=true` and
//! is skipped with a note otherwise.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::proxy::Proxy;
use crate::util::{Server, bin, random_bytes, tool_available};

const NOTICE: &str = ">>> [Client table updated.]";

/// A private tmux server (own socket, no user config), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(tag: &str) -> Tmux {
        Tmux {
            socket: format!("fileapp-it-{tag}-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn start(&self, name: &str, cmd: &str) {
        let out = self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "120",
            "-y",
            "40",
            cmd,
            // A client that exits leaves its last screen, for the failure message.
            ";",
            "set-option",
            "-t",
            name,
            "remain-on-exit",
            "on",
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

    /// Whether the client in the pane has exited (the pane stays, see `start`).
    fn exited(&self, name: &str) -> bool {
        let out = self.run(&["display-message", "-p", "-t", name, "#{pane_dead}"]);
        !out.status.success() || String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// The pane with scroll-back, trailing blanks trimmed, empty lines at the end dropped.
    fn screen(&self, name: &str) -> Vec<String> {
        let out = self.run(&["capture-pane", "-p", "-t", name, "-S", "-", "-E", "-"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }

    fn wait(&self, name: &str, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
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

fn count(s: &[String], pred: impl Fn(&str) -> bool) -> usize {
    s.iter().filter(|l| pred(l)).count()
}

fn last(s: &[String]) -> &str {
    s.last().map_or("", String::as_str)
}

#[test]
fn prompt_notices_history_completion_and_download_on_a_terminal() {
    if !tool_available("tmux", "the real-terminal test") {
        return;
    }
    let srv = Server::start(&["--db", ":memory:"]);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("share")).unwrap();
    std::fs::write(tmp.path().join("share/alpha.txt"), b"alpha").unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir(other.path().join("pub")).unwrap();
    std::fs::write(other.path().join("pub/remote.bin"), vec![7u8; 300_000]).unwrap();
    let cmd = format!(
        "cd '{dir}' && HOME='{dir}' XDG_DATA_HOME='{dir}/data' NO_COLOR=1 exec '{bin}' client --name T --server {addr}",
        dir = tmp.path().display(),
        bin = bin().display(),
        addr = srv.addr(),
    );
    let tmux = Tmux::new("term");
    let s = "t";
    tmux.start(s, &cmd);
    tmux.wait(s, "welcome and prompt", |l| {
        l.iter().any(|x| x == ">>> [Welcome, You are registered.]") && last(l) == ">>>"
    });

    // Half a command typed; another client registers: the notice goes above the prompt
    // and the half-typed line stays intact.
    tmux.type_text(s, "lis");
    tmux.wait(s, "typed text", |l| last(l) == ">>> lis");
    let before = count(&tmux.screen(s), |x| x == NOTICE);
    // U is reached through a proxy (it advertises ::1, where the proxy listens), so the
    // test can hold its data mid-download below.
    let mut u = srv.client_raw("U", other.path(), &["--advertise-ip", "::1"]);
    u.expect_line(">>> [Welcome, You are registered.]");
    let screen = tmux.wait(s, "notice above the half-typed line", |l| {
        let n = l.len();
        count(l, |x| x == NOTICE) > before && l[n - 1] == ">>> lis" && l[n - 2] == NOTICE
    });
    assert!(
        !screen
            .iter()
            .any(|x| x.contains(">>> >>>") || x.contains("lis>>>")),
        "garbled:\n{}",
        screen.join("\n")
    );
    tmux.type_text(s, "t");
    tmux.keys(s, &["Enter"]);
    tmux.wait(s, "list output", |l| {
        l.iter()
            .any(|x| x == ">>> [No files available for download at the moment.]")
            && last(l) == ">>>"
    });

    // History: Up recalls the last command.
    tmux.keys(s, &["Up"]);
    tmux.wait(s, "recalled line", |l| last(l) == ">>> list");
    tmux.keys(s, &["C-u"]);

    // Completion of a command name, a folder, and an offered file.
    tmux.type_text(s, "set");
    tmux.keys(s, &["Tab"]);
    tmux.wait(s, "completed command", |l| last(l) == ">>> setdir");
    tmux.type_text(s, "sh");
    tmux.keys(s, &["Tab"]);
    tmux.wait(s, "completed folder", |l| last(l) == ">>> setdir share/");
    tmux.keys(s, &["Enter"]);
    tmux.wait(s, "setdir done", |l| {
        l.iter()
            .any(|x| x.contains("as the directory for searching offered files.]"))
            && last(l) == ">>>"
    });
    tmux.type_text(s, "offer al");
    tmux.keys(s, &["Tab"]);
    tmux.wait(s, "completed file", |l| last(l) == ">>> offer alpha.txt");
    tmux.keys(s, &["Enter"]);
    tmux.wait(s, "offer acknowledged", |l| {
        l.iter()
            .any(|x| x == ">>> [Offer Message Received By Server]")
            && last(l) == ">>>"
    });

    // Completion from the table: file name, then its owner; then the download runs.
    u.send("setdir pub");
    u.expect("Successfully set");
    u.send("offer remote.bin");
    u.expect_line(">>> [Offer Message Received By Server]");
    let u_port = u
        .list_json_rows()
        .iter()
        .find(|r| r["owner"] == "U")
        .and_then(|r| r["tcp_port"].as_u64())
        .expect("U's row in its own table") as u16;
    let proxy = Proxy::start(
        format!("[::1]:{u_port}").parse().unwrap(),
        format!("127.0.0.1:{u_port}").parse().unwrap(),
    );
    tmux.wait(s, "U's offer arrived", |l| {
        count(l, |x| x == NOTICE) >= before + 3
    });
    tmux.type_text(s, "request rem");
    tmux.keys(s, &["Tab"]);
    tmux.wait(s, "completed table file", |l| {
        last(l) == ">>> request remote.bin"
    });
    tmux.keys(s, &["Tab"]);
    tmux.wait(s, "completed owner", |l| {
        last(l) == ">>> request remote.bin U"
    });
    tmux.keys(s, &["Enter"]);
    tmux.wait(s, "download finished", |l| {
        l.iter()
            .any(|x| x == "< remote.bin downloaded successfully! >")
            && last(l) == ">>>"
    });
    assert_eq!(
        std::fs::read(tmp.path().join("remote.bin")).unwrap(),
        vec![7u8; 300_000]
    );

    // Completion inside an offered folder: the first Tab asks U for the folder's listing
    // in the background (the line stays as it is), a later one completes from it.
    std::fs::create_dir_all(other.path().join("pub/tree")).unwrap();
    std::fs::write(other.path().join("pub/tree/inner.txt"), b"inner").unwrap();
    u.send("offer tree");
    u.expect_line(">>> [Offer Message Received By Server]");
    tmux.wait(s, "U's folder arrived", |l| {
        count(l, |x| x == NOTICE) >= before + 4
    });
    tmux.type_text(s, "request tree/");
    tmux.wait(s, "typed folder", |l| last(l) == ">>> request tree/");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tmux.keys(s, &["Tab"]);
        std::thread::sleep(Duration::from_millis(100));
        let screen = tmux.screen(s);
        if last(&screen).starts_with(">>> request tree/inner.txt") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no path inside the folder; screen:\n{}",
            screen.join("\n")
        );
    }
    if last(&tmux.screen(s)) == ">>> request tree/inner.txt" {
        tmux.keys(s, &["Tab"]);
    }
    tmux.wait(s, "completed the folder's owner", |l| {
        last(l) == ">>> request tree/inner.txt U"
    });
    tmux.keys(s, &["Enter"]);
    let got = tmp.path().join("inner.txt");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::read(&got).ok().as_deref() != Some(&b"inner"[..]) {
        assert!(Instant::now() < deadline, "tree/inner.txt not downloaded");
        std::thread::sleep(Duration::from_millis(20));
    }
    tmux.wait(s, "prompt after the folder file", |l| last(l) == ">>>");

    // Ctrl-C during a download cancels that download, not the client, and keeps the
    // partial for resuming. The proxy holds U's data after 4 MiB (the requester writes
    // whole 1 MiB buffers, so some reach the disk), so the download is surely running,
    // and stays so, when Ctrl-C comes, whatever the machine's speed.
    const SLOW: usize = 16 << 20;
    let slow = random_bytes(SLOW, 5);
    std::fs::write(other.path().join("pub/slow.bin"), &slow).unwrap();
    u.send("offer slow.bin");
    u.expect_line(">>> [Offer Message Received By Server]");
    tmux.wait(s, "U's second offer arrived", |l| {
        count(l, |x| x == NOTICE) >= before + 5
    });
    proxy.pause_after(4 << 20);
    tmux.type_text(s, "request slow.bin U");
    tmux.keys(s, &["Enter"]);
    tmux.wait(s, "download started", |l| {
        l.iter().any(|x| x == "< Downloading slow.bin... >")
    });
    let partial = tmp.path().join(".slow.bin.fileapp-partial");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) == 0 {
        assert!(
            Instant::now() < deadline,
            "no byte of slow.bin on disk; screen:\n{}",
            tmux.screen(s).join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tmux.keys(s, &["C-c"]);
    tmux.wait(s, "download cancelled, prompt back", |l| {
        l.iter()
            .any(|x| x.starts_with("< Download of slow.bin from U failed:") && x.contains("cancel"))
            && last(l) == ">>>"
    });
    assert!(!tmp.path().join("slow.bin").exists());
    let kept = std::fs::metadata(&partial).expect("partial kept").len();
    assert!(kept > 0 && kept < SLOW as u64, "partial of {kept} bytes");
    tmux.type_text(s, "whoami");
    tmux.keys(s, &["Enter"]);
    tmux.wait(s, "still running", |l| {
        l.iter().any(|x| x.starts_with(">>> [You are T (online)"))
    });
    // The partial kept by Ctrl-C is a real prefix: requesting again in the same client
    // resumes from it and completes byte-identical (the cancel of the last download is
    // not carried over to this one).
    proxy.release();
    tmux.type_text(s, "request slow.bin U");
    tmux.keys(s, &["Enter"]);
    let lines = tmux.wait(s, "resumed download finished", |l| {
        l.iter()
            .any(|x| x == "< slow.bin downloaded successfully! >")
            && last(l) == ">>>"
    });
    let resumed = lines
        .iter()
        .find(|x| x.starts_with("< Resuming slow.bin from byte "))
        .unwrap_or_else(|| panic!("no resume line: {lines:?}"));
    assert!(!resumed.contains("from byte 0 "), "{resumed}");
    assert!(std::fs::read(tmp.path().join("slow.bin")).unwrap() == slow);
    assert!(!partial.exists());
    // Ctrl-D leaves; the history file keeps what was typed.
    tmux.keys(s, &["C-d"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tmux.exited(s) {
        assert!(Instant::now() < deadline, "client did not exit on Ctrl-D");
        std::thread::sleep(Duration::from_millis(50));
    }
    let history = std::fs::read_to_string(tmp.path().join("data/fileapp/history.txt"))
        .expect("history saved in the data folder");
    assert!(history.contains("offer alpha.txt"), "{history}");
}
