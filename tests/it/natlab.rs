//! The NAT lab: clients behind home routers that translate addresses, built by the test
//! itself (as root) out of network namespaces, veth pairs, a bridge and nftables, and
//! torn down when the [`Lab`] is dropped. Nothing leaves the machine: the namespaces
//! have no link to the host's own network, and every address is a documentation one.
//!
//! ```text
//! public net 203.0.113.0/24: a bridge in namespace <lab>-p
//!  ├── server host 203.0.113.1 (<lab>-s)
//!  ├── public hosts 203.0.113.10, .11, ... (<lab>-q0, <lab>-q1, ...)
//!  ├── router 203.0.113.101 (<lab>-r0), NAT ── 192.0.2.0/24 ── host 192.0.2.2 (<lab>-h0)
//!  └── router 203.0.113.102 (<lab>-r1), NAT ── 198.51.100.0/24 ── host 198.51.100.2 (<lab>-h1)
//! ```
//!
//! The routers let in only what answers a flow that went out (no port forwarding);
//! [`Nat`] says how they map ports.
//!
//! Start a server with [`Lab::start_server`] and clients with
//! `srv.client_in(&host.ns, name, dir)` (`crate::util::NetnsServer`); run socket code in
//! a host with [`Host::run`]. `cargo test --release --test it natlab` runs these tests.

mod lab;
mod sys;

// The whole API, for the tests the reach work adds (not all of it is used yet).
#[allow(unused_imports)]
pub use lab::{Host, Lab, Nat};
#[allow(unused_imports)]
pub use sys::in_netns;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::util::{Proc, random_bytes};

/// The lab, or `return` from the test when it cannot be built here (said on stderr;
/// under `CI=true` the test fails instead).
macro_rules! lab {
    ($test:literal) => {
        match Lab::new(concat!("natlab::", $test)) {
            Some(lab) => lab,
            None => return,
        }
    };
}

/// The lab behaves as its documentation says: a Cone home shows one public port for
/// one socket whatever the destination, a Symmetric home one per destination; replies
/// come back; nothing from the public net reaches a home host unasked.
#[test]
fn the_lab_nats_as_specified() {
    let started = Instant::now();
    let mut lab = lab!("the_lab_nats_as_specified");
    let cone = lab.home(Nat::Cone);
    let sym = lab.home(Nat::Symmetric);
    let (p1, p2) = (lab.public_host(), lab.public_host());
    eprintln!(
        "lab with 2 homes and 3 public hosts set up in {:?}",
        started.elapsed()
    );
    // Receivers on three public hosts: the server's (so a home host reaches the server)
    // and two others.
    let receivers: Vec<UdpSocket> = [lab.server_host(), &p1, &p2]
        .into_iter()
        .map(|h| {
            let s = h.run(|| UdpSocket::bind((h.ip, 0)).unwrap());
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
        .collect();
    for home in [&cone, &sym] {
        let sock = home.run(|| UdpSocket::bind("0.0.0.0:0").unwrap());
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let local = sock.local_addr().unwrap().port();
        let seen: Vec<SocketAddr> = receivers
            .iter()
            .map(|r| {
                sock.send_to(b"probe", r.local_addr().unwrap()).unwrap();
                let mut buf = [0u8; 16];
                let (n, from) = r.recv_from(&mut buf).unwrap_or_else(|e| {
                    panic!(
                        "{:?} home: nothing reached {:?}: {e}",
                        home.nat,
                        r.local_addr()
                    )
                });
                assert_eq!(&buf[..n], b"probe");
                from
            })
            .collect();
        let nat = home.nat.unwrap();
        eprintln!(
            "{nat:?} home {} (local port {local}) seen as {seen:?}",
            home.ip
        );
        assert!(seen.iter().all(|a| a.ip() == home.public_ip), "{seen:?}");
        let ports: BTreeSet<u16> = seen.iter().map(|a| a.port()).collect();
        match nat {
            // Linux keeps the source port when it is free: the same one everywhere.
            Nat::Cone => assert_eq!(ports, BTreeSet::from([local]), "{seen:?}"),
            // fully-random: three destinations, three draws from ~64k ports.
            Nat::Symmetric => assert!(ports.len() >= 2, "{seen:?}"),
        }
        // Replies come back through the mapping, from the address they were sent to.
        for (r, to) in receivers.iter().zip(&seen) {
            r.send_to(b"reply", to).unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = sock.recv_from(&mut buf).expect("a reply through the NAT");
            assert_eq!((&buf[..n], from), (&b"reply"[..], r.local_addr().unwrap()));
        }
        // Filtering depends on address and port (conntrack): a datagram to the mapping
        // from a port it never sent to is dropped. Sent first, it would be received
        // first; the next datagram is the real reply that follows it.
        let stranger = p2.run(|| UdpSocket::bind((p2.ip, 0)).unwrap());
        stranger.send_to(b"stranger", seen[0]).unwrap();
        receivers[0].send_to(b"reply", seen[0]).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = sock
            .recv_from(&mut buf)
            .expect("the reply after the stranger");
        assert_eq!(
            (&buf[..n], from),
            (&b"reply"[..], receivers[0].local_addr().unwrap())
        );
    }
    // TCP: out of a home works; into a home does not, neither at the router's public
    // address (no forwarding, dropped unanswered: a timeout, not a refusal) nor at the
    // host's own (no route to a home's LAN on the public net).
    let public_listener = p1.run(|| TcpListener::bind((p1.ip, 0)).unwrap());
    let to_public = public_listener.local_addr().unwrap();
    for home in [&cone, &sym] {
        home.run(|| TcpStream::connect_timeout(&to_public, Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{:?} home: connect out failed: {e}", home.nat));
        let (_, from) = public_listener.accept().unwrap();
        assert_eq!(from.ip(), home.public_ip);
        let listener = home.run(|| TcpListener::bind("0.0.0.0:0").unwrap());
        let port = listener.local_addr().unwrap().port();
        let wait = Duration::from_millis(300);
        let at_router = SocketAddr::new(home.public_ip, port);
        let e = p2
            .run(|| TcpStream::connect_timeout(&at_router, wait))
            .expect_err("inbound TCP at the router's address");
        assert_eq!(e.kind(), ErrorKind::TimedOut, "dropped, not refused: {e}");
        let at_host = SocketAddr::new(home.ip, port);
        let e = p2
            .run(|| TcpStream::connect_timeout(&at_host, wait))
            .expect_err("inbound TCP at the home host's own address");
        eprintln!(
            "{:?} home: inbound TCP to {at_host}: {e}",
            home.nat.unwrap()
        );
    }
    eprintln!("the_lab_nats_as_specified took {:?}", started.elapsed());
}

/// A lab's namespaces are gone once it is dropped, also when its test panics.
#[test]
fn the_lab_is_torn_down_even_when_its_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let mut lab = lab!("the_lab_is_torn_down_even_when_its_test_panics");
        let (home, public) = (lab.home(Nat::Cone), lab.public_host());
        let server = lab.server_host().ns.clone();
        tx.send([home.ns, home.router.unwrap(), public.ns, server])
            .unwrap();
        panic!("a failing lab test (expected)");
    })
    .join();
    let Ok(made) = rx.recv() else {
        // No lab here: skipped, or (CI=true) failed in Lab::new.
        if let Err(p) = outcome {
            std::panic::resume_unwind(p);
        }
        return;
    };
    assert!(outcome.is_err());
    let left: Vec<_> = made
        .iter()
        .filter(|n| std::path::Path::new("/var/run/netns").join(n).exists())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Two clients on the public net: a direct download works as it does on loopback.
#[test]
fn both_public_download_direct() {
    let mut lab = lab!("both_public_download_direct");
    let srv = lab.start_server(&["--db", ":memory:"]);
    let (bh, ch) = (lab.public_host(), lab.public_host());
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3 << 20, 11);
    let mut b = srv.sharing_in(&bh.ns, "B", &dir.path().join("b"), &[("f.bin", &data)]);
    let down = dir.path().join("c");
    std::fs::create_dir(&down).unwrap();
    let mut c = srv.client_in(&ch.ns, "C", &down);
    let rows = c.list_json_rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["ip"], bh.ip.to_string(), "{rows:?}");
    c.send("request f.bin B");
    c.expect_line("< Connection with client B established. >");
    c.expect_line("< f.bin downloaded successfully! >");
    b.expect_line(&format!("< Accepting connection request from {}. >", ch.ip));
    b.expect_line("< f.bin transferred successfully! >");
    assert!(std::fs::read(down.join("f.bin")).unwrap() == data);
}

/// Clients in a Cone home and a Symmetric home register through their NATs and see
/// each other at their routers' public addresses (what the server sees), never at
/// their LAN addresses.
#[test]
fn clients_behind_nat_register_and_see_each_other() {
    let mut lab = lab!("clients_behind_nat_register_and_see_each_other");
    let srv = lab.start_server(&["--db", ":memory:"]);
    let (a, s) = (lab.home(Nat::Cone), lab.home(Nat::Symmetric));
    let dir = tempfile::tempdir().unwrap();
    let mut ca = srv.sharing_in(&a.ns, "A", &dir.path().join("a"), &[("a.txt", b"a")]);
    let mut cs = srv.sharing_in(&s.ns, "S", &dir.path().join("s"), &[("s.txt", b"s")]);
    for (p, who) in [(&mut ca, "A"), (&mut cs, "S")] {
        let rows = p.list_until(2);
        assert_eq!(rows.len(), 2, "{who}: {rows:?}");
        let json = p.list_json_rows();
        for (file, owner, host) in [("a.txt", "A", &a), ("s.txt", "S", &s)] {
            let row = json
                .iter()
                .find(|r| r["file"] == file && r["owner"] == owner)
                .unwrap_or_else(|| panic!("{who} does not list {file}: {json:?}"));
            assert_eq!(row["ip"], host.public_ip.to_string(), "{who}: {row}");
            let line = rows.iter().find(|l| l.starts_with(file)).unwrap();
            assert!(line.contains(&host.public_ip.to_string()), "{who}: {line}");
            assert!(!line.contains(&host.ip.to_string()), "{who}: {line}");
        }
    }
}

/// Polls `p`'s table until `owner`'s reachability reads `want` (the server tests it
/// after each registration); returns the rows.
fn until_reach(p: &mut Proc, owner: &str, want: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = p.list_json_rows();
        if rows
            .iter()
            .any(|r| r["owner"] == owner && r["reach"] == want)
        {
            return rows;
        }
        assert!(Instant::now() < deadline, "{owner} never {want}: {rows:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asks `p`'s `whoami` until it names `want` as our reachability (the server's test of
/// our own port may end after the owner's).
fn until_own_reach(p: &mut Proc, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        p.send("whoami");
        let lines = p.lines_for(Duration::from_millis(200));
        if lines.iter().any(|l| l.contains(want)) {
            return;
        }
        assert!(Instant::now() < deadline, "never {want}: {lines:?}");
    }
}

/// Owner in a home, requester public: the server finds the owner's TCP port
/// unreachable from outside, so the requester asks for a reverse connection, the owner
/// connects out, and the download arrives verified, its summary naming the path.
/// Nothing is tried directly first: the server already said it cannot work.
#[test]
fn owner_behind_nat_serves_over_a_reverse_connection() {
    let mut lab = lab!("owner_behind_nat_serves_over_a_reverse_connection");
    let srv = lab.start_server(&["--db", ":memory:"]);
    let (home, public) = (lab.home(Nat::Cone), lab.public_host());
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2 << 20, 21);
    let mut o = srv.sharing_in(&home.ns, "O", &dir.path().join("o"), &[("f", &data)]);
    let down = dir.path().join("r");
    std::fs::create_dir(&down).unwrap();
    let mut r = srv.client_in(&public.ns, "R", &down);
    until_reach(&mut r, "O", "nat-cone");
    until_own_reach(&mut r, ">>> [Reachability: reachable]");
    until_own_reach(&mut o, ">>> [Reachability: behind NAT (punchable)]");
    let asked = Instant::now();
    r.send("request f O");
    r.expect_line("< Connection with client O established. >");
    let connected = asked.elapsed();
    let summary = r.expect("< f: ");
    r.expect_line("< f downloaded successfully! >");
    eprintln!("reverse: connected after {connected:?}; {summary}");
    assert!(summary.ends_with(", reverse >"), "{summary}");
    assert!(std::fs::read(down.join("f")).unwrap() == data);
    o.expect_line("< f transferred successfully! >");
}

// After `lab!`: the macro is in scope only below its definition.
mod bench;

/// Both behind symmetric NATs: nothing can be punched, so the requester goes straight
/// to the server's relay; both connect out, the relay splices, and the download arrives
/// verified over the same TLS as ever.
#[test]
fn both_behind_symmetric_nats_download_through_the_relay() {
    let mut lab = lab!("both_behind_symmetric_nats_download_through_the_relay");
    let srv = lab.start_server(&["--db", ":memory:"]);
    let (oh, rh) = (lab.home(Nat::Symmetric), lab.home(Nat::Symmetric));
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3 << 20, 31);
    let g = random_bytes(1 << 20, 32);
    let files: &[(&str, &[u8])] = &[("f", &data), ("g", &g)];
    let mut o = srv.sharing_in(&oh.ns, "O", &dir.path().join("o"), files);
    let down = dir.path().join("r");
    std::fs::create_dir(&down).unwrap();
    let mut r = srv.client_in(&rh.ns, "R", &down);
    until_reach(&mut r, "O", "nat-symmetric");
    until_own_reach(
        &mut r,
        ">>> [Reachability: behind NAT (symmetric: relay only)]",
    );
    let asked = Instant::now();
    r.send("request f O");
    r.expect_line("< Connection with client O established. >");
    eprintln!("relayed: connected after {:?}", asked.elapsed());
    let summary = r.expect("< f: ");
    r.expect_line("< f downloaded successfully! >");
    assert!(summary.ends_with(", relayed >"), "{summary}");
    assert!(std::fs::read(down.join("f")).unwrap() == data);
    o.expect_line("< f transferred successfully! >");
    // `--json`: one line, which says the path too.
    r.send("request --json g O");
    let line = r.expect("{");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["result"], "downloaded", "{line}");
    assert_eq!(v["path"], "relayed", "{line}");
    assert_eq!(v["size"], g.len() as u64, "{line}");
    assert_eq!(v["blake3"], blake3::hash(&g).to_hex().as_str(), "{line}");
    assert!(std::fs::read(down.join("g")).unwrap() == g);
}

/// A relay that goes down mid-transfer: the download fails with one clear line and
/// keeps what arrived; once the relay is back, the same request resumes where it
/// stopped and the file arrives whole. The relay runs apart (`fileapp relay`) on a
/// public host; the server names it (`--relay-at`) and signs its tickets.
#[test]
fn a_relay_that_goes_down_loses_nothing_and_the_download_resumes_later() {
    let mut lab = lab!("a_relay_that_goes_down_loses_nothing_and_the_download_resumes_later");
    let relay_host = lab.public_host();
    let relay_at = SocketAddr::new(relay_host.ip, 7400);
    let at = relay_at.to_string();
    let srv = lab.start_server(&["--db", ":memory:", "--no-relay", "--relay-at", &at]);
    let key_line = srv
        .srv
        .proc
        .transcript
        .iter()
        .find(|l| l.starts_with("Relay ticket key: "));
    let key = key_line.expect("the server prints its ticket key")["Relay ticket key: ".len()..]
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let start_relay = |rate: Option<&str>| {
        let ip = relay_host.ip.to_string();
        let mut args = vec![
            "relay",
            "--bind",
            &ip,
            "--port",
            "7400",
            "--server-key",
            &key,
        ];
        if let Some(r) = rate {
            args.extend(["--rate", r]);
        }
        let mut p = Proc::spawn_in(&relay_host.ns, "relay", &args, dir.path());
        p.expect("Relay listening on");
        p
    };
    // Slow enough (40 MB/s) that the relay can be killed mid-file.
    let mut relay = start_relay(Some("40"));
    let (oh, rh) = (lab.home(Nat::Symmetric), lab.home(Nat::Symmetric));
    let data = random_bytes(64 << 20, 41);
    let _o = srv.sharing_in(&oh.ns, "O", &dir.path().join("o"), &[("f", &data)]);
    let down = dir.path().join("r");
    std::fs::create_dir(&down).unwrap();
    let mut r = srv.client_in(&rh.ns, "R", &down);
    until_reach(&mut r, "O", "nat-symmetric");
    r.send("request f O");
    r.expect_line("< Downloading f... >");
    std::thread::sleep(Duration::from_millis(400));
    relay.kill9();
    let failed = r.expect_within("< Download of f from O failed:", Duration::from_secs(20));
    eprintln!("{failed}");
    assert!(!down.join("f").exists(), "nothing under the final name");
    // With the relay still down: a clear line, naming the relay.
    r.send("request f O");
    let down_line = r.expect_within("< Download of f from O failed:", Duration::from_secs(30));
    eprintln!("{down_line}");
    assert!(
        down_line.contains("relayed") && down_line.contains(&at),
        "{down_line}"
    );
    let _relay = start_relay(None);
    r.send("request f O");
    let resumed = r.expect_within("< Resuming f", Duration::from_secs(30));
    eprintln!("{resumed}");
    let summary = r.expect_within("< f: ", Duration::from_secs(60));
    r.expect_line("< f downloaded successfully! >");
    assert!(summary.contains("relayed"), "{summary}");
    assert!(std::fs::read(down.join("f")).unwrap() == data);
}

/// Two servers of one deployment (one PostgreSQL, reached through its Unix socket from
/// the lab's server host): the owner, behind a `nat` home, is a client of B; the
/// requester, behind another, a client of A. A learns the owner's reach through the
/// database, arranges the meeting and forwards the owner's `Dial` to B, which delivers
/// it; the download must take path `via`.
fn across_two_servers(test: &'static str, nat: Nat, reach: &str, via: &str) {
    let Some(url) = fileapp::testkit::pg_database() else {
        return;
    };
    let url = fileapp::testkit::pg_unix_url(&url).unwrap();
    let Some(mut lab) = Lab::new(test) else {
        return;
    };
    let a = lab.start_server(&["--db", &url, "--server-id", "A"]);
    let b = lab.start_server(&["--db", &url, "--server-id", "B"]);
    let (oh, rh) = (lab.home(nat), lab.home(nat));
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2 << 20, 52);
    let mut o = b.sharing_in(&oh.ns, "O", &dir.path().join("o"), &[("f", &data)]);
    let down = dir.path().join("r");
    std::fs::create_dir(&down).unwrap();
    let mut r = a.client_in(&rh.ns, "R", &down);
    until_reach(&mut r, "O", reach);
    r.send("request f O");
    r.expect_line("< Connection with client O established. >");
    let summary = r.expect("< f: ");
    r.expect_line("< f downloaded successfully! >");
    assert!(summary.ends_with(&format!(", {via} >")), "{summary}");
    assert!(std::fs::read(down.join("f")).unwrap() == data);
    o.expect_line("< f transferred successfully! >");
}

/// Punched: B passes the owner's probes back to A, which names each side's endpoint to
/// the other (the owner's through B).
#[test]
fn clients_of_two_servers_behind_cone_nats_meet_over_a_punched_path() {
    across_two_servers(
        "natlab::clients_of_two_servers_behind_cone_nats_meet_over_a_punched_path",
        Nat::Cone,
        "nat-cone",
        "punched",
    );
}

/// Relayed: A's relay, which A names to the owner by its address (A is bound to one).
#[test]
fn clients_of_two_servers_behind_symmetric_nats_meet_at_a_relay() {
    across_two_servers(
        "natlab::clients_of_two_servers_behind_symmetric_nats_meet_at_a_relay",
        Nat::Symmetric,
        "nat-symmetric",
        "relayed",
    );
}

/// Both behind endpoint-independent NATs: the server tells each the other's public UDP
/// endpoint from their probes, both punch, and the download runs over QUIC on the hole
/// with the same pinned keys, verified as ever.
#[test]
fn both_behind_cone_nats_download_over_a_punched_path() {
    let mut lab = lab!("both_behind_cone_nats_download_over_a_punched_path");
    let srv = lab.start_server(&["--db", ":memory:"]);
    let (oh, rh) = (lab.home(Nat::Cone), lab.home(Nat::Cone));
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3 << 20, 51);
    let mut o = srv.sharing_in(&oh.ns, "O", &dir.path().join("o"), &[("f", &data)]);
    let down = dir.path().join("r");
    std::fs::create_dir(&down).unwrap();
    let mut r = srv.client_in(&rh.ns, "R", &down);
    until_reach(&mut r, "O", "nat-cone");
    let asked = Instant::now();
    r.send("request f O");
    r.expect_line("< Connection with client O established. >");
    eprintln!("punched: connected after {:?}", asked.elapsed());
    let summary = r.expect("< f: ");
    r.expect_line("< f downloaded successfully! >");
    assert!(summary.ends_with(", punched >"), "{summary}");
    assert!(std::fs::read(down.join("f")).unwrap() == data);
    o.expect_line("< f transferred successfully! >");
}
