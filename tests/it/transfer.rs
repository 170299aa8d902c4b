//! Peer-to-peer transfers between real client processes: sizes, many requesters,
//! failures on both sides, and resuming after either side is killed.

use std::time::{Duration, Instant};

use crate::util::{Proc, Server, random_bytes};

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

/// Starts a 400 MiB download and kills `victim` ("owner" or "requester") once some but
/// not all of it is on disk. Returns false if the transfer finished first.
fn interrupt(s: &mut Setup, victim: &str) -> bool {
    let partial = s.dir.path().join("down/.big.fileapp-partial");
    s.c.send("request big B");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if len > 0 {
            break;
        }
        if s.dir.path().join("down/big").exists() || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    match victim {
        "owner" => s.b.kill9(),
        _ => s.c.kill9(),
    }
    !s.dir.path().join("down/big").exists()
}

fn restart(s: &mut Setup, who: &str) {
    let path = s.dir.path().to_path_buf();
    if who == "owner" {
        // Same machine, same key: it takes its name back at once.
        let mut b = s.srv.client("B", &path);
        b.send("setdir share");
        b.expect("Successfully set");
        b.send("offer big");
        b.expect_line(">>> [Offer Message Received By Server]");
        s.b = b;
        s.c.expect(">>> [Client table updated.]");
    } else {
        s.c = s.srv.client("C", &path.join("down"));
    }
}

fn resume_after_killing(victim: &str) {
    let big = random_bytes(400 << 20, 4);
    for _attempt in 0..3 {
        let mut s = setup(&[("big", big.clone())]);
        if !interrupt(&mut s, victim) {
            continue; // finished before we could interrupt it: try again
        }
        assert!(
            !s.dir.path().join("down/big").exists(),
            "nothing under the final name"
        );
        restart(&mut s, victim);
        s.c.send("request big B");
        let line = s.c.expect("< Resuming big from byte ");
        assert!(!line.contains("from byte 0 "), "{line}");
        s.c.expect_line("< big downloaded successfully! >");
        assert!(std::fs::read(s.dir.path().join("down/big")).unwrap() == big);
        assert!(!s.dir.path().join("down/.big.fileapp-partial").exists());
        return;
    }
    panic!("could not interrupt a 400 MiB transfer in 3 attempts");
}

#[test]
fn owner_killed_mid_transfer_then_the_download_resumes_byte_identical() {
    resume_after_killing("owner");
}

#[test]
fn requester_killed_mid_transfer_then_the_download_resumes_byte_identical() {
    resume_after_killing("requester");
}
