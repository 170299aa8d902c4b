//! Command-line validation: seed messages, exit codes, nothing sent.

use std::time::Duration;

use crate::util::{Proc, free_port};

fn run(args: &[&str]) -> (i32, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proc::spawn("cli", args, dir.path());
    p.close_stdin();
    let code = p.wait_exit(Duration::from_secs(10));
    (code, p.transcript.clone())
}

#[test]
fn invalid_ports_and_addresses_print_the_seed_messages() {
    let cases: &[(&[&str], &str)] = &[
        (&["-s", "1000"], "[Invalid server port]"),
        (&["-s", "65536"], "[Invalid server port]"),
        (&["-s", "abc"], "[Invalid server port]"),
        (
            &["-c", "C", "127.0.0.1", "12000", "1302", "66000"],
            "[Invalid client TCP port]",
        ),
        (
            &["-c", "C", "127.0.0.1", "12000", "80", "1402"],
            "[Invalid client UDP port]",
        ),
        (
            &["-c", "C", "127.0.0.1", "1", "1302", "1402"],
            "[Invalid server port]",
        ),
        // Malformed addresses that fail without a DNS query ("999.0.0.1" would be
        // looked up as a host name, sending a query off this machine).
        (
            &["-c", "C", "999..0.1", "12000", "1302", "1402"],
            "[Invalid server IP address]",
        ),
        (
            &["-c", "C", "::g", "12000", "1302", "1402"],
            "[Invalid server IP address]",
        ),
        // A space: refused by the resolver itself, no query sent.
        (
            &["-c", "C", "no such host.invalid", "12000", "1302", "1402"],
            "[Invalid server IP address]",
        ),
    ];
    for (args, msg) in cases {
        let (code, out) = run(args);
        // A usage error: exit code 2 (README, "Exit codes").
        assert_eq!(code, 2, "{args:?}: {out:?}");
        assert_eq!(
            out.first().map(String::as_str),
            Some(*msg),
            "{args:?}: {out:?}"
        );
    }
}

#[test]
fn long_forms_reject_bad_values_with_exit_2() {
    let cases: &[&[&str]] = &[
        &["client", "--name", "B", "--server", "127.0.0.1"],
        &["client", "--name", "B", "--server", "999..0.1:12000"],
        &["client", "--name", "B", "--server", "127.0.0.1:99999"],
        &["client", "--name", "B"],
        &["server", "--port", "70000"],
        &["server", "--bind", "not-an-ip"],
        &["server", "--frobnicate"],
        &["-s", "12000", "--heartbeat-ms", "soon"],
        &["release-name"],
    ];
    for args in cases {
        let (code, out) = run(args);
        assert_eq!(code, 2, "{args:?}: {out:?}");
        assert!(
            !out.is_empty(),
            "{args:?}: a usage error says what is wrong"
        );
    }
}

#[test]
fn wrong_argument_count_prints_usage_and_exits_2() {
    for args in [&["-c", "B", "127.0.0.1"][..], &[][..], &["-s"][..]] {
        let (code, out) = run(args);
        assert_eq!(code, 2, "{args:?}: {out:?}");
        assert!(out.iter().any(|l| l.contains("Usage")), "{args:?}: {out:?}");
    }
}

#[test]
fn help_explains_both_forms() {
    let (code, out) = run(&["--help"]);
    assert_eq!(code, 0);
    let text = out.join("\n");
    assert!(text.contains("fileapp -s <server-port>"));
    assert!(text.contains("fileapp -c <name> <server-ip> <server-port> <udp-port> <tcp-port>"));
    assert!(text.contains("Exit codes"));
}

#[test]
fn port_in_use_is_a_clear_error() {
    // Hold a port the system picked (no window for another test to take it first).
    let hold = std::net::UdpSocket::bind(("0.0.0.0", 0)).unwrap();
    let p = hold.local_addr().unwrap().port().to_string();
    let (code, out) = run(&["-s", &p]);
    assert_eq!(code, 1);
    assert!(out[0].contains("already in use"), "{out:?}");
}

#[test]
fn unreachable_server_gives_up_after_retries() {
    // Nothing listens on this port: 3 retries 500 ms apart, then the message.
    let port = free_port().to_string();
    let (u, t) = (free_port().to_string(), free_port().to_string());
    let start = std::time::Instant::now();
    let (code, out) = run(&["-c", "B", "127.0.0.1", &port, &u, &t]);
    let took = start.elapsed();
    assert_eq!(code, 1);
    assert_eq!(out, vec![">>> [Server not responding]".to_string()]);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[test]
fn completions_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}");
        let script = out.join("\n");
        // Each script completes the subcommands and the seed's options.
        for word in ["server", "client", "release-name", "download-dir"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
    let (code, out) = run(&["completions", "powershell-ish"]);
    assert_eq!(code, 2);
    assert!(out[0].contains("Unknown shell"), "{out:?}");
}

/// A client that cannot start prints exactly one line and exits 1; nothing reaches a
/// server (none runs).
#[test]
fn client_start_up_failures_print_one_line_and_exit_1() {
    let server = free_port().to_string();
    let udp = std::net::UdpSocket::bind(("0.0.0.0", 0)).unwrap();
    let u = udp.local_addr().unwrap().port().to_string();
    let t = free_port().to_string();
    let (code, out) = run(&["-c", "B", "127.0.0.1", &server, &u, &t]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        [format!("[Cannot use UDP port {u}: it is already in use]")]
    );

    let tcp = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let t = tcp.local_addr().unwrap().port().to_string();
    let u = free_port().to_string();
    let (code, out) = run(&["-c", "B", "127.0.0.1", &server, &u, &t]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        [format!("[Cannot use TCP port {t}: it is already in use]")]
    );

    let addr = format!("127.0.0.1:{server}");
    let args = ["client", "--name", "B", "--server", &addr];
    let (code, out) = run(&[&args[..], &["--download-dir", "/nonexistent/x"]].concat());
    assert_eq!(code, 1);
    assert_eq!(out, ["[Download folder /nonexistent/x does not exist]"]);
}

#[test]
fn a_name_in_use_at_start_is_said_once_and_exits_1() {
    let srv = crate::util::Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let _b = srv.client("B", dir.path());
    let other = tempfile::tempdir().unwrap();
    let mut b2 = srv.client_raw("B", other.path(), &[]);
    let code = b2.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 1);
    // First contact with this server (a fresh config folder): its key is pinned, and
    // said once; then the refusal, once.
    let pinned = format!("[Server 127.0.0.1:{} has key ", srv.port);
    assert!(b2.transcript[0].starts_with(&pinned), "{:?}", b2.transcript);
    assert_eq!(
        b2.transcript[1..],
        [">>> [Registration rejected: Client username already in use.]"]
    );
}

/// The README's first set-up command is `cargo run --release -- server`. The package has
/// two binaries (the program and the load generator), so `cargo run` only works with
/// `default-run` naming the program. (Running the command itself here would bind the
/// server's default port on every interface, which tests must not do.)
#[test]
fn the_readme_first_command_runs_the_program() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let first = readme
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .nth(1)
        .unwrap_or_default();
    assert_eq!(first, "cargo run --release -- server");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        manifest
            .lines()
            .any(|l| l.trim() == r#"default-run = "fileapp""#),
        "cargo run needs default-run = \"fileapp\""
    );
}
