//! Peer-to-peer transfers between real client processes: sizes, many requesters,
//! failures on both sides, and resuming after either side is killed.

use std::time::{Duration, Instant};

use crate::proxy::Proxy;
use crate::util::{Proc, Server, WAIT, random_bytes};

/// A server, an owner `B` sharing `files` from `<dir>/share`, and a requester `C` in
/// `<dir>/down`.
struct Setup {
    srv: Server,
    dir: tempfile::TempDir,
    b: Proc,
    c: Proc,
}

fn setup(files: &[(&str, Vec<u8>)]) -> Setup {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::create_dir(dir.path().join("down")).unwrap();
    for (name, data) in files {
        std::fs::write(share.join(name), data).unwrap();
    }
    let mut b = srv.client("B", dir.path());
    b.send("setdir share");
    b.expect("Successfully set");
    let names: Vec<&str> = files.iter().map(|f| f.0).collect();
    b.send(&format!("offer {}", names.join(" ")));
    b.expect_line(">>> [Offer Message Received By Server]");
    let c = srv.client("C", &dir.path().join("down"));
    Setup { srv, dir, b, c }
}

fn download(c: &mut Proc, file: &str, owner: &str) {
    c.send(&format!("request {file} {owner}"));
    c.expect_line(&format!("< Connection with client {owner} established. >"));
    c.expect_line(&format!("< Downloading {file}... >"));
    let stats = c.expect(&format!("< {file}: "));
    assert!(stats.contains("BLAKE3"), "{stats}");
    c.expect_line(&format!("< {file} downloaded successfully! >"));
    c.expect_line(&format!("< Connection with client {owner} closed >"));
}

#[test]
fn empty_one_byte_and_100_mib_files_arrive_byte_identical() {
    let big = random_bytes(100 << 20, 1);
    let mut s = setup(&[
        ("empty", vec![]),
        ("one", vec![0x42]),
        ("big.bin", big.clone()),
    ]);
    for (name, data) in [
        ("empty", &vec![]),
        ("one", &vec![0x42u8]),
        ("big.bin", &big),
    ] {
        download(&mut s.c, name, "B");
        s.b.expect_line("< Accepting connection request from 127.0.0.1. >");
        s.b.expect_line(&format!("< Transferring {name}... >"));
        s.b.expect_line(&format!("< {name} transferred successfully! >"));
        s.b.expect_line("< Connection with client C closed >");
        let got = std::fs::read(s.dir.path().join("down").join(name)).unwrap();
        assert!(got == *data, "{name} differs");
    }
    // The hash printed is the file's BLAKE3.
    let line =
        s.c.transcript
            .iter()
            .find(|l| l.starts_with("< big.bin: "))
            .unwrap()
            .clone();
    assert!(
        line.contains(&blake3::hash(&big).to_hex().to_string()),
        "{line}"
    );
    assert!(line.contains(&format!("{} bytes", 100 << 20)), "{line}");
    // No partial files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path().join("down"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn binary_content_with_marker_like_bytes_survives() {
    let mut data = b"NEXTNEXT\n\r\n\0\xff\xfeEOF".repeat(1000);
    data.extend(random_bytes(4096, 9));
    let mut s = setup(&[("weird.dat", data.clone())]);
    download(&mut s.c, "weird.dat", "B");
    assert_eq!(
        std::fs::read(s.dir.path().join("down/weird.dat")).unwrap(),
        data
    );
}

#[test]
fn several_requesters_and_several_files_at_once() {
    let f1 = random_bytes(8 << 20, 2);
    let f2 = random_bytes(3 << 20, 3);
    let mut s = setup(&[("f1", f1.clone()), ("f2", f2.clone())]);
    let mut others: Vec<(Proc, tempfile::TempDir)> = (0..3)
        .map(|i| {
            let d = tempfile::tempdir().unwrap();
            (s.srv.client(&format!("R{i}"), d.path()), d)
        })
        .collect();
    // C downloads both files in one command; three others fetch f1 at the same time.
    s.c.send("request f1 B f2 B");
    for (p, _) in &mut others {
        p.send("request f1 B");
    }
    for _ in 0..2 {
        s.c.expect(" downloaded successfully! >");
    }
    for (p, d) in &mut others {
        p.expect_line("< f1 downloaded successfully! >");
        assert!(std::fs::read(d.path().join("f1")).unwrap() == f1);
    }
    assert!(std::fs::read(s.dir.path().join("down/f1")).unwrap() == f1);
    assert!(std::fs::read(s.dir.path().join("down/f2")).unwrap() == f2);
}

#[test]
fn existing_file_is_not_overwritten_unless_forced() {
    let mut s = setup(&[("doc", b"from B".to_vec())]);
    let dest = s.dir.path().join("down/doc");
    std::fs::write(&dest, b"mine").unwrap();
    s.c.send("request doc B");
    s.c.expect("< Download of doc from B failed:");
    assert_eq!(std::fs::read(&dest).unwrap(), b"mine");
    s.c.send("request --force doc B");
    s.c.expect_line("< doc downloaded successfully! >");
    assert_eq!(std::fs::read(&dest).unwrap(), b"from B");
    // Identical content: nothing to transfer, and it says so.
    s.c.send("request doc B");
    s.c.expect("identical");
}

#[test]
fn failures_are_reported_on_both_sides_and_nobody_dies() {
    let mut s = setup(&[
        ("gone", b"soon deleted".to_vec()),
        ("stays", b"ok".to_vec()),
    ]);
    std::fs::remove_file(s.dir.path().join("share/gone")).unwrap();
    s.c.send("request gone B");
    s.c.expect("< Download of gone from B failed:");
    s.b.expect("gone");
    assert!(!s.dir.path().join("down/gone").exists());
    // Both still work.
    download(&mut s.c, "stays", "B");
    // The owner vanishes without a word: the requester reports it and carries on.
    let mut b = std::mem::replace(&mut s.b, s.srv.client("X", s.dir.path()));
    b.kill9();
    s.c.send("request stays B");
    s.c.expect_any(
        &["< Download of stays from B failed:", "[Invalid Request]"],
        Duration::from_secs(15),
    );
    s.c.send("help");
    s.c.expect("request");
}

/// Starts a download, holds it mid-way (the proxy stops after 4 MiB of 32), kills
/// `victim` ("owner" or "requester") while some but not all of the file is on disk,
/// brings it back, and checks the next request resumes from the partial and ends
/// byte-identical.
fn resume_after_killing(victim: &str) {
    let big = random_bytes(32 << 20, 4);
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let (mut b, mut proxy) = proxied_owner(&srv, dir.path(), &[("big", &big)], &[]);
    let down = dir.path().join("down");
    std::fs::create_dir(&down).unwrap();
    let mut c = requester(&srv, "C", &down, &[], "B");
    proxy.pause_after(4 << 20);
    c.send("request big B");
    let partial = down.join(".big.fileapp-partial");
    wait_for_bytes(&partial);
    if victim == "owner" {
        b.kill9();
        // What the dead owner had sent still arrives, then the connection ends early.
        proxy.release();
        c.expect("< Download of big from B failed: ");
        assert!(!down.join("big").exists(), "nothing under the final name");
        let old_port = owner_port(&mut c);
        // Same machine, same key: it takes its name back at once, on a new port.
        (b, proxy) = owner_behind_proxy(&srv, dir.path(), &["big"], &[]);
        let deadline = Instant::now() + WAIT;
        while owner_port(&mut c) == old_port {
            assert!(Instant::now() < deadline, "C never saw B's new port");
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        c.kill9();
        assert!(!down.join("big").exists(), "nothing under the final name");
        proxy.release();
        c = requester(&srv, "C", &down, &[], "B");
    }
    let kept = std::fs::metadata(&partial).expect("partial kept").len();
    assert!(
        kept > 0 && kept < big.len() as u64,
        "partial of {kept} bytes"
    );
    c.send("request big B");
    let line = c.expect("< Resuming big from byte ");
    assert!(!line.contains("from byte 0 "), "{line}");
    c.expect_line("< big downloaded successfully! >");
    assert!(std::fs::read(down.join("big")).unwrap() == big);
    assert!(!partial.exists());
    drop((b, proxy));
}

/// B's TCP port in `c`'s table.
fn owner_port(c: &mut Proc) -> u64 {
    c.list_json_rows()
        .iter()
        .find(|r| r["owner"] == "B")
        .and_then(|r| r["tcp_port"].as_u64())
        .unwrap_or(0)
}

#[test]
fn owner_killed_mid_transfer_then_the_download_resumes_byte_identical() {
    resume_after_killing("owner");
}

#[test]
fn requester_killed_mid_transfer_then_the_download_resumes_byte_identical() {
    resume_after_killing("requester");
}

/// An owner `B` sharing `files` from `<dir>/bshare`, reached through a proxy: B
/// advertises `::1`, so requesters connect to `[::1]:P`, where the proxy listens and
/// forwards to B's `127.0.0.1:P`.
fn proxied_owner(
    srv: &Server,
    dir: &std::path::Path,
    files: &[(&str, &[u8])],
    extra: &[&str],
) -> (Proc, Proxy) {
    let share = dir.join("bshare");
    std::fs::create_dir_all(&share).unwrap();
    for (f, data) in files {
        std::fs::write(share.join(f), data).unwrap();
    }
    let names: Vec<&str> = files.iter().map(|f| f.0).collect();
    owner_behind_proxy(srv, dir, &names, extra)
}

/// Starts `B` offering `names` (already in `<dir>/bshare`) behind a new proxy, as
/// [`proxied_owner`] does.
pub(crate) fn owner_behind_proxy(
    srv: &Server,
    dir: &std::path::Path,
    names: &[&str],
    extra: &[&str],
) -> (Proc, Proxy) {
    let mut args = vec!["--advertise-ip", "::1"];
    args.extend_from_slice(extra);
    let mut b = srv.client_raw("B", dir, &args);
    b.expect_line(">>> [Welcome, You are registered.]");
    b.send("setdir bshare");
    b.expect("Successfully set");
    b.send(&format!("offer {}", names.join(" ")));
    b.expect_line(">>> [Offer Message Received By Server]");
    let port = b
        .list_json_rows()
        .iter()
        .find(|r| r["owner"] == "B")
        .and_then(|r| r["tcp_port"].as_u64())
        .expect("B's row in its own table") as u16;
    let proxy = Proxy::start(
        format!("[::1]:{port}").parse().unwrap(),
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    (b, proxy)
}

/// Waits until `path` holds at least one byte.
fn wait_for_bytes(path: &std::path::Path) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = std::fs::metadata(path).map_or(0, |m| m.len());
        if n > 0 {
            return n;
        }
        assert!(Instant::now() < deadline, "no byte in {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A client that sees `owner`'s offers in its table.
pub(crate) fn requester(
    srv: &Server,
    name: &str,
    cwd: &std::path::Path,
    extra: &[&str],
    owner: &str,
) -> Proc {
    let mut c = srv.client_raw(name, cwd, extra);
    c.expect_line(">>> [Welcome, You are registered.]");
    let deadline = Instant::now() + WAIT;
    while !c.list_json().iter().any(|(_, o)| o == owner) {
        assert!(
            Instant::now() < deadline,
            "{name} never saw {owner}'s offers"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c
}

#[test]
fn a_corrupt_resumed_prefix_fails_the_hash_check_and_nothing_is_published() {
    let data = random_bytes(4 << 20, 21);
    let mut s = setup(&[("big", data.clone())]);
    let down = s.dir.path().join("down");
    // A partial of the first 1 MiB, as an interrupted download leaves it (documented
    // sidecar), but with one byte altered on disk.
    let mut prefix = data[..1 << 20].to_vec();
    prefix[4321] ^= 0x01;
    std::fs::write(down.join(".big.fileapp-partial"), &prefix).unwrap();
    std::fs::write(
        down.join(".big.fileapp-partial.meta"),
        format!(
            "fileapp-partial 1\nsize {}\nhash {}\n",
            data.len(),
            blake3::hash(&data).to_hex()
        ),
    )
    .unwrap();
    s.c.send("request big B");
    s.c.expect(&format!("< Resuming big from byte {} ", 1 << 20));
    let line = s.c.expect("< Download of big from B failed: ");
    assert!(line.contains("hash mismatch"), "{line}");
    assert!(!down.join("big").exists(), "nothing under the final name");
    assert!(
        !down.join(".big.fileapp-partial").exists(),
        "the bad partial is dropped"
    );
    // The next request starts over and gets the owner's bytes.
    s.c.send("request big B");
    s.c.expect_line("< big downloaded successfully! >");
    assert!(std::fs::read(down.join("big")).unwrap() == data);
}

#[test]
fn a_byte_flipped_on_a_plaintext_connection_is_detected() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2 << 20, 22);
    let (_b, proxy) = proxied_owner(&srv, dir.path(), &[("p.bin", &data)], &["--plaintext"]);
    let down = dir.path().join("down");
    std::fs::create_dir(&down).unwrap();
    let mut c = requester(&srv, "C", &down, &["--plaintext"], "B");
    // Owner -> requester: the mode byte, the 56-byte Ok response, then the data: flip a
    // byte well inside the data.
    proxy.flip_byte_at(Some(1 + 56 + 100_000));
    c.send("request p.bin B");
    let line = c.expect("< Download of p.bin from B failed: ");
    assert!(line.contains("hash mismatch"), "{line}");
    assert!(!down.join("p.bin").exists(), "nothing under the final name");
    assert!(proxy.accepted() >= 1, "the download went through the proxy");
    // Without the flip the same path delivers the file intact.
    proxy.flip_byte_at(None);
    c.send("request p.bin B");
    c.expect_line("< p.bin downloaded successfully! >");
    assert!(std::fs::read(down.join("p.bin")).unwrap() == data);
}

#[test]
fn a_file_changing_while_it_is_sent_fails_on_both_sides() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    const SIZE: usize = 32 << 20;
    let data = random_bytes(SIZE, 23);
    let (mut b, proxy) = proxied_owner(&srv, dir.path(), &[("f.bin", &data)], &[]);
    let down = dir.path().join("down");
    std::fs::create_dir(&down).unwrap();
    let mut c = requester(&srv, "C", &down, &[], "B");
    // Hold the transfer after 4 MiB; the owner has then read at most that plus its
    // buffers and the sockets' (a few MiB), far from the file's last MiB.
    proxy.pause_after(4 << 20);
    c.send("request f.bin B");
    wait_for_bytes(&down.join(".f.bin.fileapp-partial"));
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("bshare/f.bin"))
            .unwrap();
        f.seek(SeekFrom::Start((SIZE - (1 << 20)) as u64)).unwrap();
        f.write_all(&random_bytes(1 << 20, 24)).unwrap();
    }
    proxy.release();
    let line = c.expect("< Download of f.bin from B failed: ");
    assert!(line.contains("hash mismatch"), "{line}");
    b.expect("the file changed while it was being sent");
    assert!(!down.join("f.bin").exists(), "nothing under the final name");
}

#[test]
fn past_the_per_address_limit_the_owner_answers_busy() {
    let mut s = setup(&[("f", b"small".to_vec())]);
    let port =
        s.c.list_json_rows()
            .iter()
            .find(|r| r["owner"] == "B")
            .and_then(|r| r["tcp_port"].as_u64())
            .unwrap() as u16;
    // The documented limit: 8 connections at once from one address (64 in all). Each
    // of ours gets the provider's mode byte (a slot) and then says nothing; the
    // provider's 10 s header timeout frees them, far longer than the rest of this takes.
    const LIMIT: usize = 8;
    let start = Instant::now();
    let mut held = Vec::new();
    for i in 0..LIMIT {
        let mut t = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        t.set_read_timeout(Some(WAIT)).unwrap();
        let mut b = [0u8; 1];
        std::io::Read::read_exact(&mut t, &mut b).unwrap();
        assert_eq!(b[0], 0xF1, "connection {i} got a slot (TLS mode byte)");
        held.push(t);
    }
    let mut extra = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    extra.set_read_timeout(Some(WAIT)).unwrap();
    let mut b = [0u8; 1];
    std::io::Read::read_exact(&mut extra, &mut b).unwrap();
    assert_eq!(b[0], 0xFB, "connection 9: Busy");
    // C downloads from the same address: Busy too.
    s.c.send("request f B");
    s.c.expect_line(
        "< Download of f from B failed: B refused the request: too many transfers in progress, try later >",
    );
    s.b.expect_line(
        "< Refused connection from 127.0.0.1: too many connections from this address >",
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "slower than the header timeout: the slots may have been freed meanwhile"
    );
    assert!(!s.dir.path().join("down/f").exists());
    // Slots freed: served again.
    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        s.c.send("request f B");
        let (ok, l) = s.c.expect_any(
            &[
                "< f downloaded successfully! >",
                "< Download of f from B failed: ",
            ],
            WAIT,
        );
        if ok == 0 {
            break;
        }
        assert!(l.contains("too many transfers"), "{l}");
        assert!(
            Instant::now() < deadline,
            "never served after the slots were freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read(s.dir.path().join("down/f")).unwrap(),
        b"small"
    );
}

#[test]
fn two_downloads_of_one_file_into_one_folder_the_second_is_refused_by_the_lock() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(16 << 20, 25);
    let (_b, proxy) = proxied_owner(&srv, dir.path(), &[("same.bin", &data)], &[]);
    let down = dir.path().join("down");
    std::fs::create_dir(&down).unwrap();
    let down_s = down.to_str().unwrap();
    let mut c1 = requester(&srv, "C1", dir.path(), &["--download-dir", down_s], "B");
    let mut c2 = requester(&srv, "C2", dir.path(), &["--download-dir", down_s], "B");
    // C1's download is held mid-way (after 4 MiB), holding the partial's lock.
    proxy.pause_after(4 << 20);
    c1.send("request same.bin B");
    wait_for_bytes(&down.join(".same.bin.fileapp-partial"));
    c2.send("request same.bin B");
    let line = c2.expect("< Download of same.bin from B failed: ");
    assert!(
        line.contains("another download of") && line.contains("is in progress"),
        "{line}"
    );
    // The first one is untouched by that and completes.
    proxy.release();
    c1.expect_line("< same.bin downloaded successfully! >");
    assert!(std::fs::read(down.join("same.bin")).unwrap() == data);
}
