//! Faults: a lossy network, a server killed and restarted, clients that crash.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::relay::Relay;
use crate::util::{Proc, Server, WAIT};

/// The retry interval for requests to the server that clients here are started with
/// (`--retry-ms`; also the default, PROTOCOL.md §1.5: every 500 ms, 3 times, then
/// 500 ms more before giving up).
const RETRY: Duration = Duration::from_millis(500);

/// Slack for a loaded 2-core machine (scheduling, process start-up, the relay's up to
/// 20 ms of jitter each way) on top of a bound the configured intervals give.
const MARGIN: Duration = Duration::from_millis(1500);

/// An offer's verdict comes within its retry budget: 4 sends `RETRY` apart, `RETRY`
/// more after the last, plus the margin.
const OFFER_VERDICT: Duration =
    Duration::from_millis(4 * RETRY.as_millis() as u64 + MARGIN.as_millis() as u64);

/// When a silent client is reported offline: `offline_after` after its last datagram
/// (at most one heartbeat before it went silent), plus one heartbeat for the server's
/// sweep, plus the margin.
fn offline_bound(heartbeat_ms: u64, offline_after_ms: u64) -> Duration {
    Duration::from_millis(offline_after_ms + 2 * heartbeat_ms) + MARGIN
}

fn client_via(relay: &Relay, name: &str, cwd: &std::path::Path) -> Proc {
    let addr = relay.addr.to_string();
    let retry = RETRY.as_millis().to_string();
    let args = [
        "client",
        "--name",
        name,
        "--server",
        &addr,
        "--retry-ms",
        &retry,
    ];
    let mut p = Proc::spawn(name, &args, cwd);
    p.expect_line(">>> [Welcome, You are registered.]");
    p
}

#[test]
fn thirty_percent_loss_every_operation_ends_and_tables_converge_after() {
    let srv = Server::start(&[
        "--db",
        ":memory:",
        "--heartbeat-ms",
        "300",
        "--offline-after-ms",
        "30000",
    ]);
    let relay = Relay::start(format!("127.0.0.1:{}", srv.port).parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let names = ["L1", "L2", "L3"];
    let mut clients: Vec<Proc> = Vec::new();
    for n in names {
        let share = dir.path().join(n);
        std::fs::create_dir(&share).unwrap();
        for k in 0..6 {
            std::fs::write(share.join(format!("{n}-f{k}")), format!("{n} {k}")).unwrap();
        }
        let mut p = client_via(&relay, n, dir.path());
        p.send(&format!("setdir {n}"));
        p.expect("Successfully set");
        clients.push(p);
    }
    relay.set_faults(30, 10);
    let mut acked: BTreeSet<(String, String)> = BTreeSet::new();
    let mut ended = 0;
    for k in 0..6 {
        for (i, p) in clients.iter_mut().enumerate() {
            let file = format!("{}-f{k}", names[i]);
            // The previous command may still wait (up to 2 s) for its change to show
            // in the table; `whoami` is answered once it is done, so the clock below
            // measures this offer alone.
            p.send("whoami");
            p.expect(&format!(">>> [You are {} (", names[i]));
            let start = Instant::now();
            p.send(&format!("offer {file}"));
            let (which, _) = p.expect_any(
                &[
                    "[Offer Message Received By Server]",
                    "[No ACK from Server, please try again later.]",
                    "[Not connected to the server right now",
                ],
                OFFER_VERDICT + WAIT,
            );
            assert!(
                start.elapsed() < OFFER_VERDICT,
                "offer verdict after {:?}, budget {OFFER_VERDICT:?}",
                start.elapsed()
            );
            ended += 1;
            if which == 0 {
                acked.insert((file, names[i].to_string()));
            }
        }
    }
    assert_eq!(ended, 18);
    assert!(!acked.is_empty(), "some offers get through 30% loss");

    // Loss stops: within 3 s every client's table is the same and holds every acked offer.
    relay.set_faults(0, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        // Let in-flight commands (a sync wait) finish before sampling.
        let tables: Vec<BTreeSet<(String, String)>> = clients
            .iter_mut()
            .map(|p| p.list_json().into_iter().collect())
            .collect();
        let same = tables.windows(2).all(|w| w[0] == w[1]);
        if same && acked.is_subset(&tables[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tables did not converge within 3 s: {tables:?}, acked {acked:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn crashed_client_goes_offline_by_itself() {
    // Live clients heartbeat every 200 ms; a client must miss 10 in a row before it is
    // taken offline, so a loaded machine does not drop the live ones.
    const HB: u64 = 200;
    const OFFLINE: u64 = 2000;
    let (hb, off) = (HB.to_string(), OFFLINE.to_string());
    let srv = Server::start(&[
        "--db",
        ":memory:",
        "--heartbeat-ms",
        &hb,
        "--offline-after-ms",
        &off,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mut c = srv.client("C", dir.path());
    let mut b = srv.sharing("B", dir.path(), &[("f", b"f")]);
    // B's registration and its offer may reach C as one update or two. Notices printed
    // before the table showed B's offer are consumed with the JSON line.
    let deadline = Instant::now() + WAIT;
    while c.list_json().len() != 1 {
        assert!(Instant::now() < deadline, "C never saw B's offer");
        std::thread::sleep(Duration::from_millis(20));
    }
    b.kill9();
    let killed = Instant::now();
    let bound = offline_bound(HB, OFFLINE);
    // Silent for OFFLINE ms: offline, and C is told (a notice, then an empty table).
    loop {
        let left = bound.saturating_sub(killed.elapsed());
        c.expect_within(">>> [Client table updated.]", left);
        if c.list_json().is_empty() {
            break;
        }
    }
    assert!(killed.elapsed() < bound, "{:?}", killed.elapsed());
    // The name is free again at once.
    let _b2 = srv.client("B", dir.path());
}

#[test]
fn client_notices_a_lost_server_and_comes_back_by_itself() {
    // A server that forgets everything (in memory, its key kept in a file): the client
    // re-registers on its own and its offers are restored.
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("server.key");
    let key = key.to_str().unwrap();
    let opts = ["--db", ":memory:", "--heartbeat-ms", "200", "--key", key];
    let srv = Server::start(&opts);
    let dir = tempfile::tempdir().unwrap();
    let mut b = srv.sharing("B", dir.path(), &[("f", b"f")]);
    let srv = {
        // Kill, and only restart once B has noticed.
        let Server {
            mut proc,
            dir: sdir,
            port,
        } = srv;
        proc.kill9();
        b.expect_within(
            ">>> [Server not responding; reconnecting automatically.]",
            Duration::from_secs(5),
        );
        Server::start_in(sdir, port, &opts)
    };
    b.expect_within(
        ">>> [Connection to server restored.]",
        Duration::from_secs(5),
    );
    let mut c = srv.client("C", dir.path());
    let deadline = Instant::now() + Duration::from_secs(3);
    while c.list_json() != vec![("f".to_string(), "B".to_string())] {
        assert!(Instant::now() < deadline, "B's offer not restored");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Said once, not once per heartbeat.
    let lost = b
        .transcript
        .iter()
        .filter(|l| l.contains("Server not responding"))
        .count();
    assert_eq!(lost, 1);
}

#[test]
fn server_killed_with_sigkill_keeps_every_acknowledged_change_and_clients_return() {
    // Default SQLite store in the server's folder; short heartbeats so clients notice.
    let srv = Server::start(&["--heartbeat-ms", "200", "--offline-after-ms", "3000"]);
    let port = srv.port;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("s")).unwrap();
    const N: usize = 40;
    for k in 0..N {
        std::fs::write(dir.path().join(format!("s/f{k}")), format!("{k}")).unwrap();
    }
    let mut b = srv.client("B", dir.path());
    let mut c = srv.client("C", dir.path());
    b.send("setdir s");
    b.expect("Successfully set");
    // A stream of offers; the server dies in the middle of it.
    for k in 0..N {
        b.send(&format!("offer f{k}"));
    }
    let verdicts = [
        ">>> [Offer Message Received By Server]",
        ">>> [No ACK from Server, please try again later.]",
        "[Not connected to the server right now",
    ];
    let mut acked = Vec::new();
    for k in 0..10 {
        let (v, _) = b.expect_any(&verdicts, Duration::from_secs(10));
        assert_eq!(v, 0);
        acked.push(format!("f{k}"));
    }
    let Server {
        mut proc,
        dir: sdir,
        ..
    } = srv;
    assert!(
        sdir.path().join("fileapp-server.db").exists(),
        "default database file"
    );
    proc.kill9();
    let srv = Server::start_in(
        sdir,
        port,
        &["--heartbeat-ms", "200", "--offline-after-ms", "3000"],
    );
    // Offers in flight at the crash either got their ACK (from the old or the new
    // server) or a clear failure; every acknowledged one must be in the table.
    for k in 10..N {
        let (v, _) = b.expect_any(&verdicts, Duration::from_secs(10));
        if v == 0 {
            acked.push(format!("f{k}"));
        }
    }
    assert!(acked.len() >= 10);
    // A newcomer sees everything B offered before the crash, with B still online:
    // B's session survived the restart and its heartbeats go on.
    let mut d = srv.client("D", dir.path());
    let table: std::collections::BTreeSet<String> = d
        .list_json()
        .into_iter()
        .filter(|(_, o)| o == "B")
        .map(|(f, _)| f)
        .collect();
    let want: std::collections::BTreeSet<String> = acked.into_iter().collect();
    assert!(
        want.is_subset(&table),
        "lost: {:?}",
        want.difference(&table).collect::<Vec<_>>()
    );
    // The clients never had to register again, and they still work.
    c.send("request f7 B");
    c.expect_line("< f7 downloaded successfully! >");
    assert!(
        !b.transcript
            .iter()
            .any(|l| l.contains("Welcome") && l != ">>> [Welcome, You are registered.]")
    );
    assert_eq!(
        b.transcript
            .iter()
            .filter(|l| l.contains("[Welcome, You are registered.]"))
            .count(),
        1
    );
}

#[test]
fn clients_that_do_not_return_after_a_restart_go_offline() {
    // D, alive, must miss 10 heartbeats in a row to be dropped; B, dead, is dropped
    // `offline-after` after the restart.
    const HB: u64 = 200;
    const OFFLINE: u64 = 2000;
    let (hb, off) = (HB.to_string(), OFFLINE.to_string());
    let opts = ["--heartbeat-ms", &hb, "--offline-after-ms", &off];
    let srv = Server::start(&opts);
    let dir = tempfile::tempdir().unwrap();
    let mut b = srv.sharing("B", dir.path(), &[("f", b"f")]);
    b.kill9(); // B dies, and so does the server
    let srv = srv.crash_and_restart(&opts);
    let restarted = Instant::now(); // the new server is listening
    let mut d = srv.client("D", dir.path());
    let bound = offline_bound(HB, OFFLINE);
    while !d.list_json().is_empty() {
        assert!(
            restarted.elapsed() < bound,
            "B still online {:?} after the restart",
            restarted.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // D itself stayed online throughout.
    d.send("whoami");
    d.expect(">>> [You are D (online)");
}
