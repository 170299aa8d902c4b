//! The baselines, each an external tool run over the same files in the same run:
//! an rsync daemon pulled with `rsync -a rsync://…`, an unverified `tar | nc | tar`
//! stream, and `b3sum` over every file. A missing tool is reported, never faked.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Is `tool` on the PATH?
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something listens on 127.0.0.1:`port` (read from /proc, so that checking
/// does not use up a one-connection listener such as `nc -l`).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().any(|l| {
            l.split_whitespace().nth(1) == Some(&want) && l.split_whitespace().nth(3) == Some("0A")
        })
    })
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(port) {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An rsync daemon serving `src` as module `src`.
pub struct RsyncDaemon {
    child: Child,
    port: u16,
}

impl RsyncDaemon {
    pub fn start(work: &Path, src: &Path) -> RsyncDaemon {
        let conf = work.join("rsyncd.conf");
        std::fs::write(
            &conf,
            format!(
                "use chroot = false\npid file = {}\n[src]\npath = {}\nread only = true\n",
                work.join("rsyncd.pid").display(),
                src.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("rsync")
            .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--config={}", conf.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsync --daemon");
        wait_listening(port);
        RsyncDaemon { child, port }
    }

    /// `rsync -a rsync://127.0.0.1:P/src/ dest/`: its time.
    pub fn pull(&self, dest: &Path) -> Duration {
        let t0 = Instant::now();
        let ok = Command::new("rsync")
            .arg("-a")
            .arg(format!("rsync://127.0.0.1:{}/src/", self.port))
            .arg(format!("{}/", dest.display()))
            .status()
            .expect("run rsync");
        assert!(ok.success(), "rsync failed");
        t0.elapsed()
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tar -c src | nc` into `nc -l | tar -x -C dest`, over loopback: no hashing, no
/// encryption, no fsync. Its time from the sender's start to the receiver's end.
pub fn tar_nc(src: &Path, dest: &Path) -> Duration {
    let port = free_port();
    let mut rx = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "nc -l 127.0.0.1 {port} | tar -x -C '{}'",
            dest.display()
        ))
        .spawn()
        .expect("start the receiving tar");
    wait_listening(port);
    let t0 = Instant::now();
    let tx = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -c -C '{}' . | nc -N 127.0.0.1 {port}",
            src.display()
        ))
        .status()
        .expect("run the sending tar");
    assert!(tx.success(), "sending tar failed");
    assert!(rx.wait().unwrap().success(), "receiving tar failed");
    t0.elapsed()
}

/// `b3sum` over every file below `src` (`find | xargs b3sum`): its time.
pub fn b3sum(src: &Path) -> Duration {
    let t0 = Instant::now();
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . -type f -print0 | xargs -0 b3sum > /dev/null",
            src.display()
        ))
        .status()
        .expect("run b3sum");
    assert!(ok.success(), "b3sum failed");
    t0.elapsed()
}
