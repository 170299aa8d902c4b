use std::os::unix::fs::PermissionsExt;

use super::offer::prepare_folder;
use super::open_beneath;
use crate::transfer::library::OfferError;

fn tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("t");
    std::fs::create_dir_all(t.join("sub/empty")).unwrap();
    std::fs::write(t.join("sub/a"), b"alpha").unwrap();
    std::fs::write(t.join("zero"), b"").unwrap();
    std::fs::set_permissions(t.join("sub/a"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.join("out")).unwrap();
    std::os::unix::fs::symlink("sub", t.join("in")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        t.join("fifo").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    d
}

#[test]
fn a_folder_offer_lists_folders_and_files_sorted_and_leaves_out_the_rest() {
    let d = tree();
    let f = prepare_folder(d.path(), "t", &|_| {}).unwrap();
    let paths: Vec<&str> = f.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["sub", "sub/a", "sub/empty", "zero"]);
    assert_eq!(f.skipped, 3, "two symlinks and a FIFO");
    assert_eq!(
        (f.header.entries, f.header.files, f.header.bytes),
        (4, 2, 5)
    );
    let a = &f.entries[1];
    assert_eq!(
        (a.mode, a.size, a.hash),
        (0o640, 5, *blake3::hash(b"alpha").as_bytes())
    );
    assert_eq!(f.name, "t/");
    // The same tree hashes the same; any change to a file changes the folder's hash.
    assert_eq!(prepare_folder(d.path(), "t", &|_| {}).unwrap().hash, f.hash);
    std::fs::write(d.path().join("t/zero"), b"!").unwrap();
    assert_ne!(prepare_folder(d.path(), "t", &|_| {}).unwrap().hash, f.hash);
}

#[test]
fn names_a_receiver_cannot_hold_and_symlinked_folders_are_not_offered() {
    let d = tree();
    std::fs::write(d.path().join("t/sub/bad\u{1}name"), b"x").unwrap();
    let e = prepare_folder(d.path(), "t", &|_| {}).unwrap_err();
    assert!(matches!(e, OfferError::TreeName(..)), "{e}");
    std::os::unix::fs::symlink(d.path().join("t"), d.path().join("link")).unwrap();
    let e = prepare_folder(d.path(), "link", &|_| {}).unwrap_err();
    assert!(matches!(e, OfferError::NotAFile(_)), "{e}");
}

#[test]
fn nothing_outside_the_folder_opens() {
    let d = tree();
    let root = std::fs::File::open(d.path().join("t")).unwrap();
    assert!(open_beneath(&root, "sub/a", false).is_ok());
    for p in ["out", "in/a", "../t/zero", "/etc/passwd"] {
        assert!(open_beneath(&root, p, false).is_err(), "{p}");
    }
}
