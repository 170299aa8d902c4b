//! The seed's scenarios on the control plane: registration, offers, list, dereg/reg.

use std::time::Duration;

use crate::util::{Proc, Server, free_port};

fn share(dir: &std::path::Path, files: &[&str]) {
    std::fs::create_dir_all(dir.join("share")).unwrap();
    for f in files {
        std::fs::write(dir.join("share").join(f), format!("content of {f}")).unwrap();
    }
}

#[test]
fn seed_scenario_with_three_clients() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    share(dir.path(), &["foo", "bar", "baz"]);
    let mut b = srv.client("B", dir.path());
    let mut c = srv.client("C", dir.path());
    b.expect_line(">>> [Client table updated.]");
    let mut a = srv.client("A", dir.path());

    // offer before setdir
    b.send("offer foo");
    b.expect_line(">>> Directory not set. Set directory using setdir command.");
    b.send("setdir nowhere");
    b.expect_line(">>> [setdir failed: nowhere does not exist.]");
    b.send("setdir share/foo");
    b.expect_line(">>> [setdir failed: share/foo does not exist.]");
    b.send("setdir share");
    let abs = std::fs::canonicalize(dir.path().join("share")).unwrap();
    b.expect_line(&format!(
        ">>> [Successfully set {} as the directory for searching offered files.]",
        abs.display()
    ));
    b.send("offer foo bar foo");
    b.expect_line(">>> [Offer Message Received By Server]");
    for p in [&mut a, &mut b, &mut c] {
        p.expect_line(">>> [Client table updated.]");
    }
    let rows = c.list_until(2);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].starts_with("bar "));
    assert!(rows[1].starts_with("foo "));
    let port_col = rows[0].split_whitespace().collect::<Vec<_>>();
    assert_eq!(port_col[1], "B");
    assert_eq!(port_col[2], "127.0.0.1");

    // invalid requests: not offered, unknown owner, own file
    c.send("request baz B");
    c.expect_line(">>> [Invalid Request]");
    c.send("request foo Nobody");
    c.expect_line(">>> [Invalid Request]");
    b.send("request foo B");
    b.expect_line(">>> [Invalid Request]");

    // unknown command, missing argument
    c.send("frobnicate");
    c.expect_line(">>> Invalid operation.");
    c.send("request foo");
    c.expect("Usage: request");

    // dereg someone else: refused, nothing sent
    c.send("dereg B");
    c.expect("dereg failed");
    // dereg self: files hidden, kept
    b.send("dereg B");
    b.expect_line(">>> [You are Offline. Bye.]");
    c.expect_line(">>> [Client table updated.]");
    assert!(c.list_until(0).is_empty());
    b.send("list");
    b.expect("You are offline");
    b.send("reg");
    b.expect_line(">>> [Welcome, You are registered.]");
    c.expect_line(">>> [Client table updated.]");
    assert_eq!(c.list_until(2).len(), 2, "offers restored after reg");
}

#[test]
fn name_held_by_online_client_is_rejected_but_offline_name_is_free() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let mut b = srv.client("B", dir.path());
    let mut b2 = srv.client_raw("B", dir.path(), &[]);
    b2.expect_line(">>> [Registration rejected: Client username already in use.]");
    assert_eq!(b2.wait_exit(Duration::from_secs(5)), 1);
    b.send("dereg");
    b.expect_line(">>> [You are Offline. Bye.]");
    let mut b3 = srv.client("B", dir.path());
    b3.send("list");
    b3.expect("No files available");
}

#[test]
fn seed_command_line_registers_with_fixed_ports() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let (u, t) = (free_port().to_string(), free_port().to_string());
    let sp = srv.port.to_string();
    let mut b = Proc::spawn("B", &["-c", "B", "127.0.0.1", &sp, &u, &t], dir.path());
    b.expect_line(">>> [Welcome, You are registered.]");
    let mut c = srv.client("C", dir.path());
    std::fs::create_dir(dir.path().join("s")).unwrap();
    std::fs::write(dir.path().join("s/x"), b"x").unwrap();
    b.send("setdir s");
    b.expect("Successfully set");
    b.send("offer x");
    b.expect_line(">>> [Offer Message Received By Server]");
    c.expect_line(">>> [Client table updated.]");
    let rows = c.list_until(1);
    assert_eq!(rows.len(), 1);
    assert!(rows[0].ends_with(&t), "TCP port column: {rows:?}");
}

#[test]
fn offer_refuses_bad_names_and_offers_the_rest() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    share(dir.path(), &["ok"]);
    std::fs::create_dir(dir.path().join("share/sub")).unwrap();
    std::fs::write(dir.path().join("secret"), b"s").unwrap();
    let mut b = srv.client("B", dir.path());
    b.send("setdir share");
    b.expect("Successfully set");
    b.send("offer ../secret . .. missing sub ok");
    b.expect("Cannot offer");
    b.expect_line(">>> [Offer Message Received By Server]");
    // A folder is offered as one entry, `sub/`; `.` and `..` are not folders to offer.
    let rows = b.list();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].starts_with("ok ") && rows[1].starts_with("sub/ "),
        "{rows:?}"
    );
    b.send("offer ../secret");
    b.expect("Cannot offer");
    b.expect_line(">>> [Nothing offered.]");
}

#[test]
fn offer_without_server_ack_reports_and_keeps_running() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    share(dir.path(), &["f"]);
    let mut b = srv.client("B", dir.path());
    b.send("setdir share");
    b.expect("Successfully set");
    let mut srv = srv;
    srv.proc.kill9();
    b.send("offer f");
    b.expect_line(">>> [No ACK from Server, please try again later.]");
    b.send("help");
    b.expect("setdir <dir>");
}

#[test]
fn dereg_without_server_ack_exits_non_zero() {
    let mut srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let mut b = srv.client("B", dir.path());
    srv.proc.kill9();
    b.send("dereg");
    b.expect_line(">>> [Server not responding]");
    b.expect_line(">>> [Exiting]");
    assert_eq!(b.wait_exit(Duration::from_secs(5)), 1);
}

#[test]
fn large_table_of_300_long_names_reaches_a_newcomer() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("share")).unwrap();
    let names: Vec<String> = (0..300).map(|i| format!("{i:0>100}")).collect();
    for n in &names {
        std::fs::write(dir.path().join("share").join(n), b"").unwrap();
    }
    let mut b = srv.client("B", dir.path());
    b.send("setdir share");
    b.expect("Successfully set");
    b.send(&format!("offer {}", names.join(" ")));
    b.expect_line(">>> [Offer Message Received By Server]");
    let mut c = srv.client("C", dir.path());
    let rows = c.list_until(300);
    assert_eq!(rows.len(), 300);
}

#[test]
fn end_of_input_and_signals_leave_cleanly_and_tell_the_server() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = srv.client("W", dir.path());
    for (name, how) in [
        ("E", 0),
        ("T", libc::SIGTERM),
        ("H", libc::SIGHUP),
        ("I", libc::SIGINT),
    ] {
        let mut p = srv.client(name, dir.path());
        watcher.expect_line(">>> [Client table updated.]");
        if how == 0 {
            p.close_stdin();
        } else {
            p.signal(how);
        }
        assert_eq!(p.wait_exit(Duration::from_secs(5)), 0, "{name}");
        assert!(!p.transcript.iter().any(|l| l.contains("panicked")));
        // The goodbye reached the server: everyone is told, and the name is free at once.
        watcher.expect_line(">>> [Client table updated.]");
        let mut again = srv.client(name, dir.path());
        again.close_stdin();
        assert_eq!(again.wait_exit(Duration::from_secs(5)), 0);
        watcher.lines_for(Duration::from_millis(200));
    }
}

#[test]
fn two_hundred_clients_registering_at_once_all_get_their_welcome() {
    // 200 processes starting at once on a small machine: one may not run for seconds,
    // longer than the default 2 s retry budget (4 sends 500 ms apart). The server is not
    // what is slow, so each client gets a budget for that storm: retries 2 s apart,
    // giving up after 4 × 2 s = 8 s of its own silence.
    const RETRY_MS: u64 = 2000;
    let retry = RETRY_MS.to_string();
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let mut procs: Vec<Proc> = (0..200)
        .map(|i| srv.client_raw(&format!("n{i}"), dir.path(), &["--retry-ms", &retry]))
        .collect();
    for p in &mut procs {
        let (which, line) = p.expect_any(
            &[
                ">>> [Welcome, You are registered.]",
                ">>> [Server not responding]",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(which, 0, "{}: {line}", p.name);
    }
    for p in &mut procs {
        p.close_stdin();
    }
}

/// Real processes: the default (encrypted) transfer works end to end, and a
/// `--plaintext` client and an encrypted one refuse each other clearly on both sides.
#[test]
fn encrypted_by_default_and_plaintext_must_be_agreed() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let data = crate::util::random_bytes(3 * 1024 * 1024 + 5, 77);
    std::fs::create_dir_all(dir.path().join("share")).unwrap();
    std::fs::write(dir.path().join("share").join("enc.bin"), &data).unwrap();
    let (c_dir, d_dir) = (dir.path().join("c"), dir.path().join("d"));
    std::fs::create_dir_all(&c_dir).unwrap();
    std::fs::create_dir_all(&d_dir).unwrap();
    // Requesters first: B's first table then holds their keys.
    let mut c = srv.client_raw(
        "C",
        dir.path(),
        &["--download-dir", c_dir.to_str().unwrap()],
    );
    c.expect_line(">>> [Welcome, You are registered.]");
    let mut d = srv.client_raw(
        "D",
        dir.path(),
        &["--download-dir", d_dir.to_str().unwrap(), "--plaintext"],
    );
    d.expect_line(">>> [Welcome, You are registered.]");
    let mut b = srv.client("B", dir.path());
    b.send("setdir share");
    b.expect("Successfully set");
    b.send("offer enc.bin");
    b.expect_line(">>> [Offer Message Received By Server]");
    for p in [&mut c, &mut d] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while p.list_json().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no table");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    c.send("request enc.bin B");
    c.expect_line("< enc.bin downloaded successfully! >");
    assert_eq!(std::fs::read(c_dir.join("enc.bin")).unwrap(), data);
    b.expect_line("< enc.bin transferred successfully! >");

    d.send("request enc.bin B");
    d.expect_line(
        "< Download of enc.bin from B failed: B requires encryption; this client runs with --plaintext (both sides must use the same mode) >",
    );
    b.expect_line(
        "< Refused plaintext request from 127.0.0.1: this client only accepts encrypted transfers >",
    );
    assert!(!d_dir.join("enc.bin").exists());
}

#[test]
fn exec_runs_commands_then_serves_or_exits() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    share(dir.path(), &["a", "b"]);
    // --exec then --exit: runs the commands and leaves with 0.
    let mut e = srv.client_raw(
        "E",
        dir.path(),
        &["--exec", "setdir share; offer a; list", "--exit"],
    );
    e.expect_line(">>> setdir share");
    e.expect("Successfully set");
    e.expect_line(">>> [Offer Message Received By Server]");
    e.expect("FILENAME");
    assert_eq!(e.wait_exit(Duration::from_secs(10)), 0);
    // --exec alone: stays online serving.
    let mut s = srv.client_raw("S", dir.path(), &["--exec", "setdir share; offer b"]);
    s.expect_line(">>> [Offer Message Received By Server]");
    let down = tempfile::tempdir().unwrap();
    let mut c = srv.client("C", down.path());
    c.send("request b S");
    c.expect_line("< b downloaded successfully! >");
    assert_eq!(
        std::fs::read(down.path().join("b")).unwrap(),
        b"content of b"
    );
}

#[test]
fn advertise_ip_is_what_the_table_shows_and_what_peers_connect_to() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    share(dir.path(), &["x"]);
    // B talks to the server from 127.0.0.1 but tells peers to use ::1.
    let mut b = srv.client_raw("B", dir.path(), &["--advertise-ip", "::1"]);
    b.expect_line(">>> [Welcome, You are registered.]");
    b.send("setdir share");
    b.expect("Successfully set");
    b.send("offer x");
    b.expect_line(">>> [Offer Message Received By Server]");
    // C downloads into a folder given relative to where it was started.
    std::fs::create_dir_all(dir.path().join("rel/down")).unwrap();
    let mut c = srv.client_raw("C", dir.path(), &["--download-dir", "rel/down"]);
    c.expect_line(">>> [Welcome, You are registered.]");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = c.list();
        if !rows.is_empty() {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "C never saw B's offer"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let cols: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(cols[..3], ["x", "B", "::1"], "{rows:?}");
    let port: u16 = cols[3].parse().unwrap();
    // B listens on IPv4 only (its server is IPv4): at the advertised address nothing
    // answers, so the direct connection fails, which shows C used the advertised
    // address; C then asks the server for a reverse connection, and B connects out...
    c.send("request x B");
    let summary = c.expect("< x: ");
    // (B may not have C in its table yet when the server's dial comes: it waits for it.)
    assert!(summary.ends_with(", reverse >"), "{summary}");
    c.expect_line("< x downloaded successfully! >");
    std::fs::remove_file(dir.path().join("rel/down/x")).unwrap();
    // ... and with something forwarding [::1]:port to B, it arrives directly.
    let proxy = crate::proxy::Proxy::start(
        format!("[::1]:{port}").parse().unwrap(),
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    c.send("request x B");
    let summary = c.expect("< x: ");
    assert!(summary.ends_with(", direct >"), "{summary}");
    c.expect_line("< x downloaded successfully! >");
    assert_eq!(proxy.accepted(), 1);
    assert_eq!(
        std::fs::read(dir.path().join("rel/down/x")).unwrap(),
        b"content of x"
    );
    assert!(!dir.path().join("x").exists(), "not in the start folder");
}

#[test]
fn list_with_a_pattern_shows_only_matching_names() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    share(dir.path(), &["alpha.txt", "alps", "beta.txt", "gamma.bin"]);
    let mut b = srv.client("B", dir.path());
    b.send("setdir share");
    b.expect("Successfully set");
    b.send("offer alpha.txt alps beta.txt gamma.bin");
    b.expect_line(">>> [Offer Message Received By Server]");
    let names = |rows: Vec<String>| -> Vec<String> {
        rows.iter()
            .map(|r| r.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(b.list()).len(), 4);
    assert_eq!(names(b.list_args("al*")), ["alpha.txt", "alps"]);
    assert_eq!(names(b.list_args("*.txt")), ["alpha.txt", "beta.txt"]);
    assert_eq!(names(b.list_args("?eta.txt")), ["beta.txt"]);
    assert_eq!(names(b.list_args("gamma.bin")), ["gamma.bin"]);
    assert!(
        b.list_args("zeta*").is_empty(),
        "no match: the empty-table line"
    );
    // The long form filters the same way.
    let long = b.list_args("-l *.bin");
    assert_eq!(long.len(), 1, "{long:?}");
    assert!(long[0].starts_with("gamma.bin "), "{long:?}");
}

/// Two clients of `srv_addr` (given as the client types it) register, one offers, the
/// other downloads: the whole path works with that form of address.
fn register_and_transfer(srv_port: u16, long_form: &str, seed_host: &str) {
    let dir = tempfile::tempdir().unwrap();
    share(dir.path(), &["six"]);
    let mut b = Proc::spawn(
        "B",
        &["client", "--name", "B", "--server", long_form],
        dir.path(),
    );
    b.expect_line(">>> [Welcome, You are registered.]");
    b.send("setdir share");
    b.expect("Successfully set");
    b.send("offer six");
    b.expect_line(">>> [Offer Message Received By Server]");
    let down = dir.path().join("down");
    std::fs::create_dir(&down).unwrap();
    let (u, t) = (free_port().to_string(), free_port().to_string());
    let sp = srv_port.to_string();
    let mut c = Proc::spawn("C", &["-c", "C", seed_host, &sp, &u, &t], &down);
    c.expect_line(">>> [Welcome, You are registered.]");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.list_json().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "C never saw B's offer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.send("request six B");
    c.expect_line("< six downloaded successfully! >");
    assert_eq!(std::fs::read(down.join("six")).unwrap(), b"content of six");
}

#[test]
fn an_ipv6_server_address_works_in_both_forms() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, port) = crate::util::spawn_server("::1", dir.path(), 0, &["--db", ":memory:"]);
    register_and_transfer(port, &format!("[::1]:{port}"), "::1");
}

#[test]
fn a_host_name_server_address_works_in_both_forms() {
    // Bind where "localhost" resolves first on this machine (127.0.0.1 or ::1).
    use std::net::ToSocketAddrs;
    let ip = ("localhost", 0)
        .to_socket_addrs()
        .expect("localhost resolves")
        .next()
        .unwrap()
        .ip();
    assert!(ip.is_loopback(), "{ip}");
    let dir = tempfile::tempdir().unwrap();
    let (_srv, port) =
        crate::util::spawn_server(&ip.to_string(), dir.path(), 0, &["--db", ":memory:"]);
    register_and_transfer(port, &format!("localhost:{port}"), "localhost");
}
