//! Names bound to keys, seen from the command line.

use std::time::{Duration, Instant};

use crate::util::{Proc, Server};

#[test]
fn a_crashed_client_takes_its_name_back_at_once_with_its_offers() {
    // Long liveness timeout: the server still thinks the crashed B is online.
    let srv = Server::start(&["--heartbeat-ms", "5000"]);
    let dir = tempfile::tempdir().unwrap();
    let mut b = srv.sharing("B", dir.path(), &[("a", b"alpha")]);
    let mut c = srv.client("C", dir.path());
    b.kill9();
    let start = Instant::now();
    let mut b2 = srv.client_raw("B", dir.path(), &[]);
    b2.expect_line(">>> [Welcome, You are registered.]");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "no waiting for a timeout"
    );
    b2.expect("[Restored 1 offer(s) of your previous session from ");
    // Its offer is served by the new process (once C's table has B's new port).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        c.send("request a B");
        // Until the new process has signed its record again, C refuses to download
        // (the record changed); then it downloads from the new port.
        let (ok, _) = c.expect_any(
            &[
                "< a downloaded successfully! >",
                "< Download of a from B failed",
                "[Not downloading from B: its record is not signed yet",
            ],
            Duration::from_secs(10),
        );
        if ok == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never served by the restarted B");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"alpha");
    // A clean exit leaves nothing to restore next time.
    b2.send("quit");
    assert_eq!(b2.wait_exit(Duration::from_secs(5)), 0);
    let mut b3 = srv.client("B", dir.path());
    // A restore is done before the first command: once whoami is answered, it would
    // have been said.
    b3.send("whoami");
    b3.expect(">>> [You are B (online)");
    assert!(
        !b3.transcript.iter().any(|l| l.contains("Restored")),
        "{:?}",
        b3.transcript
    );
}

#[test]
fn another_key_gets_the_seed_rejection_until_an_operator_releases_the_name() {
    let srv = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut b = srv.client("B", dir.path());
    b.send("whoami");
    let me = b.expect(">>> [You are B (online), key fingerprint ");
    b.send("quit");
    assert_eq!(b.wait_exit(Duration::from_secs(5)), 0);
    // Another key, even with B offline: refused.
    let other = dir.path().join("other.pk8");
    let other_s = other.to_str().unwrap();
    let mut thief = srv.client_raw("B", dir.path(), &["--identity", other_s]);
    thief.expect_line(">>> [Registration rejected: Client username already in use.]");
    assert_eq!(thief.wait_exit(Duration::from_secs(5)), 1);
    // The operator stops the server and releases the name.
    let Server {
        mut proc,
        dir: sdir,
        port,
    } = srv;
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(5)), 0);
    let db = sdir.path().join("fileapp-server.db");
    let mut rel = Proc::spawn(
        "release",
        &["release-name", "--db", db.to_str().unwrap(), "B"],
        dir.path(),
    );
    rel.expect_line("[Released B: anyone may register it again.]");
    assert_eq!(rel.wait_exit(Duration::from_secs(5)), 0);
    let srv = Server::start_in(sdir, port, &[]);
    let mut newb = srv.client_raw("B", dir.path(), &["--identity", other_s]);
    newb.expect_line(">>> [Welcome, You are registered.]");
    newb.send("whoami");
    let now = newb.expect(">>> [You are B (online), key fingerprint ");
    assert_ne!(me, now, "a different key");
}

#[test]
fn list_long_shows_size_hash_and_owner_key() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("s")).unwrap();
    std::fs::write(dir.path().join("s/data.bin"), vec![1u8; 12345]).unwrap();
    let mut b = srv.client("B", dir.path());
    b.send("setdir s");
    b.expect("Successfully set");
    b.send("offer data.bin");
    b.expect_line(">>> [Offer Message Received By Server]");
    let mut c = srv.client("C", dir.path());
    c.send("list -l");
    let header = c.expect("FILENAME");
    assert!(header.contains("SIZE") && header.contains("BLAKE3") && header.contains("OWNER KEY"));
    let row = c.expect("data.bin");
    let hash = blake3::hash(&[1u8; 12345]).to_hex().to_string();
    assert!(row.contains(" 12345 "), "{row}");
    assert!(row.contains(&hash[..16]), "{row}");
    b.send("whoami");
    let fp = b.expect("key fingerprint ");
    let fp = fp.rsplit(' ').next().unwrap().trim_end_matches(']');
    assert!(row.ends_with(fp), "{row} vs {fp}");
}

/// The fingerprint a server printed at start (`Server key: <fingerprint>`).
fn server_key(srv: &Server) -> String {
    srv.proc
        .transcript
        .iter()
        .find_map(|l| l.strip_prefix("Server key: "))
        .expect("the server prints its key")
        .to_string()
}

/// A client that registers, says nothing about the server's key (it is the pinned one),
/// and leaves cleanly.
fn connects_silently(srv: &Server, name: &str, dir: &std::path::Path) {
    let mut a = srv.client(name, dir);
    assert!(
        a.transcript.iter().all(|l| !l.contains("key")),
        "{:?}",
        a.transcript
    );
    a.close_stdin();
    assert_eq!(a.wait_exit(Duration::from_secs(10)), 0);
}

/// Kills `srv`, optionally with its key file gone, and starts it again on the same port
/// and database.
fn restart(srv: Server, new_key: bool) -> Server {
    let Server {
        mut proc,
        dir,
        port,
    } = srv;
    proc.kill9();
    if new_key {
        std::fs::remove_file(dir.path().join("fileapp-server.key")).unwrap();
    }
    Server::start_in(dir, port, &[])
}

#[test]
fn a_server_that_comes_back_with_another_key_is_refused_until_the_user_accepts_it() {
    let srv = Server::start(&[]);
    let first = server_key(&srv);
    let dir = tempfile::tempdir().unwrap();
    // First contact: pinned, and said once.
    let mut a = srv.client("A", dir.path());
    assert_eq!(
        a.transcript[0],
        format!(
            "[Server 127.0.0.1:{} has key {first}; pinned for later connections]",
            srv.port
        )
    );
    a.close_stdin();
    assert_eq!(a.wait_exit(Duration::from_secs(10)), 0);

    // The same server restarted keeps its key (from the file beside its database):
    // nothing is said about it.
    let srv = restart(srv, false);
    assert_eq!(server_key(&srv), first);
    connects_silently(&srv, "A", dir.path());

    // Another key on the same address: refused, both fingerprints and the way out said.
    let srv = restart(srv, true);
    let second = server_key(&srv);
    assert_ne!(first, second);
    let mut a = srv.client_raw("A", dir.path(), &[]);
    assert_eq!(a.wait_exit(Duration::from_secs(10)), 1);
    let line = a.transcript.join("\n");
    for needle in [&first[..], &second[..], "--server-key"] {
        assert!(line.contains(needle), "{needle} not in {line}");
    }
    assert!(!line.contains("Welcome"));

    // The user accepts it: registered, and pinned from now on.
    let mut a = srv.client_raw("A", dir.path(), &["--server-key", &second]);
    a.expect_line(">>> [Welcome, You are registered.]");
    assert!(a.transcript[0].contains(&format!("now pinned to key {second}")));
    a.close_stdin();
    assert_eq!(a.wait_exit(Duration::from_secs(10)), 0);
    connects_silently(&srv, "A", dir.path());

    // A wrong --server-key is refused like a changed key, first contact included.
    let other = tempfile::tempdir().unwrap();
    let mut b = srv.client_raw("B", other.path(), &["--server-key", &first]);
    assert_eq!(b.wait_exit(Duration::from_secs(10)), 1);
    assert!(b.transcript.join("\n").contains(&second));
}

/// Waits until `c`'s table (`list --json`) has `file` offered by `owner` and the row
/// satisfies `ok`; returns the row.
fn wait_row(
    c: &mut Proc,
    file: &str,
    owner: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + crate::util::WAIT;
    loop {
        let rows = c.list_json_rows();
        if let Some(r) = rows
            .into_iter()
            .find(|r| r["file"] == file && r["owner"] == owner && ok(r))
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no such row of {file} by {owner}",
            c.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops `srv` cleanly (SIGTERM) and returns its folder and port.
fn stop(srv: Server) -> (tempfile::TempDir, u16) {
    let Server {
        mut proc,
        dir,
        port,
    } = srv;
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(5)), 0);
    (dir, port)
}

#[test]
fn list_json_gives_each_owners_key_and_whether_its_record_verified() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let mut b = srv.sharing("B", dir.path(), &[("f", b"signed by B")]);
    b.send("whoami");
    let me = b.expect(">>> [You are B (online), key fingerprint ");
    let mut c = srv.client("C", dir.path());
    let row = wait_row(&mut c, "f", "B", |r| r["verified"] == true);
    let key = row["key"].as_str().expect("the owner's key, hex");
    assert_eq!(key.len(), 64);
    let bytes: [u8; 32] = hex::decode(key).unwrap().try_into().unwrap();
    assert!(
        me.contains(&fileapp::identity::fingerprint(&bytes)),
        "{me} vs {key}"
    );
}

#[test]
fn a_peer_that_comes_back_with_another_key_is_refused_until_trusted() {
    // Frequent heartbeats: C finds the restarted server quickly.
    let hb = ["--heartbeat-ms", "300"];
    let srv = Server::start(&hb);
    let (bdir, cdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut b = srv.sharing("B", bdir.path(), &[("f", b"from B")]);
    let mut c = srv.client("C", cdir.path());
    wait_row(&mut c, "f", "B", |r| r["verified"] == true);
    b.send("quit");
    assert_eq!(b.wait_exit(Duration::from_secs(5)), 0);
    // The operator frees B's name; someone registers it with another key.
    let (sdir, port) = stop(srv);
    let db = sdir.path().join("fileapp-server.db");
    let mut rel = Proc::spawn(
        "release",
        &["release-name", "--db", db.to_str().unwrap(), "B"],
        bdir.path(),
    );
    assert_eq!(rel.wait_exit(Duration::from_secs(5)), 0);
    let srv = Server::start_in(sdir, port, &hb);
    let other = bdir.path().join("other.pk8");
    std::fs::create_dir_all(bdir.path().join("s")).unwrap();
    let mut b2 = srv.client_raw("B", bdir.path(), &["--identity", other.to_str().unwrap()]);
    b2.expect_line(">>> [Welcome, You are registered.]");
    b2.send("setdir s");
    b2.expect("Successfully set");
    b2.send("offer f");
    b2.expect_line(">>> [Offer Message Received By Server]");
    // C, still running, knew B by the first key: warned, with both fingerprints.
    let warning = c.expect_within(
        "[Warning: the table binds B to key",
        Duration::from_secs(15),
    );
    assert!(warning.contains("trust B"), "{warning}");
    wait_row(&mut c, "f", "B", |r| r["verified"] == true);
    c.send("request f B");
    c.expect_line(
        "[Not downloading from B: its key changed; see the warning above, or type: trust B]",
    );
    assert!(!cdir.path().join("f").exists());
    c.send("trust B");
    c.expect("[B is now known by key ");
    c.send("request f B");
    c.expect("< f downloaded successfully! >");
    assert_eq!(std::fs::read(cdir.path().join("f")).unwrap(), b"from B");
    // And the new key is remembered: a new run of C is not warned again.
    c.close_stdin();
    assert_eq!(c.wait_exit(Duration::from_secs(10)), 0);
    let mut c2 = srv.client("C", cdir.path());
    wait_row(&mut c2, "f", "B", |r| r["verified"] == true);
    c2.expect_none("[Warning: the table binds B", Duration::from_millis(300));
}

#[test]
fn a_database_rewritten_behind_the_servers_back_is_caught_by_clients() {
    let srv = Server::start(&[]);
    let (bdir, cdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = srv.sharing("B", bdir.path(), &[("f", b"the real f")]);
    let (sdir, port) = stop(srv);
    // B goes too: back, it would register again and its fresh signed record would
    // replace the rewritten one before C looks.
    drop(b);
    // Someone with write access to the database changes f's hash.
    let db = sdir.path().join("fileapp-server.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n = conn
        .execute(
            "UPDATE files SET hash = ?1 WHERE owner = 'B'",
            [vec![7u8; 32]],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let srv = Server::start_in(sdir, port, &[]);
    let mut c = srv.client("C", cdir.path());
    let row = wait_row(&mut c, "f", "B", |_| true);
    assert_eq!(row["verified"], false, "{row}");
    c.send("request f B");
    c.expect("[Not downloading from B: the table's record of B does not match B's signature");
    assert!(!cdir.path().join("f").exists());
}
