use super::manifest::{Decoded, summarize};
use super::stream::{put_abort, put_end, put_entry, start_of};
use super::*;

fn sample() -> (Vec<Entry>, Vec<Vec<u8>>) {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a b", b"spaces".to_vec()),
        ("empty", vec![]),
        ("sub/-dash", vec![7u8; 5000]),
        ("sub/é ü 日本", b"unicode".to_vec()),
    ];
    let mut entries = vec![
        Entry::dir("nested", 0o755),
        Entry::dir("nested/deeper", 0o700),
        Entry::dir("sub", 0o755),
    ];
    for (p, d) in &files {
        entries.push(Entry::file(
            *p,
            0o644,
            d.len() as u64,
            (1_700_000_000, 5),
            *blake3::hash(d).as_bytes(),
        ));
    }
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let data = entries
        .iter()
        .map(|e| {
            files
                .iter()
                .find(|(p, _)| *p == e.path)
                .map(|(_, d)| d.clone())
                .unwrap_or_default()
        })
        .collect();
    (entries, data)
}

/// The stream an owner sends for `entries`, honouring `resume`.
fn stream(entries: &[Entry], data: &[Vec<u8>], resume: Option<TreeStart>) -> Vec<u8> {
    let (header, _) = summarize(entries);
    let mut out = header.encode().to_vec();
    for (i, (e, d)) in entries.iter().zip(data).enumerate() {
        put_entry(e, &mut out);
        if e.is_file() {
            let s = start_of(resume, i as u64, e.size) as usize;
            out.extend_from_slice(&d[s..]);
        }
    }
    put_end(&mut out);
    out
}

/// Entries, the data per entry and the end's hash.
type Read = (Vec<Entry>, Vec<Vec<u8>>, Option<[u8; 32]>);

/// Feeds `bytes` in pieces of `chunk`, collecting (entries, data per entry, end hash).
fn read(bytes: &[u8], chunk: usize, resume: Option<TreeStart>) -> Result<Read, TreeError> {
    let mut r = TreeReader::new(resume);
    let (mut entries, mut data, mut end) = (Vec::new(), Vec::new(), None);
    for piece in bytes.chunks(chunk.max(1)) {
        let mut buf = piece;
        loop {
            let (n, ev) = r.step(buf)?;
            buf = &buf[n..];
            match ev {
                None if n == 0 => break,
                None => {}
                Some(Event::Entry { entry, .. }) => {
                    entries.push(entry);
                    data.push(Vec::new());
                }
                Some(Event::Data(d)) => data.last_mut().unwrap().extend_from_slice(d),
                Some(Event::End { hash }) => end = Some(hash),
                Some(_) => {}
            }
        }
    }
    Ok((entries, data, end))
}

#[test]
fn a_stream_reads_back_in_any_split_and_its_hash_is_the_manifests() {
    let (entries, data) = sample();
    let (_, hash) = summarize(&entries);
    let bytes = stream(&entries, &data, None);
    for chunk in [1, 2, 3, 7, 31, 64, 4096, bytes.len()] {
        let (e, d, end) = read(&bytes, chunk, None).unwrap();
        assert_eq!(e, entries, "chunk {chunk}");
        assert_eq!(d, data);
        assert_eq!(end, Some(hash));
    }
}

#[test]
fn a_resumed_stream_skips_what_the_requester_has() {
    let (entries, data) = sample();
    let idx = entries.iter().position(|e| e.path == "sub/-dash").unwrap() as u64;
    let resume = Some(TreeStart {
        index: idx,
        offset: 1000,
    });
    let bytes = stream(&entries, &data, resume);
    let (e, d, end) = read(&bytes, 100, resume).unwrap();
    assert_eq!(e, entries);
    assert_eq!(end, Some(summarize(&entries).1));
    for (i, (got, full)) in d.iter().zip(&data).enumerate() {
        let s = start_of(resume, i as u64, full.len() as u64) as usize;
        assert_eq!(got[..], full[s..], "{i}");
    }
}

#[test]
fn a_listing_is_the_manifest_alone_and_hashes_as_the_folder() {
    let (entries, data) = sample();
    let l = Some(TreeStart::LISTING);
    let bytes = stream(&entries, &data, l);
    // Header, one record per entry, the end: no file bytes at all.
    let records: usize = entries.iter().map(|e| 1 + encoded_len(e)).sum();
    assert_eq!(bytes.len(), 32 + records + 1);
    let (e, d, end) = read(&bytes, 5, l).unwrap();
    assert_eq!(e, entries);
    assert!(d.iter().all(Vec::is_empty));
    assert_eq!(end, Some(summarize(&entries).1));
    assert_eq!(TreeStart::decode(&TreeStart::LISTING.encode()), Ok(l));
}

fn encoded_len(e: &Entry) -> usize {
    let mut v = Vec::new();
    e.encode_into(&mut v);
    v.len()
}

#[test]
fn unsorted_repeated_and_unsafe_paths_are_refused() {
    let f = |p: &str| Entry::file(p, 0o644, 0, (0, 0), [0; 32]);
    for bad in [vec![f("b"), f("a")], vec![f("a"), f("a")]] {
        let bytes = stream(&bad, &[vec![], vec![]], None);
        assert!(matches!(read(&bytes, 9, None), Err(TreeError::Manifest(_))));
    }
    for p in [
        "../x", "a/../b", "/abs", "a//b", "a/", ".", "c\\d", "x\u{1}y",
    ] {
        let mut bytes = Header {
            entries: 1,
            files: 1,
            bytes: 0,
        }
        .encode()
        .to_vec();
        put_entry(&f(p), &mut bytes);
        assert!(read(&bytes, 1000, None).is_err(), "{p:?}");
    }
}

#[test]
fn totals_must_match_the_header() {
    let (entries, data) = sample();
    let mut bytes = stream(&entries, &data, None);
    bytes[8] += 1; // one more entry announced than sent
    assert_eq!(read(&bytes, 50, None).unwrap_err(), TreeError::TooFew);
    let mut bytes = stream(&entries, &data, None);
    bytes[8] -= 1;
    assert_eq!(read(&bytes, 50, None).unwrap_err(), TreeError::TooMany);
}

#[test]
fn an_abort_ends_the_stream_with_its_message() {
    let mut bytes = Header {
        entries: 1,
        files: 1,
        bytes: 1,
    }
    .encode()
    .to_vec();
    put_abort("'x' changed since it was offered", &mut bytes);
    let mut r = TreeReader::new(None);
    let (n, ev) = r.step(&bytes).unwrap();
    assert!(matches!(ev, Some(Event::Header(_))));
    let (_, ev) = r.step(&bytes[n..]).unwrap();
    assert_eq!(
        ev,
        Some(Event::Abort("'x' changed since it was offered".into()))
    );
    assert!(r.done());
    assert_eq!(r.step(b"z").unwrap_err(), TreeError::Trailing);
}

#[test]
fn entries_round_trip_and_the_start_record_too() {
    let (entries, _) = sample();
    for e in &entries {
        let mut b = Vec::new();
        e.encode_into(&mut b);
        assert_eq!(Entry::decode(&b), Ok(Decoded::Done(e.clone(), b.len())));
        assert_eq!(Entry::decode(&b[..b.len() - 1]), Ok(Decoded::NeedMore));
    }
    let s = TreeStart {
        index: 12,
        offset: 34,
    };
    assert_eq!(TreeStart::decode(&s.encode()), Ok(Some(s)));
    assert_eq!(TreeStart::decode(&s.encode()[..7]), Ok(None));
    assert!(TreeStart::decode(b"FAXQ").is_err());
}

#[test]
fn request_names_split_into_folder_and_path() {
    assert_eq!(split_request("photos/"), Some(("photos/", None)));
    assert_eq!(
        split_request("photos/a/b.jpg"),
        Some(("photos/", Some("a/b.jpg")))
    );
    assert_eq!(split_request("photos"), None);
    assert_eq!(split_request("photos/../x"), None);
    assert_eq!(split_request("/x"), None);
    assert!(valid_offer_name("photos/") && valid_offer_name("a.txt"));
    assert!(!valid_offer_name("a/b") && !valid_offer_name("a//"));
}
