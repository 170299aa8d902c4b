//! Unit tests of the fetch parts: the plan from what is on disk, what an answer means
//! for it, and the typed errors (with their exact user-facing text) for a refusal, a
//! mode mismatch and an owner that closes early.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connect::mode_error;
use super::partial::{Plan, Start, Target, make_plan, read_meta, write_meta};
use super::*;
use crate::transfer::header::{MAX_REQUEST_LEN, Request, Response, Status};
use crate::transfer::read_header;
use crate::transfer::secure::{MODE_BUSY, MODE_PLAIN, MODE_TLS};

fn target(data: &[u8]) -> Target {
    Target {
        size: data.len() as u64,
        hash: *blake3::hash(data).as_bytes(),
    }
}

fn spec_in(dest: &Path) -> FetchSpec {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    FetchSpec::new(addr, "A", "f.bin", "B", dest)
}

fn plan_in(spec: &FetchSpec) -> Result<Plan, FetchError> {
    let (part, meta) = partial_paths(&spec.dest_dir, &spec.file);
    make_plan(spec, &spec.dest_dir.join(&spec.file), &part, &meta)
}

fn ok_answer(t: Target, start: u64) -> Response {
    Response {
        status: Status::Ok,
        message: String::new(),
        size: t.size,
        hash: t.hash,
        start,
    }
}

#[test]
fn the_sidecar_round_trips_and_rejects_what_we_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("m");
    let t = target(b"hello");
    write_meta(&meta, t).unwrap();
    assert_eq!(read_meta(&meta), Some(t));
    std::fs::write(&meta, "fileapp-partial 2\nsize 5\nhash 00\n").unwrap();
    assert_eq!(read_meta(&meta), None);
    std::fs::write(&meta, "fileapp-partial 1\nsize five\n").unwrap();
    assert_eq!(read_meta(&meta), None);
    assert_eq!(read_meta(&dir.path().join("missing")), None);
}

#[test]
fn a_long_name_gets_hashed_partial_names_that_fit() {
    let dir = Path::new("/d");
    let long = "x".repeat(250);
    let (part, meta) = partial_paths(dir, &long);
    let name = part.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with(".fileapp-") && name.ends_with(".partial"),
        "{name}"
    );
    assert!(meta.file_name().unwrap().len() <= 255);
    assert_eq!(
        partial_paths(dir, "a.txt"),
        (
            dir.join(".a.txt.fileapp-partial"),
            dir.join(".a.txt.fileapp-partial.meta")
        )
    );
}

#[test]
fn the_plan_resumes_a_partial_that_matches_its_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(dir.path());
    assert_eq!(plan_in(&spec).unwrap(), Plan::Fresh, "nothing on disk");

    let (part, meta) = partial_paths(dir.path(), "f.bin");
    let t = target(&[7u8; 100]);
    std::fs::write(&part, [7u8; 40]).unwrap();
    assert_eq!(
        plan_in(&spec).unwrap(),
        Plan::Fresh,
        "a partial without sidecar"
    );
    write_meta(&meta, t).unwrap();
    assert_eq!(
        plan_in(&spec).unwrap(),
        Plan::Resume {
            offset: 40,
            target: t
        }
    );
    std::fs::write(&part, [7u8; 100]).unwrap();
    assert_eq!(
        plan_in(&spec).unwrap(),
        Plan::Resume {
            offset: 100,
            target: t
        },
        "complete but not yet verified"
    );
    std::fs::write(&part, [7u8; 101]).unwrap();
    assert_eq!(
        plan_in(&spec).unwrap(),
        Plan::Fresh,
        "longer than its target"
    );
    std::fs::remove_file(&part).unwrap();
    assert_eq!(plan_in(&spec).unwrap(), Plan::Fresh, "a sidecar alone");
}

#[test]
fn the_plan_compares_an_existing_destination_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec_in(dir.path());
    std::fs::write(dir.path().join("f.bin"), b"mine").unwrap();
    assert_eq!(
        plan_in(&spec).unwrap(),
        Plan::Probe {
            local: target(b"mine")
        }
    );
    spec.force = true;
    assert_eq!(plan_in(&spec).unwrap(), Plan::Fresh);

    spec.force = false;
    std::fs::remove_file(dir.path().join("f.bin")).unwrap();
    std::fs::create_dir(dir.path().join("f.bin")).unwrap();
    assert!(matches!(plan_in(&spec), Err(FetchError::Exists(_))));
}

#[test]
fn each_plan_asks_for_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(dir.path());
    let t = target(b"data");
    let fresh = Plan::Fresh.request(&spec, true);
    assert_eq!((fresh.offset, fresh.expected_hash), (0, None));
    assert!(fresh.owner_hashes && !fresh.if_match);
    let resume = Plan::Resume {
        offset: 2,
        target: t,
    }
    .request(&spec, true);
    assert_eq!((resume.offset, resume.expected_hash), (2, Some(t.hash)));
    assert!(
        !resume.owner_hashes,
        "owner hashing is for whole files only"
    );
    let probe = Plan::Probe { local: t }.request(&spec, false);
    assert_eq!((probe.offset, probe.expected_hash), (4, Some(t.hash)));
    assert!(probe.if_match);
    assert_eq!(
        (probe.file.as_str(), probe.requester.as_str()),
        ("f.bin", "B")
    );
}

#[test]
fn an_answer_settles_where_the_data_starts() {
    let final_path = Path::new("/d/f.bin");
    let (old, new) = (target(b"old data"), target(b"new data!"));
    let resume = Plan::Resume {
        offset: 3,
        target: old,
    };
    let settle = |plan: Plan, resp: Response| plan.settle(&resp, "A", final_path);
    assert_eq!(
        settle(resume, ok_answer(old, 3)).unwrap(),
        Start::At {
            offset: 3,
            target: old
        }
    );
    // The owner's file changed: it starts over, and so do we.
    assert_eq!(
        settle(resume, ok_answer(new, 0)).unwrap(),
        Start::At {
            offset: 0,
            target: new
        }
    );
    let e = settle(Plan::Fresh, ok_answer(new, 5)).unwrap_err();
    assert!(
        matches!(e, FetchError::Protocol(ProtocolError::UnaskedStart(5))),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "protocol error: the owner wants to start at byte 5 which we did not ask for"
    );

    let probe = Plan::Probe { local: old };
    assert_eq!(
        settle(probe, ok_answer(old, old.size)).unwrap(),
        Start::AlreadyPresent(old)
    );
    let e = settle(probe, ok_answer(new, 0)).unwrap_err();
    assert!(
        matches!(e, FetchError::Protocol(ProtocolError::BadComparison)),
        "{e:?}"
    );
    let changed = Response {
        status: Status::Changed,
        ..ok_answer(new, 0)
    };
    assert!(
        matches!(settle(probe, changed.clone()), Err(FetchError::Exists(p)) if p == final_path)
    );
    let e = settle(Plan::Fresh, changed).unwrap_err();
    assert!(
        matches!(e, FetchError::Protocol(ProtocolError::UnaskedChanged)),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "protocol error: unexpected 'changed' answer");
}

#[test]
fn a_refusal_says_why_in_a_variant_and_in_the_owners_words() {
    let refuse = |status, message: &str| {
        let resp = Response {
            status,
            message: message.into(),
            ..ok_answer(target(b""), 0)
        };
        Plan::Fresh
            .settle(&resp, "A\x07", Path::new("/d/f"))
            .unwrap_err()
    };
    let e = refuse(Status::NotOffered, "'f' is not offered");
    let FetchError::Refused(r) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(r.kind, RefusalKind::NotOffered);
    assert_eq!(r.detail, "'f' is not offered");
    // The owner's name is made printable.
    assert_eq!(
        e.to_string(),
        "A\\u{7} refused the request: 'f' is not offered"
    );
    // Without a message, the status names itself.
    let e = refuse(Status::Busy, "");
    assert!(
        matches!(&e, FetchError::Refused(r) if r.kind == RefusalKind::Busy),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "A\\u{7} refused the request: Busy");
    let e = refuse(Status::Error, "your key is wrong");
    assert!(
        matches!(&e, FetchError::Refused(r) if r.kind == RefusalKind::Error),
        "{e:?}"
    );
}

#[test]
fn a_mode_byte_that_does_not_match_is_typed() {
    let e = mode_error(MODE_TLS, false, "A".into());
    assert!(
        matches!(
            &e,
            FetchError::ModeMismatch {
                ours: Mode::Plaintext,
                theirs: Mode::Tls,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "A requires encryption; this client runs with --plaintext (both sides must use the same mode)"
    );
    let e = mode_error(MODE_PLAIN, true, "A".into());
    assert!(
        matches!(
            &e,
            FetchError::ModeMismatch {
                ours: Mode::Tls,
                theirs: Mode::Plaintext,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "A accepts only plaintext transfers (it runs with --plaintext); this client requires encryption"
    );
    for we_tls in [false, true] {
        let e = mode_error(MODE_BUSY, we_tls, "A".into());
        assert!(
            matches!(&e, FetchError::Refused(r) if r.kind == RefusalKind::Busy),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "A refused the request: too many transfers in progress, try later"
        );
    }
    let e = mode_error(0x42, false, "A".into());
    assert!(
        matches!(
            &e,
            FetchError::Protocol(ProtocolError::UnknownMode { byte: 0x42, .. })
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "protocol error: unexpected first byte 0x42 from A (not a fileapp peer of this version?)"
    );
}

/// What a scripted owner does after accepting the connection.
#[derive(Clone, Copy)]
enum Script {
    /// Reads our mode byte, then closes without sending its own. (Closing with our byte
    /// unread would reset the connection instead.)
    CloseWithoutMode,
    /// Sends this first byte, then closes once it has our mode byte.
    Mode(u8),
    /// Agrees on plaintext, reads the request, then closes without answering.
    CloseBeforeAnswer,
    /// Answers with this status and message, then closes.
    Answer(Status, &'static str),
    /// Answers Ok for a file of `size` bytes, sends `sent` of them, then closes.
    Cut { size: u64, sent: usize },
}

/// A one-connection owner that follows `script`.
async fn scripted_owner(script: Script) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut mode = [0u8; 1];
        let first = match script {
            Script::CloseWithoutMode => {
                s.read_exact(&mut mode).await.unwrap();
                return;
            }
            Script::Mode(b) => b,
            _ => MODE_PLAIN,
        };
        s.write_all(&[first]).await.unwrap();
        s.read_exact(&mut mode).await.unwrap();
        if matches!(script, Script::Mode(_)) {
            return;
        }
        let _ = read_header(&mut s, MAX_REQUEST_LEN, Request::decode)
            .await
            .unwrap();
        let data = vec![9u8; 4096];
        let (resp, sent) = match script {
            Script::Answer(status, message) => (
                Response {
                    status,
                    message: message.into(),
                    ..ok_answer(target(b""), 0)
                },
                0,
            ),
            Script::Cut { size, sent } => (
                Response {
                    size,
                    ..ok_answer(target(&data), 0)
                },
                sent,
            ),
            _ => return,
        };
        s.write_all(&resp.encode().unwrap()).await.unwrap();
        s.write_all(&data[..sent]).await.unwrap();
        s.flush().await.unwrap();
    });
    addr
}

/// Fetches `f.bin` in plaintext from a scripted owner into `dest`.
async fn fetch_from(script: Script, dest: &Path) -> FetchError {
    let mut spec = spec_in(dest);
    spec.peer = scripted_owner(script).await;
    spec.timeout = Duration::from_secs(5);
    let (_tx, cancel) = watch::channel(false);
    fetch(spec, Security::Plaintext, |_| {}, cancel)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn an_owner_that_closes_early_is_peer_closed() {
    let dest = tempfile::tempdir().unwrap();
    for script in [Script::CloseWithoutMode, Script::CloseBeforeAnswer] {
        let e = fetch_from(script, dest.path()).await;
        assert!(
            matches!(e, FetchError::PeerClosed(Closed::WithoutAnswer)),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "connection lost: the owner closed the connection without answering"
        );
    }
    let e = fetch_from(
        Script::Cut {
            size: 10_000,
            sent: 1234,
        },
        dest.path(),
    )
    .await;
    assert!(
        matches!(
            e,
            FetchError::PeerClosed(Closed::During {
                received: 1234,
                size: 10_000
            })
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "connection lost: the owner closed the connection after 1234 of 10000 bytes"
    );
    // What came is kept for a resume.
    let (part, _) = partial_paths(dest.path(), "f.bin");
    assert_eq!(std::fs::metadata(part).unwrap().len(), 1234);
}

#[tokio::test]
async fn refusals_and_mode_mismatches_arrive_typed() {
    let dest = tempfile::tempdir().unwrap();
    let e = fetch_from(
        Script::Answer(Status::NotOffered, "no such file"),
        dest.path(),
    )
    .await;
    assert!(
        matches!(&e, FetchError::Refused(r) if r.kind == RefusalKind::NotOffered && r.owner == "A"),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "A refused the request: no such file");
    let e = fetch_from(Script::Mode(MODE_BUSY), dest.path()).await;
    assert!(
        matches!(&e, FetchError::Refused(r) if r.kind == RefusalKind::Busy),
        "{e:?}"
    );
    let e = fetch_from(Script::Mode(MODE_TLS), dest.path()).await;
    assert!(
        matches!(
            e,
            FetchError::ModeMismatch {
                ours: Mode::Plaintext,
                theirs: Mode::Tls,
                ..
            }
        ),
        "{e:?}"
    );
    // Nothing was started on disk for any of them.
    let (part, meta) = partial_paths(dest.path(), "f.bin");
    assert!(!part.exists() && !meta.exists());
}

/// The buffered path (the one used off Linux) reports an early close the same way.
#[tokio::test]
async fn the_buffered_path_reports_an_early_close_as_peer_closed() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("p");
    std::fs::write(&part, [1u8; 10]).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&part)
        .unwrap();
    let (mut w, r) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        w.write_all(&[2u8; 500]).await.unwrap();
        // Dropping `w` closes the stream.
    });
    let (_tx, mut cancel) = watch::channel(false);
    let land = Landing {
        file,
        part: part.clone(),
        offset: 10,
        size: 2000,
        stall: Duration::from_secs(5),
    };
    let e = receive_buffered(r, vec![3u8; 5], land, 0, &mut |_| {}, &mut cancel)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::PeerClosed(Closed::During {
                received: 515,
                size: 2000
            })
        ),
        "{e:?}"
    );
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 515);
}

#[test]
fn a_partial_held_by_another_download_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (part, meta) = partial_paths(dir.path(), "f.bin");
    let t = target(b"x");
    let _held = partial::open_partial(&part, &meta, t, 0).unwrap();
    let e = partial::open_partial(&part, &meta, t, 0).unwrap_err();
    assert!(matches!(&e, FetchError::Locked(p) if *p == part), "{e:?}");
    assert!(e.to_string().starts_with("another download of "), "{e}");
}
