//! What the lab asks of the system: `ip` and `nft` commands, and running code on a
//! thread inside a network namespace (the one `unsafe` call of the lab).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

/// Runs `f` on a new thread that has entered the network namespace `ns` (a name under
/// `/var/run/netns`) and returns what `f` returns; a panic in `f` is this call's.
///
/// A socket belongs to the namespace it was created in, wherever it is used later, so
/// `in_netns(ns, || UdpSocket::bind(..))` hands back a socket of `ns` to any thread. A
/// process spawned from `f` starts in `ns` too.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Moves the calling thread (only it: a network namespace is per thread) into `ns`.
/// Only [`in_netns`] calls it, on a thread of its own that ends with the work.
fn enter_netns(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) reads no memory of ours; `file` is an open descriptor of a
    // network namespace for the whole call, and CLONE_NEWNET changes only this thread's
    // network namespace (allowed in a multi-threaded process, unlike mount or user
    // namespaces). Nothing on this thread relies on the namespace it had.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        panic!("setns {path}: {}", std::io::Error::last_os_error());
    }
}

/// Sets each sysctl `(key, value)` (key as under `/proc/sys`: `net/ipv4/ip_forward`) in
/// namespace `ns`: the `/proc/sys/net` files are those of the opening thread's namespace.
pub fn sysctls(ns: &str, settings: &[(&str, &str)]) {
    in_netns(ns, || {
        for (key, value) in settings {
            let path = format!("/proc/sys/{key}");
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("{ns}: write {path}: {e}"));
        }
    });
}

/// Runs `ip [-n ns] -batch -` with `lines` (one `ip` command each) on its input.
pub fn ip_batch(ns: Option<&str>, lines: &[String]) {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-batch", "-"]);
    feed(cmd, &lines.join("\n"), &format!("ip -n {ns:?} -batch"));
}

/// Loads the nftables `ruleset` in namespace `ns`.
pub fn nft(ns: &str, ruleset: &str) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "nft", "-f", "-"]);
    feed(cmd, ruleset, &format!("nft in {ns}"));
}

/// Runs `cmd` with `input` on its standard input; panics with its output if it fails.
fn feed(mut cmd: Command, input: &str, what: &str) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{input}\n--- stderr ---\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// `ip netns del` of every name in one `ip` process; errors are ignored (a namespace
/// already gone is fine while tearing down).
pub fn del_netns(names: &[String]) {
    if names.is_empty() {
        return;
    }
    let lines: Vec<String> = names.iter().map(|n| format!("netns del {n}")).collect();
    let child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(lines.join("\n").as_bytes());
        }
        let _ = child.wait();
    }
}

/// The namespaces under `/var/run/netns`.
pub fn netns_names() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}
