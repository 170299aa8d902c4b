//! The cache as serving uses it: lookups need an offer and a folder, and a hash stored
//! after an unoffer does not bring the name back.

use super::*;

fn library_with(name: &str) -> (tempfile::TempDir, Library) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), b"contents").unwrap();
    let mut lib = Library::default();
    lib.set_dir(dir.path().to_path_buf());
    lib.offer(name).unwrap();
    (dir, lib)
}

#[test]
fn lookup_needs_an_offered_name_and_a_folder() {
    let (dir, lib) = library_with("a.txt");
    let (found, cached) = lib.lookup("a.txt").unwrap();
    assert_eq!(found, std::fs::canonicalize(dir.path()).unwrap());
    let (stamp, hash) = cached.unwrap();
    assert_eq!(stamp.size, 8);
    assert_eq!(hash, *blake3::hash(b"contents").as_bytes());
    assert!(lib.lookup("b.txt").is_none());

    let mut no_folder = Library::default();
    no_folder.offered.insert("a.txt".into());
    assert!(no_folder.lookup("a.txt").is_none());
}

#[test]
fn a_hash_stored_after_an_unoffer_is_dropped() {
    let (_dir, mut lib) = library_with("a.txt");
    let (_, cached) = lib.lookup("a.txt").unwrap();
    let (stamp, hash) = cached.unwrap();
    assert!(lib.unoffer("a.txt"));
    lib.store_hash("a.txt", stamp, hash);
    assert!(lib.lookup("a.txt").is_none());
    assert!(lib.file_info("a.txt").is_none());
    assert!(
        lib.hashes.is_empty(),
        "the unoffered name came back into the cache"
    );
}

#[test]
fn a_stored_hash_replaces_the_cached_one() {
    let (_dir, mut lib) = library_with("a.txt");
    let (_, cached) = lib.lookup("a.txt").unwrap();
    let (stamp, _) = cached.unwrap();
    lib.store_hash("a.txt", stamp, [7; 32]);
    assert_eq!(lib.file_info("a.txt").unwrap().hash, [7; 32]);
}
