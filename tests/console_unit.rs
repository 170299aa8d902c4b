//! Tab completion without a terminal: each context of the command language.

use std::fs;

use fileapp::console::{
    CompletionData, FolderListing, ListingWant, candidates, candidates_in, listing_wanted,
};

fn data() -> CompletionData {
    let mut d = CompletionData {
        commands: fileapp::client::render::command_names(),
        ..CompletionData::default()
    };
    d.table
        .insert("foo.txt".into(), vec!["B".into(), "Bob".into(), "C".into()]);
    d.table.insert("food".into(), vec!["D".into()]);
    d.table.insert("my file".into(), vec!["E".into()]);
    d.table.insert("bar".into(), vec!["B".into()]);
    d
}

fn words(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn command_names_at_first_word() {
    let d = data();
    assert_eq!(candidates("he", 2, &d), (0, words(&["help"])));
    assert_eq!(candidates("  re", 4, &d), (2, words(&["reg", "request"])));
    assert_eq!(
        candidates("", 0, &d).1.len(),
        fileapp::client::command::COMMANDS.len()
    );
    assert_eq!(candidates("zz", 2, &d), (0, vec![]));
    // Cursor in the middle of the line: only the text left of it counts.
    assert_eq!(candidates("he foo", 2, &d), (0, words(&["help"])));
}

#[test]
fn help_completes_command_names_once() {
    let d = data();
    assert_eq!(candidates("help of", 7, &d), (5, words(&["offer"])));
    assert_eq!(candidates("help offer ", 11, &d), (11, vec![]));
}

#[test]
fn offer_lists_regular_files_of_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("alpha.txt"), b"a").unwrap();
    fs::write(tmp.path().join("alps"), b"a").unwrap();
    fs::write(tmp.path().join("beta"), b"b").unwrap();
    fs::write(tmp.path().join("with space"), b"b").unwrap();
    fs::write(tmp.path().join(".hidden"), b"h").unwrap();
    fs::create_dir(tmp.path().join("alsodir")).unwrap();
    let mut d = data();
    d.dir = Some(tmp.path().to_path_buf());

    assert_eq!(
        candidates("offer al", 8, &d),
        (6, words(&["alpha.txt", "alps"]))
    );
    assert_eq!(
        candidates("offer ", 6, &d),
        (6, words(&["\"with space\"", "alpha.txt", "alps", "beta"]))
    );
    // Names already on the line are not offered again.
    assert_eq!(
        candidates("offer alps al", 13, &d),
        (11, words(&["alpha.txt"]))
    );
    // Quoted, half-typed word.
    assert_eq!(
        candidates("offer \"with s", 13, &d),
        (6, words(&["\"with space\""]))
    );
    assert_eq!(candidates("offer .h", 8, &d), (6, words(&[".hidden"])));
    // No folder set yet: nothing to offer.
    d.dir = None;
    assert_eq!(candidates("offer al", 8, &d), (6, vec![]));
}

#[test]
fn request_completes_files_then_owners() {
    let d = data();
    assert_eq!(
        candidates("request fo", 10, &d),
        (8, words(&["foo.txt", "food"]))
    );
    assert_eq!(
        candidates("request foo.txt ", 16, &d),
        (16, words(&["B", "Bob", "C"]))
    );
    assert_eq!(
        candidates("request foo.txt B", 17, &d),
        (16, words(&["B", "Bob"]))
    );
    // Next pair: a file again, then its owners.
    assert_eq!(
        candidates("request foo.txt B ba", 20, &d),
        (18, words(&["bar"]))
    );
    assert_eq!(
        candidates("request foo.txt B food ", 23, &d),
        (23, words(&["D"]))
    );
    // --force does not shift the positions.
    assert_eq!(
        candidates("request --force food ", 21, &d),
        (21, words(&["D"]))
    );
    assert_eq!(candidates("request --f", 11, &d), (8, words(&["--force"])));
    // Names with spaces come quoted, and their owners are found through the quotes.
    assert_eq!(
        candidates("request my", 10, &d),
        (8, words(&["\"my file\""]))
    );
    assert_eq!(
        candidates("request 'my file' ", 18, &d),
        (18, words(&["E"]))
    );
    // Unknown file: no owners.
    assert_eq!(candidates("request nope ", 13, &d), (13, vec![]));
}

#[test]
fn setdir_completes_folders_like_a_shell() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("files/inner")).unwrap();
    fs::create_dir(tmp.path().join("fixtures")).unwrap();
    fs::create_dir(tmp.path().join("other dir")).unwrap();
    fs::write(tmp.path().join("fileish"), b"x").unwrap();
    let d = data();
    let cwd = tmp.path();

    // Relative to the working folder; plain files are left out.
    assert_eq!(
        candidates_in("setdir fi", 9, &d, cwd),
        (7, words(&["files/", "fixtures/"]))
    );
    assert_eq!(
        candidates_in("setdir files/", 13, &d, cwd),
        (7, words(&["files/inner/"]))
    );
    assert_eq!(
        candidates_in("setdir oth", 10, &d, cwd),
        (7, words(&["\"other dir/\""]))
    );
    // Absolute paths.
    let abs = format!("setdir {}/fil", tmp.path().display());
    let want = format!("{}/files/", tmp.path().display());
    assert_eq!(candidates(&abs, abs.len(), &d), (7, vec![want]));
    // Only one argument.
    assert_eq!(candidates_in("setdir files ", 13, &d, cwd), (13, vec![]));
}

#[test]
fn other_commands_and_odd_input() {
    let d = data();
    assert_eq!(candidates("list fo", 7, &d), (5, vec![]));
    assert_eq!(candidates("frob x", 6, &d), (5, vec![]));
    assert_eq!(candidates("offer \"", 7, &d), (6, vec![]));
    for line in ["", "\"", "'a b", "request \"\" ", "é", "setdir /\u{0}"] {
        for pos in 0..=line.len() + 1 {
            let _ = candidates(line, pos, &d);
        }
    }
}

#[test]
fn handles_are_shareable_across_tasks() {
    // The driver prints from many tasks and moves bars into download tasks.
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync::<fileapp::console::Console>();
    send::<fileapp::console::Progress>();
}

proptest::proptest! {
    #[test]
    fn completion_never_panics(line in "(setdir |offer |request |help |)[a-z'\" /.é-]{0,20}", pos in 0usize..40) {
        let _ = candidates(&line, pos, &data());
    }
}

#[test]
fn command_names_are_the_ones_the_console_was_given() {
    let d = CompletionData {
        commands: words(&["alpha", "alps", "beta"]),
        ..CompletionData::default()
    };
    assert_eq!(candidates("al", 2, &d), (0, words(&["alpha", "alps"])));
    assert_eq!(candidates("help b", 6, &d), (5, words(&["beta"])));
    assert_eq!(candidates("he", 2, &d), (0, vec![]), "no built-in names");
    assert_eq!(
        candidates("", 0, &CompletionData::default()).1,
        Vec::<String>::new()
    );
}

/// The table of `data()` plus folder `photos/` offered by B (and `two/` by B and C),
/// with B's listing of `photos/` cached for hash `[1; 32]`.
fn with_folders() -> CompletionData {
    let mut d = data();
    d.table.insert("photos/".into(), vec!["B".into()]);
    d.table.insert("two/".into(), vec!["B".into(), "C".into()]);
    for (o, f) in [("B", "photos/"), ("B", "two/"), ("C", "two/")] {
        d.folder_hashes.insert((o.into(), f.into()), [1; 32]);
    }
    let paths = [
        "2024-notes",
        "2024/",
        "2024/a.jpg",
        "2024/album/",
        "2024/album/x.jpg",
        "2024/b.jpg",
        "my dir/",
        "my dir/c d.txt",
    ];
    d.folders.insert(
        ("B".into(), "photos/".into()),
        FolderListing {
            hash: [1; 32],
            paths: words(&paths),
        },
    );
    d.folders.insert(
        ("C".into(), "two/".into()),
        FolderListing {
            hash: [1; 32],
            paths: words(&["c-only"]),
        },
    );
    d
}

#[test]
fn request_completes_inside_a_folder_one_level_at_a_time() {
    let d = with_folders();
    let line = "request photos/";
    assert_eq!(
        candidates(line, line.len(), &d),
        (
            8,
            words(&["\"photos/my dir/\"", "photos/2024-notes", "photos/2024/"])
        )
    );
    let line = "request photos/2024/";
    assert_eq!(
        candidates(line, line.len(), &d),
        (
            8,
            words(&[
                "photos/2024/a.jpg",
                "photos/2024/album/",
                "photos/2024/b.jpg"
            ])
        )
    );
    let line = "request photos/2024/a";
    assert_eq!(
        candidates(line, line.len(), &d),
        (8, words(&["photos/2024/a.jpg", "photos/2024/album/"]))
    );
    // Quoted names are read through their quotes, and come back quoted.
    let line = "request \"photos/my dir/c";
    assert_eq!(
        candidates(line, line.len(), &d),
        (8, words(&["\"photos/my dir/c d.txt\""]))
    );
    // The owner of a path inside a folder is the folder's.
    let line = "request photos/2024/a.jpg ";
    assert_eq!(candidates(line, line.len(), &d), (26, words(&["B"])));
    // Nothing is wanted while the listing is current.
    assert_eq!(listing_wanted("request photos/20", 17, &d), None);
}

#[test]
fn the_owner_of_a_folder_is_the_word_after_it_or_the_only_one() {
    let mut d = with_folders();
    // Two owners and none typed: no listing is chosen.
    assert_eq!(candidates("request two/", 12, &d), (8, words(&["two/"])));
    assert_eq!(listing_wanted("request two/", 12, &d), None);
    // The owner typed after the cursor's word picks it.
    let line = "request two/ C";
    assert_eq!(candidates(line, 12, &d), (8, words(&["two/c-only"])));
    // B's listing of two/ is not held: the folder alone, and B's listing is wanted.
    let line = "request two/c B";
    assert_eq!(candidates(line, 13, &d), (8, vec![]));
    let want = ListingWant {
        owner: "B".into(),
        folder: "two/".into(),
        hash: [1; 32],
    };
    assert_eq!(listing_wanted(line, 13, &d), Some(want.clone()));
    assert_eq!(listing_wanted("request two/ B", 12, &d), Some(want));
    // An owner word that does not offer the folder: nothing.
    assert_eq!(listing_wanted("request two/ Z", 12, &d), None);
    // Once B's listing arrives, the next Tab uses it.
    d.folders.insert(
        ("B".into(), "two/".into()),
        FolderListing {
            hash: [1; 32],
            paths: words(&["b-only"]),
        },
    );
    assert_eq!(
        candidates("request two/ B", 12, &d),
        (8, words(&["two/b-only"]))
    );
}

#[test]
fn unknown_folders_and_changed_hashes_give_no_paths() {
    let mut d = with_folders();
    // Not a folder of the table.
    assert_eq!(candidates("request nope/a", 14, &d), (8, vec![]));
    assert_eq!(listing_wanted("request nope/", 13, &d), None);
    // Not the file position.
    assert_eq!(listing_wanted("request foo.txt photos/", 23, &d), None);
    assert_eq!(listing_wanted("offer photos/", 13, &d), None);
    // The folder changed: the cached listing is an older version, not used, and the new
    // version is wanted.
    d.folder_hashes
        .insert(("B".into(), "photos/".into()), [2; 32]);
    assert_eq!(
        candidates("request photos/", 15, &d),
        (8, words(&["photos/"]))
    );
    assert_eq!(candidates("request photos/2024/", 20, &d), (8, vec![]));
    assert_eq!(
        listing_wanted("request photos/2024/", 20, &d),
        Some(ListingWant {
            owner: "B".into(),
            folder: "photos/".into(),
            hash: [2; 32],
        })
    );
    // An owner whose record does not verify has no listed hash: nothing is wanted.
    d.folder_hashes.remove(&("B".into(), "photos/".into()));
    assert_eq!(listing_wanted("request photos/", 15, &d), None);
    for line in [
        "request photos/\"",
        "request 'photos/my dir/",
        "request photos//",
    ] {
        for pos in 0..=line.len() + 1 {
            let _ = candidates(line, pos, &d);
            let _ = listing_wanted(line, pos, &d);
        }
    }
}
