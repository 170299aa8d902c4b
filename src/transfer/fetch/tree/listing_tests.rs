//! Listings against a real owner in process (TLS and plaintext), and the requester's
//! checks of what comes back.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fileapp_core::tree::manifest::summarize;
use fileapp_core::tree::stream::{put_end, put_entry};
use fileapp_core::tree::{Entry, TreeStart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Collect, ListingError, ListingLimits, fetch_listing};
use crate::identity::Identity;
use crate::transfer::fetch::{FetchError, FetchSpec, RefusalKind};
use crate::transfer::header::{Request, Response};
use crate::transfer::provider::{Library, SharedLibrary, serve};
use crate::transfer::secure::{KeyLookup, PeerAuth, Security, TlsIdentity};
use crate::transfer::tree::offer::prepare_folder;

struct Owner {
    addr: SocketAddr,
    key: [u8; 32],
    requester: Security,
    hash: [u8; 32],
    entries: Vec<Entry>,
    _share: tempfile::TempDir,
    _accepting: tokio::sync::watch::Sender<bool>,
    _notices: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// An owner offering `photos/` (nested folders, a name with a space) and the file `foo`.
async fn owner(tls: bool) -> Owner {
    let share = tempfile::tempdir().unwrap();
    let p = share.path().join("photos");
    std::fs::create_dir_all(p.join("2024/trip")).unwrap();
    std::fs::create_dir_all(p.join("my dir")).unwrap();
    std::fs::write(p.join("2024/a.jpg"), b"aaa").unwrap();
    std::fs::write(p.join("2024/trip/b.jpg"), b"bb").unwrap();
    std::fs::write(p.join("2024-notes"), b"n").unwrap();
    std::fs::write(p.join("my dir/c d.txt"), b"").unwrap();
    std::fs::write(share.path().join("foo"), b"foo").unwrap();
    let folder = prepare_folder(share.path(), "photos", &|_| {}).unwrap();
    let (hash, entries) = (folder.hash, folder.entries.clone());
    let mut lib = Library::default();
    lib.set_dir(share.path().to_path_buf());
    lib.add_folder(folder);
    lib.offer("foo").unwrap();
    let lib: SharedLibrary = Arc::new(RwLock::new(lib));
    let (ntx, notices) = tokio::sync::mpsc::unbounded_channel();
    let (accepting_tx, accepting) = tokio::sync::watch::channel(true);
    let owner_id = Identity::generate().unwrap();
    let req_id = Identity::generate().unwrap();
    let (auth, requester) = if tls {
        let table = std::collections::HashMap::from([("C".into(), req_id.public_key())]);
        let lookup: KeyLookup = Arc::new(RwLock::new(table));
        let auth = PeerAuth::tls(Arc::new(TlsIdentity::new(&owner_id).unwrap()), lookup);
        let sec = Security::Tls(Arc::new(TlsIdentity::new(&req_id).unwrap()));
        (auth, sec)
    } else {
        (PeerAuth::plaintext(), Security::Plaintext)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, lib, ntx, accepting, auth));
    Owner {
        addr,
        key: owner_id.public_key(),
        requester,
        hash,
        entries,
        _share: share,
        _accepting: accepting_tx,
        _notices: notices,
    }
}

impl Owner {
    fn spec(&self, name: &str) -> FetchSpec {
        let mut spec = FetchSpec::new(self.addr, "B", name, "C", "/nonexistent");
        spec.peer_key = Some(self.key);
        spec.timeout = Duration::from_secs(5);
        spec
    }

    async fn list(&self, name: &str, hash: [u8; 32]) -> Result<super::Listing, ListingError> {
        let l = ListingLimits::default();
        fetch_listing(&self.spec(name), hash, &self.requester, l).await
    }

    /// Everything the owner sends for `name` with `start` in plaintext, to its close.
    async fn raw(&self, name: &str, hash: [u8; 32], start: TreeStart) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        s.write_all(&[crate::transfer::secure::MODE_PLAIN])
            .await
            .unwrap();
        let req = Request {
            file: name.into(),
            requester: "C".into(),
            offset: 0,
            expected_hash: Some(hash),
            if_match: false,
            owner_hashes: false,
        };
        let mut bytes = req.encode().unwrap();
        bytes.extend_from_slice(&start.encode());
        s.write_all(&bytes).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got[0], crate::transfer::secure::MODE_PLAIN);
        got.split_off(1)
    }
}

fn manifest_stream(entries: &[Entry]) -> Vec<u8> {
    let mut out = summarize(entries).0.encode().to_vec();
    for e in entries {
        put_entry(e, &mut out);
    }
    put_end(&mut out);
    out
}

#[tokio::test]
async fn the_owner_answers_a_listing_with_exactly_the_manifest() {
    let o = owner(false).await;
    let got = o.raw("photos/", o.hash, TreeStart::LISTING).await;
    let resp = Response {
        status: crate::transfer::header::Status::Ok,
        message: String::new(),
        size: 6,
        hash: o.hash,
        start: 0,
    };
    let mut want = resp.encode().unwrap();
    want.extend_from_slice(&manifest_stream(&o.entries));
    assert_eq!(got, want);
    // Another version of the folder: `Changed`, with the current hash, and nothing else.
    let got = o.raw("photos/", [9; 32], TreeStart::LISTING).await;
    let (resp, used) = match Response::decode(&got).unwrap() {
        crate::transfer::header::Decoded::Done(r, n) => (r, n),
        other => panic!("{other:?}"),
    };
    assert_eq!(resp.status, crate::transfer::header::Status::Changed);
    assert_eq!((resp.hash, used), (o.hash, got.len()));
}

#[tokio::test]
async fn a_listing_over_tls_gives_the_paths_one_per_entry() {
    let o = owner(true).await;
    let l = o.list("photos/", o.hash).await.unwrap();
    assert!(l.complete);
    assert_eq!(l.header.entries, 7);
    assert_eq!(
        l.paths,
        [
            "2024-notes",
            "2024/",
            "2024/a.jpg",
            "2024/trip/",
            "2024/trip/b.jpg",
            "my dir/",
            "my dir/c d.txt"
        ]
    );
}

#[tokio::test]
async fn a_listing_is_refused_for_what_is_not_the_listed_folder() {
    let o = owner(true).await;
    // The table's hash is not the owner's: refused before any entry is used.
    assert!(matches!(
        o.list("photos/", [1; 32]).await,
        Err(ListingError::Changed)
    ));
    let e = o.list("nope/", o.hash).await.unwrap_err();
    match e {
        ListingError::Fetch(FetchError::Refused(r)) => assert_eq!(r.kind, RefusalKind::NotOffered),
        e => panic!("{e}"),
    }
    // Not folder names: refused without connecting.
    for name in ["foo", "photos/2024/a.jpg", "../x/", ""] {
        assert!(
            matches!(o.list(name, o.hash).await, Err(ListingError::NotAFolder(_))),
            "{name}"
        );
    }
}

fn sample(n: usize) -> Vec<Entry> {
    let mut v: Vec<Entry> = (0..n)
        .map(|i| Entry::file(format!("f{i:04}"), 0o644, 1, (0, 0), [0; 32]))
        .collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

#[test]
fn a_manifest_that_is_not_the_listed_one_is_rejected() {
    let entries = sample(3);
    let stream = manifest_stream(&entries);
    let mut c = Collect::new(ListingLimits::default());
    c.feed(&stream).unwrap();
    // Well formed, but another folder than the table lists.
    assert!(matches!(c.finish([0; 32]), Err(ListingError::HashMismatch)));
    // Cut short.
    let mut c = Collect::new(ListingLimits::default());
    c.feed(&stream[..stream.len() - 1]).unwrap();
    let hash = summarize(&entries).1;
    assert!(matches!(c.finish(hash), Err(ListingError::Truncated)));
    // File bytes where none may be: the entry's size would need data.
    let mut c = Collect::new(ListingLimits::default());
    assert!(c.feed(&[&stream[..], b"x"].concat()).is_err());
}

#[test]
fn a_listing_is_bounded_and_keeps_only_the_first_paths() {
    let entries = sample(50);
    let stream = manifest_stream(&entries);
    let hash = summarize(&entries).1;
    let limits = ListingLimits {
        keep_paths: 10,
        ..ListingLimits::default()
    };
    let mut c = Collect::new(limits);
    for piece in stream.chunks(7) {
        c.feed(piece).unwrap();
    }
    let l = c.finish(hash).unwrap();
    assert_eq!(l.paths.len(), 10);
    assert!(!l.complete);
    assert_eq!(l.header.entries, 50);
    let limits = ListingLimits {
        max_bytes: 100,
        ..ListingLimits::default()
    };
    let mut c = Collect::new(limits);
    assert!(matches!(c.feed(&stream), Err(ListingError::TooLarge(100))));
}
