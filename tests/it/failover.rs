//! Client failover: two servers of one deployment (one PostgreSQL database, one server
//! key), a client given both, its server killed; a client given only the killed one is
//! marked offline by the survivor.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{Proc, Server, WAIT};

/// A server of the deployment: the shared database and key, short intervals. The
/// offline window is long next to the client's failover (a heartbeat plus a retry
/// budget, under a second here), so a client that moves in time is never shown offline.
fn deployment_server(url: &str, key: &Path, id: &str) -> Server {
    let key = key.to_str().unwrap();
    Server::start(&[
        "--db",
        url,
        "--key",
        key,
        "--server-id",
        id,
        "--heartbeat-ms",
        "200",
        "--offline-after-ms",
        "4000",
    ])
}

/// A client of `servers` (comma list) sharing `files` from `<cwd>/s`.
fn sharing(name: &str, servers: &str, cwd: &Path, files: &[(&str, &[u8])]) -> Proc {
    std::fs::create_dir_all(cwd.join("s")).unwrap();
    for (f, data) in files {
        std::fs::write(cwd.join("s").join(f), data).unwrap();
    }
    let args = [
        "client",
        "--name",
        name,
        "--server",
        servers,
        "--retry-ms",
        "100",
    ];
    let mut p = Proc::spawn(name, &args, cwd);
    p.expect_line(">>> [Welcome, You are registered.]");
    p.expect_line(">>> [Client table updated.]");
    p.send("setdir s");
    p.expect("Successfully set");
    let names: Vec<&str> = files.iter().map(|f| f.0).collect();
    p.send(&format!("offer {}", names.join(" ")));
    p.expect_line(">>> [Offer Message Received By Server]");
    p
}

fn has(rows: &[(String, String)], file: &str, owner: &str) -> bool {
    rows.iter().any(|(f, o)| f == file && o == owner)
}

#[test]
fn a_client_moves_to_the_other_server_and_keeps_its_session() {
    let Some(url) = fileapp::testkit::pg_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("deployment.key");
    let s1 = deployment_server(&url, &key, "s1");
    let s2 = deployment_server(&url, &key, "s2");
    let (ad, bd) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&ad).unwrap();
    std::fs::create_dir_all(&bd).unwrap();
    let list = format!("{},{}", s1.addr(), s2.addr());
    let mut a = sharing("A", &list, &ad, &[("foo", b"foo data")]);
    let mut b = sharing("B", &s2.addr(), &bd, &[("bar", b"bar data")]);
    // C knows s1 only: it cannot move, and the survivor must mark it offline.
    let cd = dir.path().join("c");
    std::fs::create_dir_all(&cd).unwrap();
    let c = sharing("C", &s1.addr(), &cd, &[("baz", b"baz data")]);
    let deadline = Instant::now() + WAIT;
    while !has(&b.list_json(), "foo", "A")
        || !has(&a.list_json(), "bar", "B")
        || !has(&b.list_json(), "baz", "C")
    {
        assert!(Instant::now() < deadline, "A and B never saw each other");
        std::thread::sleep(Duration::from_millis(50));
    }
    // s1 dies. A moves to s2; B, on s2, must see A's offer all along: through the move
    // and past the time s2 takes to judge s1 down and sweep its clients (3/4 of the
    // offline window after s1's last beat).
    let mut s1 = s1;
    s1.proc.kill9();
    let killed = Instant::now();
    let watch_until = killed + Duration::from_millis(4000 * 3 / 4 + 1500);
    let mut polls = 0;
    while Instant::now() < watch_until {
        let rows = b.list_json();
        assert!(
            has(&rows, "foo", "A"),
            "B saw A offline {:?} after s1 died: {rows:?}\n{}\n---\n{}",
            killed.elapsed(),
            b.transcript.join("\n"),
            a.transcript.join("\n")
        );
        polls += 1;
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(polls > 20, "B was polled {polls} times only");
    // By now (past s2's judgement of s1) C, which did not reappear, is offline at s2.
    let deadline = Instant::now() + Duration::from_secs(3);
    while has(&b.list_json(), "baz", "C") {
        assert!(Instant::now() < deadline, "C still listed after s1 died");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!c.transcript.join("\n").contains("moved to"));
    let moved = format!(
        ">>> [Server {} not responding; moved to {}]",
        s1.addr(),
        s2.addr()
    );
    a.expect_line(&moved);
    // Once: no second move, no "reconnecting" line, no restored line.
    a.send("list");
    a.expect("bar");
    let said = a.transcript.join("\n");
    assert_eq!(said.matches("moved to").count(), 1, "{said}");
    assert!(!said.contains("reconnecting"), "{said}");
    // Commands keep working both ways, through s2.
    a.send("request bar B");
    a.expect("bar downloaded successfully!");
    assert_eq!(std::fs::read(ad.join("bar")).unwrap(), b"bar data");
    b.send("request foo A");
    b.expect("foo downloaded successfully!");
    assert_eq!(std::fs::read(bd.join("foo")).unwrap(), b"foo data");
    a.send("offer foo");
    a.expect_line(">>> [Offer Message Received By Server]");
    drop((s2, a, b, c));
}
