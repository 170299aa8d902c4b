use fileapp_core::tree::Entry;
use fileapp_core::tree::manifest::summarize;
use fileapp_core::tree::stream::{put_end, put_entry};

use super::stage::{Stage, parse};
use super::write::Writer;
use crate::transfer::fetch::FetchError;

fn stage(dest: &std::path::Path) -> Stage {
    let dir = dest.join(".t.fileapp-partial");
    std::fs::create_dir(&dir).unwrap();
    let meta_path = dest.join(".t.fileapp-partial.meta");
    let meta = std::fs::File::create(&meta_path).unwrap();
    Stage {
        dir,
        meta_path,
        meta,
        final_path: dest.join("t"),
        held: None,
    }
}

fn stream(entries: &[Entry], data: &[&[u8]]) -> Vec<u8> {
    let mut out = summarize(entries).0.encode().to_vec();
    for (e, d) in entries.iter().zip(data) {
        put_entry(e, &mut out);
        out.extend_from_slice(d);
    }
    put_end(&mut out);
    out
}

#[test]
fn the_sidecar_records_what_a_resume_needs() {
    let d = tempfile::tempdir().unwrap();
    let s = stage(d.path());
    s.checkpoint(&[7; 32], 12, Some("a b/c")).unwrap();
    let text = std::fs::read_to_string(&s.meta_path).unwrap();
    assert_eq!(parse(&text), Some(([7; 32], 12, Some("a b/c".to_string()))));
    s.checkpoint(&[8; 32], 3, None).unwrap();
    let text = std::fs::read_to_string(&s.meta_path).unwrap();
    assert_eq!(parse(&text), Some(([8; 32], 3, None)));
    assert_eq!(parse("fileapp-partial 1\nsize 3\n"), None);
}

#[test]
fn a_path_too_long_for_this_side_is_refused_and_nothing_is_written_elsewhere() {
    let d = tempfile::tempdir().unwrap();
    // A destination deep enough that a 3,766-byte path inside it passes PATH_MAX.
    let dest = d.path().join("d".repeat(250)).join("e".repeat(250));
    std::fs::create_dir_all(&dest).unwrap();
    let part = "p".repeat(250);
    let dirs: Vec<String> = (1..=15).map(|n| vec![part.as_str(); n].join("/")).collect();
    let mut entries: Vec<Entry> = dirs.iter().map(|p| Entry::dir(p.as_str(), 0o755)).collect();
    let file = format!("{}/f", dirs[14]);
    entries.push(Entry::file(
        file,
        0o644,
        1,
        (0, 0),
        *blake3::hash(b"x").as_bytes(),
    ));
    let mut data: Vec<&[u8]> = vec![b""; 15];
    data.push(b"x");
    let bytes = stream(&entries, &data);
    let hash = summarize(&entries).1;
    let mut w = Writer::new(stage(&dest), None, hash, "B".into());
    let e = w.feed(&bytes).unwrap_err();
    assert!(matches!(e, FetchError::CannotHold(..)), "{e}");
    assert!(e.to_string().starts_with("cannot hold '"), "{e}");
}

#[test]
fn a_file_that_does_not_match_its_entry_is_refused_and_removed() {
    let d = tempfile::tempdir().unwrap();
    let entries = vec![Entry::file(
        "f",
        0o644,
        3,
        (0, 0),
        *blake3::hash(b"abc").as_bytes(),
    )];
    let bytes = stream(&entries, &[b"abd"]);
    let mut w = Writer::new(stage(d.path()), None, summarize(&entries).1, "B".into());
    let e = w.feed(&bytes).unwrap_err();
    assert!(matches!(e, FetchError::TreeFileMismatch(_)), "{e}");
    assert!(!d.path().join(".t.fileapp-partial/f").exists());
    // A stream whose manifest is not the announced folder fails at its end.
    let ok = stream(&entries, &[b"abc"]);
    std::fs::create_dir(d.path().join("x")).unwrap();
    let mut w = Writer::new(stage(&d.path().join("x")), None, [0; 32], "B".into());
    assert!(matches!(w.feed(&ok), Err(FetchError::HashMismatch)));
    assert!(!w.ended);
}
