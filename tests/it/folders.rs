//! Shared folders between real client processes: odd trees arrive byte-for-byte (contents,
//! sizes, modes, mtimes), symlinks and other non-files stay home, a changed or deleted
//! file stops the folder clearly, a killed requester resumes, and two folders download
//! at once.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::transfer::{owner_behind_proxy, requester};
use crate::util::{Proc, Server, WAIT, random_bytes};

/// Type, mode, size, mtime and contents of everything below `root`, by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, u64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mode = m.permissions().mode() & 0o777;
            if m.is_dir() {
                stack.push(e.path());
                out.insert(rel, ('d', mode, 0, 0, vec![]));
            } else if m.is_file() {
                let data = std::fs::read(e.path()).unwrap();
                out.insert(rel, ('f', mode, m.len(), m.mtime(), data));
            } else {
                out.insert(rel, ('o', mode, 0, 0, vec![]));
            }
        }
    }
    out
}

/// The odd tree: nested empty folders, 0-byte files, spaces, Unicode, leading dashes, a
/// long name, unusual modes, and a symlink pointing outside.
fn odd_tree(root: &Path) {
    let long = "l".repeat(200);
    for d in ["empty/deeper/deepest", "sub dir/ünï cödé", "-dash"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let files: Vec<(String, Vec<u8>)> = vec![
        ("zero".into(), vec![]),
        (
            "sub dir/ünï cödé/日本語 ファイル.txt".into(),
            b"unicode".to_vec(),
        ),
        ("-dash/--leading".into(), random_bytes(70_000, 3)),
        (format!("sub dir/{long}"), random_bytes(300_000, 4)),
        ("a b c".into(), random_bytes(16 << 10, 5)),
        ("big".into(), random_bytes(3 << 20, 6)),
    ];
    for (p, d) in &files {
        std::fs::write(root.join(p), d).unwrap();
    }
    let set = |p: &str, mode: u32| {
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set("-dash/--leading", 0o755);
    set("a b c", 0o600);
    set("empty/deeper", 0o750);
    std::os::unix::fs::symlink("/etc/passwd", root.join("outside")).unwrap();
}

fn owner_and_requester(srv: &Server, dir: &Path) -> (Proc, Proc) {
    let mut b = srv.client("B", dir);
    b.send("setdir share");
    b.expect("Successfully set");
    b.send("offer tree");
    let offered = b.expect(">>> [Offering tree/: ");
    assert!(offered.contains("left out 1 symlink"), "{offered}");
    b.expect_line(">>> [Offer Message Received By Server]");
    let c = requester(srv, "C", &dir.join("down"), &[], "B");
    (b, c)
}

fn setup_dirs(dir: &Path) {
    std::fs::create_dir_all(dir.join("share/tree")).unwrap();
    std::fs::create_dir_all(dir.join("down")).unwrap();
}

#[test]
fn an_odd_tree_arrives_identical_and_a_second_request_is_a_no_op() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    setup_dirs(dir.path());
    odd_tree(&dir.path().join("share/tree"));
    let (mut b, mut c) = owner_and_requester(&srv, dir.path());
    let rows = c.list_args("-l");
    assert!(rows.iter().any(|r| r.starts_with("tree/ ")), "{rows:?}");
    // `list` shows a folder with its file count and total size.
    let rows = c.list();
    let row = rows
        .iter()
        .find(|r| r.starts_with("tree/ "))
        .expect("the folder");
    assert!(row.starts_with("tree/ (6 files, "), "{row}");
    let json = c.list_json_rows();
    let tree = json
        .iter()
        .find(|r| r["file"] == "tree/")
        .expect("in --json");
    assert_eq!(tree["files"], 6, "{tree}");
    c.send("request tree/ B");
    c.expect_line("< Downloading tree/... >");
    let stats = c.expect("< tree/: ");
    assert!(stats.contains("6 files"), "{stats}");
    c.expect_line("< tree/ downloaded successfully! >");
    b.expect_line("< tree/ transferred successfully! >");
    let mut want = snapshot(&dir.path().join("share/tree"));
    want.remove("outside");
    let got = snapshot(&dir.path().join("down/tree"));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(got == want, "the trees differ");
    // Nothing left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("down"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".xdg-config" && n != ".xdg-data")
        .collect();
    assert_eq!(names, vec!["tree"]);

    c.send("request tree/ B");
    c.expect("< tree/ is already in ");
    c.expect_line("< tree/ downloaded successfully! >");

    // One file of the folder, saved under its own name.
    c.send("request tree/-dash/--leading B");
    c.expect_line("< tree/-dash/--leading downloaded successfully! >");
    let one = std::fs::read(dir.path().join("down/--leading")).unwrap();
    assert!(one == random_bytes(70_000, 3));
}

#[test]
fn a_file_changed_or_deleted_after_the_offer_stops_the_folder_clearly() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    setup_dirs(dir.path());
    let tree = dir.path().join("share/tree");
    odd_tree(&tree);
    let (mut b, mut c) = owner_and_requester(&srv, dir.path());
    std::fs::write(tree.join("a b c"), b"another content").unwrap();
    c.send("request tree/ B");
    c.expect_line(
        "< Download of tree/ from B failed: B stopped sending the folder: 'a b c' changed after the folder was offered (offer it again) >",
    );
    assert!(
        !dir.path().join("down/tree").exists(),
        "nothing under the final name"
    );
    // Offered again, then an empty file deleted.
    b.send("offer tree");
    b.expect_line(">>> [Offer Message Received By Server]");
    std::fs::remove_file(tree.join("zero")).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        c.send("request tree/ B");
        let (i, line) = c.expect_any(
            &[
                "was deleted after the folder was offered",
                "changed after the folder",
            ],
            WAIT,
        );
        if i == 0 {
            assert!(line.contains("'zero' was deleted"), "{line}");
            break;
        }
        // C's table still had the old hash; its next request sees the new one.
        assert!(Instant::now() < deadline, "{line}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.path().join("down/tree").exists());
}

/// A tree of three 4 MiB files among small ones, in `<dir>/bshare/tree`.
fn resumable_tree(root: &Path) {
    std::fs::create_dir_all(root.join("x/y")).unwrap();
    for i in 0..3u64 {
        std::fs::write(
            root.join(format!("x/big{i}")),
            random_bytes(4 << 20, 10 + i),
        )
        .unwrap();
    }
    for i in 0..40u64 {
        std::fs::write(
            root.join(format!("x/y/s{i:02}")),
            random_bytes(1000 + i as usize, i),
        )
        .unwrap();
    }
}

/// Bytes of regular files below `root`.
fn bytes_below(root: &Path) -> u64 {
    if !root.exists() {
        return 0;
    }
    snapshot(root).values().map(|v| v.2).sum()
}

#[test]
fn a_requester_killed_mid_tree_resumes_where_it_stopped() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    resumable_tree(&dir.path().join("bshare/tree"));
    let (b, proxy) = owner_behind_proxy(&srv, dir.path(), &["tree"], &[]);
    let down = dir.path().join("down");
    std::fs::create_dir(&down).unwrap();
    let mut c = requester(&srv, "C", &down, &[], "B");
    proxy.pause_after(6 << 20);
    c.send("request tree/ B");
    let staging = down.join(".tree.fileapp-partial");
    let deadline = Instant::now() + WAIT;
    while bytes_below(&staging) < 5 << 20 {
        assert!(Instant::now() < deadline, "nothing arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    c.kill9();
    assert!(!down.join("tree").exists(), "nothing under the final name");
    proxy.release();
    let mut c = requester(&srv, "C", &down, &[], "B");
    c.send("request tree/ B");
    let stats = c.expect("< tree/: ");
    assert!(
        stats.contains("43 files") && stats.contains("resumed"),
        "{stats}"
    );
    // Less than the whole tree came the second time.
    let moved: u64 = stats
        .split("resumed (")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(moved < 12 << 20, "{stats}");
    c.expect_line("< tree/ downloaded successfully! >");
    assert!(snapshot(&down.join("tree")) == snapshot(&dir.path().join("bshare/tree")));
    assert!(!staging.exists());
    drop((b, proxy));
}

#[test]
fn a_second_folder_downloads_while_the_first_is_held() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    resumable_tree(&dir.path().join("bshare/tree"));
    let small = dir.path().join("bshare/small/in");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("f"), random_bytes(50_000, 9)).unwrap();
    let (b, proxy) = owner_behind_proxy(&srv, dir.path(), &["tree", "small"], &[]);
    let down = dir.path().join("down");
    std::fs::create_dir(&down).unwrap();
    let mut c = requester(&srv, "C", &down, &[], "B");
    proxy.pause_after(2 << 20);
    c.send("request tree/ B small/ B");
    c.expect_line("< small/ downloaded successfully! >");
    assert!(!down.join("tree").exists());
    proxy.release();
    c.expect_line("< tree/ downloaded successfully! >");
    assert!(snapshot(&down.join("tree")) == snapshot(&dir.path().join("bshare/tree")));
    assert!(snapshot(&down.join("small")) == snapshot(&dir.path().join("bshare/small")));
    drop((b, proxy));
}

#[test]
fn in_plaintext_a_different_local_tree_is_kept_unless_forced() {
    let srv = Server::start(&["--db", ":memory:"]);
    let dir = tempfile::tempdir().unwrap();
    resumable_tree(&dir.path().join("share/tree"));
    std::fs::create_dir_all(dir.path().join("down")).unwrap();
    let mut b = srv.client_raw("B", dir.path(), &["--plaintext"]);
    b.expect_line(">>> [Welcome, You are registered.]");
    b.send("setdir share");
    b.expect("Successfully set");
    b.send("offer tree/");
    b.expect_line(">>> [Offer Message Received By Server]");
    let mut c = requester(&srv, "C", &dir.path().join("down"), &["--plaintext"], "B");
    // `tree` means the folder `tree/` when only the folder is offered.
    c.send("request tree B");
    c.expect_line("< tree/ downloaded successfully! >");
    let (src, got) = (dir.path().join("share/tree"), dir.path().join("down/tree"));
    assert!(snapshot(&got) == snapshot(&src));
    std::fs::write(got.join("x/y/s00"), b"mine").unwrap();
    c.send("request tree/ B");
    let line = c.expect("< Download of tree/ from B failed: ");
    assert!(line.contains("already exists and differs"), "{line}");
    assert_eq!(std::fs::read(got.join("x/y/s00")).unwrap(), b"mine");
    c.send("request --force tree/ B");
    c.expect_line("< tree/ downloaded successfully! >");
    assert!(snapshot(&got) == snapshot(&src));
}
