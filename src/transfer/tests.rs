//! End-to-end tests of `serve` + `fetch` over 127.0.0.1, including hostile requesters.
//! These run in plaintext mode, so raw bytes on the wire are the protocol's; the TLS
//! layer has its own tests in `tls_tests.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::fetch::{Closed, FetchError, FetchEvent, FetchReport, FetchSpec, fetch, partial_paths};
use super::header::{self, Decoded, MAX_REQUEST_LEN, Request, Response, Status};
use super::provider::{Library, ServeConfig, SharedLibrary, serve_with};
use super::read_header;
use super::secure::{MODE_PLAIN, PeerAuth, Security};

/// Deterministic pseudo-random bytes (BLAKE3 in XOF mode): fast, no extra dependency.
pub(crate) fn random_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

struct Provider {
    addr: SocketAddr,
    lib: SharedLibrary,
    dir: tempfile::TempDir,
    notices: mpsc::UnboundedReceiver<String>,
    _stop: watch::Sender<bool>,
}

/// The test provider's limit for a request header. Long enough that a legitimate request
/// among many hostile connections on a loaded machine always makes it (silent
/// connections still end, so `wait_notice` waits this long plus its margin).
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `wait_notice` waits beyond `HEADER_TIMEOUT` for a notice.
const NOTICE_MARGIN: Duration = Duration::from_secs(5);

impl Provider {
    async fn start() -> Provider {
        let dir = tempfile::tempdir().unwrap();
        let mut lib = Library::default();
        lib.set_dir(dir.path().to_path_buf());
        let lib = Arc::new(RwLock::new(lib));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ntx, notices) = mpsc::unbounded_channel();
        let (stop, accepting) = watch::channel(true);
        let cfg = ServeConfig {
            header_timeout: HEADER_TIMEOUT,
            stall_timeout: Duration::from_secs(5),
            max_connections: 64,
            // The hostile-request tests open many connections at once from 127.0.0.1.
            max_per_ip: 64,
            meetings: None,
        };
        tokio::spawn(serve_with(
            listener,
            lib.clone(),
            ntx,
            accepting,
            PeerAuth::plaintext(),
            cfg,
        ));
        Provider {
            addr,
            lib,
            dir,
            notices,
            _stop: stop,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn add(&self, name: &str, data: &[u8]) {
        std::fs::write(self.path(name), data).unwrap();
        self.lib.write().unwrap().offer(name).unwrap();
    }

    /// All notices so far.
    fn drain(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(n) = self.notices.try_recv() {
            v.push(n);
        }
        v
    }

    /// Waits (briefly) until a notice containing `needle` shows up.
    async fn wait_notice(&mut self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + HEADER_TIMEOUT + NOTICE_MARGIN;
        loop {
            seen.extend(self.drain());
            if seen.iter().any(|n| n.contains(needle)) {
                return seen;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("no notice containing {needle:?}; got {seen:#?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn spec(addr: SocketAddr, file: &str, dest: &Path) -> FetchSpec {
    let mut s = FetchSpec::new(addr, "A", file, "B", dest);
    s.timeout = Duration::from_secs(5);
    s
}

async fn get(spec: FetchSpec) -> (Result<FetchReport, FetchError>, Vec<FetchEvent>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let (_tx, rx) = watch::channel(false);
    let r = fetch(
        spec,
        Security::Plaintext,
        move |e| ev.lock().unwrap().push(e),
        rx,
    )
    .await;
    let events = events.lock().unwrap().clone();
    (r, events)
}

#[tokio::test]
async fn transfers_various_sizes_and_contents() {
    let mut p = Provider::start().await;
    let mut markers = Vec::new();
    for i in 0..5000u32 {
        markers.extend_from_slice(b"FAXR\x01\x00FAXQ\x01");
        markers.extend_from_slice(&i.to_le_bytes());
        markers.extend_from_slice(&[0, 0xff, b'\n', b'\r']);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.bin", Vec::new()),
        ("one.bin", vec![0x42]),
        ("random.bin", random_bytes("random", 3 * 1024 * 1024 + 17)),
        ("markers.bin", markers),
    ];
    let dest = tempfile::tempdir().unwrap();
    for (name, data) in &cases {
        p.add(name, data);
        let (r, events) = get(spec(p.addr, name, dest.path())).await;
        let r = r.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            std::fs::read(dest.path().join(name)).unwrap(),
            *data,
            "{name}"
        );
        assert_eq!(r.size, data.len() as u64);
        assert_eq!(r.hash, *blake3::hash(data).as_bytes());
        assert_eq!(r.resumed_from, 0);
        assert!(!r.already_present);
        assert_eq!(events[0], FetchEvent::Connected);
        assert_eq!(
            events[1],
            FetchEvent::Started {
                size: data.len() as u64,
                offset: 0
            }
        );
        assert_eq!(
            events.last(),
            Some(&FetchEvent::Progress {
                done: data.len() as u64
            })
        );
        let (part, meta) = partial_paths(dest.path(), name);
        assert!(!part.exists() && !meta.exists(), "{name}: leftovers");
        let notes = p.wait_notice("Connection with client B closed").await;
        assert!(notes.contains(&"< Accepting connection request from 127.0.0.1. >".to_string()));
        assert!(notes.contains(&format!("< Transferring {name}... >")));
        assert!(notes.contains(&format!("< {name} transferred successfully! >")));
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with(&format!("< {name}: {} bytes in ", data.len())))
        );
    }
    // The library reports size and hash for `list -l`.
    let info = p.lib.read().unwrap().file_info("one.bin").unwrap();
    assert_eq!(info.size, 1);
    assert_eq!(info.hash, *blake3::hash(&[0x42]).as_bytes());
}

/// A provider that answers correctly but sends only `cut` bytes, then either closes or
/// (if `hang`) keeps the connection open without sending more.
async fn fake_provider(data: Vec<u8>, cut: usize, hang: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&[MODE_PLAIN]).await.unwrap();
        let mut mode = [0u8; 1];
        s.read_exact(&mut mode).await.unwrap();
        assert_eq!(mode[0], MODE_PLAIN);
        let (req, _) = read_header(&mut s, MAX_REQUEST_LEN, Request::decode)
            .await
            .unwrap();
        assert_eq!(req.offset, 0);
        let resp = Response {
            status: Status::Ok,
            message: String::new(),
            size: data.len() as u64,
            hash: *blake3::hash(&data).as_bytes(),
            start: 0,
        };
        s.write_all(&resp.encode().unwrap()).await.unwrap();
        s.write_all(&data[..cut]).await.unwrap();
        s.flush().await.unwrap();
        if hang {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });
    addr
}

#[tokio::test]
async fn cut_transfer_leaves_nothing_then_resumes_identically() {
    let data = random_bytes("resume", 5 * 1024 * 1024 + 3);
    let cut = 2 * 1024 * 1024 + 12345;
    let dest = tempfile::tempdir().unwrap();
    let addr = fake_provider(data.clone(), cut, false).await;
    let (r, _) = get(spec(addr, "big.bin", dest.path())).await;
    let err = r.unwrap_err();
    assert!(
        matches!(err, FetchError::PeerClosed(Closed::During { received, .. }) if received == cut as u64),
        "{err}"
    );
    assert!(err.to_string().contains("after"), "{err}");
    assert!(!dest.path().join("big.bin").exists());
    let (part, meta) = partial_paths(dest.path(), "big.bin");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), cut as u64);
    assert!(meta.exists());

    let mut p = Provider::start().await;
    p.add("big.bin", &data);
    let (r, events) = get(spec(p.addr, "big.bin", dest.path())).await;
    let r = r.unwrap();
    assert_eq!(r.resumed_from, cut as u64);
    assert!(events.contains(&FetchEvent::Started {
        size: data.len() as u64,
        offset: cut as u64
    }));
    assert_eq!(std::fs::read(dest.path().join("big.bin")).unwrap(), data);
    assert!(!part.exists() && !meta.exists());
    let notes = p.wait_notice("transferred successfully").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("resumed at byte {cut}"))),
        "{notes:?}"
    );
}

#[tokio::test]
async fn cancel_keeps_partial() {
    let data = random_bytes("cancel", 3 * 1024 * 1024);
    let dest = tempfile::tempdir().unwrap();
    let addr = fake_provider(data.clone(), 1024 * 1024, true).await;
    let (tx, rx) = watch::channel(false);
    let s = spec(addr, "c.bin", dest.path());
    let s_timeout = s.timeout;
    let task = tokio::spawn(fetch(s, Security::Plaintext, |_| {}, rx));
    // The provider stops after 1 MiB: wait until all of it is on disk (within the
    // fetch's own stall timeout), then cancel.
    let (part, _) = partial_paths(dest.path(), "c.bin");
    let deadline = tokio::time::Instant::now() + s_timeout;
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 1024 * 1024 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first MiB never landed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tx.send(true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(FetchError::Cancelled)), "{r:?}");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 1024 * 1024);
    assert!(!dest.path().join("c.bin").exists());
}

#[tokio::test]
async fn modified_file_is_rehashed() {
    let mut p = Provider::start().await;
    p.add("m.txt", b"first version");
    let dest = tempfile::tempdir().unwrap();
    // Same size, different content: only mtime/content differ.
    let new = b"other version";
    std::fs::write(p.path("m.txt"), new).unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(p.path("m.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let (r, _) = get(spec(p.addr, "m.txt", dest.path())).await;
    let r = r.unwrap();
    assert_eq!(r.hash, *blake3::hash(new).as_bytes());
    assert_eq!(std::fs::read(dest.path().join("m.txt")).unwrap(), new);
    p.wait_notice("changed since it was offered; re-hashed")
        .await;
    assert_eq!(
        p.lib.read().unwrap().file_info("m.txt").unwrap().hash,
        r.hash
    );

    // Different size, and a stale partial from the old version: restarts from 0.
    let newer = random_bytes("newer", 100_000);
    std::fs::write(p.path("m2.txt"), b"old old old").unwrap();
    p.lib.write().unwrap().offer("m2.txt").unwrap();
    let (part, meta) = partial_paths(dest.path(), "m2.txt");
    std::fs::write(&part, b"old").unwrap();
    std::fs::write(
        &meta,
        format!(
            "fileapp-partial 1\nsize 11\nhash {}\n",
            hex::encode(blake3::hash(b"old old old").as_bytes())
        ),
    )
    .unwrap();
    std::fs::write(p.path("m2.txt"), &newer).unwrap();
    let (r, _) = get(spec(p.addr, "m2.txt", dest.path())).await;
    let r = r.unwrap();
    assert_eq!(r.resumed_from, 0);
    assert_eq!(std::fs::read(dest.path().join("m2.txt")).unwrap(), newer);
}

#[tokio::test]
async fn deleted_file_is_refused_clearly() {
    let mut p = Provider::start().await;
    p.add("d.txt", b"soon gone");
    std::fs::remove_file(p.path("d.txt")).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let (r, _) = get(spec(p.addr, "d.txt", dest.path())).await;
    let e = r.unwrap_err();
    assert!(matches!(e, FetchError::Refused(_)), "{e}");
    assert!(e.to_string().contains("no longer available"), "{e}");
    assert!(!dest.path().join("d.txt").exists());
    p.wait_notice("< Refused request for 'd.txt' from B: the file no longer exists >")
        .await;
}

#[tokio::test]
async fn existing_destination_policy() {
    let p = Provider::start().await;
    let data = random_bytes("exists", 70_000);
    p.add("e.bin", &data);
    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("e.bin");

    // Identical file: success without transfer.
    std::fs::write(&target, &data).unwrap();
    let (r, _) = get(spec(p.addr, "e.bin", dest.path())).await;
    let r = r.unwrap();
    assert!(r.already_present);
    assert_eq!(r.hash, *blake3::hash(&data).as_bytes());

    // Different file: refused, left alone.
    std::fs::write(&target, b"mine").unwrap();
    let (r, _) = get(spec(p.addr, "e.bin", dest.path())).await;
    assert!(matches!(r, Err(FetchError::Exists(_))), "{r:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"mine");

    // Forced: replaced.
    let mut s = spec(p.addr, "e.bin", dest.path());
    s.force = true;
    let (r, _) = get(s).await;
    assert!(!r.unwrap().already_present);
    assert_eq!(std::fs::read(&target).unwrap(), data);
}

#[tokio::test]
async fn offer_refuses_unsafe_names_and_files() {
    let p = Provider::start().await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"s").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), p.path("out-link")).unwrap();
    std::fs::create_dir(p.path("sub")).unwrap();
    std::fs::write(p.path("sub/inner"), b"i").unwrap();
    std::os::unix::fs::symlink(p.path("sub/inner"), p.path("deep-link")).unwrap();
    std::fs::write(p.path("real"), b"r").unwrap();
    std::os::unix::fs::symlink("real", p.path("in-link")).unwrap();
    let mut lib = p.lib.write().unwrap();
    for bad in [
        "out-link",
        "sub",
        "deep-link",
        "..",
        "sub/inner",
        "/etc/passwd",
        "missing",
    ] {
        assert!(lib.offer(bad).is_err(), "{bad}");
    }
    assert!(lib.offer("in-link").is_ok());
    assert!(lib.offer("real").is_ok());
}

/// Sends `bytes` on a raw connection (after the plaintext mode byte, unless `bytes` is
/// empty; optionally closing our side), then reads whatever comes back until the
/// provider closes, and returns it without the provider's mode byte.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8], close_write: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if !bytes.is_empty() {
        let _ = s.write_all(&[MODE_PLAIN]).await;
        let _ = s.write_all(bytes).await;
    }
    if close_write {
        let _ = s.shutdown().await;
    }
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "provider did not close the connection");
    assert_eq!(
        out.first(),
        Some(&MODE_PLAIN),
        "the provider states its mode first"
    );
    out.remove(0);
    out
}

fn req(file: &str) -> Vec<u8> {
    // Hand-rolled so names the encoder would refuse can still be sent.
    let mut v = b"FAXQ\x01\x00".to_vec();
    v.push(file.len() as u8);
    v.extend_from_slice(file.as_bytes());
    v.push(1);
    v.push(b'X');
    v.extend_from_slice(&0u64.to_le_bytes());
    v
}

#[tokio::test]
async fn hostile_requests_are_refused_while_legit_fetch_succeeds() {
    let mut p = Provider::start().await;
    let outside = tempfile::tempdir().unwrap();
    let secret = b"TOP-SECRET-CONTENT-0123456789".repeat(10);
    let secret_path = outside.path().join("secret.txt");
    std::fs::write(&secret_path, &secret).unwrap();
    // Also a secret next to the shared folder, reachable by `..`.
    std::fs::write(p.dir.path().parent().unwrap().join("secret.txt"), &secret).ok();
    std::fs::write(p.path("unoffered.txt"), &secret).unwrap();
    std::os::unix::fs::symlink(&secret_path, p.path("link-out")).unwrap();
    std::fs::create_dir(p.path("sub")).unwrap();
    std::fs::write(p.path("sub/inner.txt"), &secret).unwrap();
    // Offered files later swapped for something unsafe.
    p.add("swap.txt", b"harmless");
    std::fs::remove_file(p.path("swap.txt")).unwrap();
    std::os::unix::fs::symlink(&secret_path, p.path("swap.txt")).unwrap();
    p.add("gone-dir.txt", b"harmless");
    std::fs::remove_file(p.path("gone-dir.txt")).unwrap();
    std::fs::create_dir(p.path("gone-dir.txt")).unwrap();
    p.add("fifo.txt", b"harmless");
    std::fs::remove_file(p.path("fifo.txt")).unwrap();
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    mknodat(
        CWD,
        p.path("fifo.txt"),
        FileType::Fifo,
        Mode::RUSR | Mode::WUSR,
        0,
    )
    .unwrap();
    // The legitimate file.
    let legit = random_bytes("legit", 8 * 1024 * 1024);
    p.add("legit.bin", &legit);
    let legit_hash = *blake3::hash(&legit).as_bytes();

    let mut truncated = req("legit.bin");
    truncated.truncate(9);
    let mut bad_version = req("legit.bin");
    bad_version[4] = 9;
    let mut bad_flags = req("legit.bin");
    bad_flags[5] = 0x80;
    let mut long_requester = b"FAXQ\x01\x00\x09legit.bin\xc8".to_vec();
    long_requester.extend(std::iter::repeat_n(b'x', 200));
    let mut if_match_wrong = b"FAXQ\x01\x03\x09legit.bin\x01X".to_vec();
    if_match_wrong.extend_from_slice(&0u64.to_le_bytes());
    if_match_wrong.extend_from_slice(&[0u8; 32]);
    // Owner hashing asks the owner to vouch for the data; plain TCP cannot carry that.
    let mut owner_hashes = b"FAXQ\x01\x04\x09legit.bin\x01X".to_vec();
    owner_hashes.extend_from_slice(&0u64.to_le_bytes());
    let abs = secret_path.to_str().unwrap().to_string();

    // (description, bytes, close our write side)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("dotdot", req(".."), false),
        ("dotdot path", req("../secret.txt"), false),
        ("absolute", req("/etc/passwd"), false),
        ("absolute secret", req(&abs), false),
        ("subdir path", req("sub/inner.txt"), false),
        ("backslash", req("sub\\inner.txt"), false),
        ("dot", req("."), false),
        ("subdir itself", req("sub"), false),
        ("not offered", req("unoffered.txt"), false),
        ("nonexistent", req("nope.txt"), false),
        ("symlink out", req("link-out"), false),
        ("swapped to symlink", req("swap.txt"), false),
        ("swapped to dir", req("gone-dir.txt"), false),
        ("swapped to fifo", req("fifo.txt"), false),
        ("newline name", req("a\nb"), false),
        ("nul name", req("legit.bin\0"), false),
        ("wrong magic", b"GET / HTTP/1.0\r\n\r\n".to_vec(), false),
        ("wrong version", bad_version, false),
        ("unknown flags", bad_flags, false),
        ("empty name", b"FAXQ\x01\x00\x00".to_vec(), false),
        ("long requester", long_requester, false),
        ("bad utf8", b"FAXQ\x01\x00\x02\xff\xfe\x00".to_vec(), false),
        ("truncated then close", truncated.clone(), true),
        ("truncated then silence", truncated, false),
        ("nothing at all", Vec::new(), false),
        ("garbage", random_bytes("garbage", 100_000), false),
        ("if-match wrong hash", if_match_wrong, false),
        ("owner hashing in plaintext", owner_hashes, false),
    ];
    assert!(cases.len() >= 20);

    let dest = tempfile::tempdir().unwrap();
    let legit_fetch = tokio::spawn(get(spec(p.addr, "legit.bin", dest.path())));
    let mut tasks = Vec::new();
    for (what, bytes, close) in cases {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            (what, raw_exchange(addr, &bytes, close).await)
        }));
    }
    for t in tasks {
        let (what, out) = t.await.unwrap();
        assert!(
            !out.windows(10).any(|w| w == &secret[..10]),
            "{what}: leaked secret"
        );
        if out.is_empty() {
            continue; // timed out or dropped without an answer
        }
        match Response::decode(&out) {
            Ok(Decoded::Done(resp, used)) => {
                assert_ne!(resp.status, Status::Ok, "{what}");
                assert_eq!(used, out.len(), "{what}: data after a refusal");
            }
            other => panic!("{what}: bad answer {other:?}"),
        }
    }
    let (r, _) = legit_fetch.await.unwrap();
    assert_eq!(r.unwrap().hash, legit_hash);
    assert_eq!(std::fs::read(dest.path().join("legit.bin")).unwrap(), legit);
    let notes = p.wait_notice("no request within").await;
    let all: Vec<String> = notes.into_iter().chain(p.drain()).collect();
    assert!(
        all.iter()
            .any(|n| n.contains("Refused request for '..' from X: not offered")),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|n| n.starts_with("< Bad request from 127.0.0.1: "))
    );
    assert!(
        all.iter().any(|n| n
            == "< Refused request for 'legit.bin' from X: owner hashing needs an encrypted connection >"),
        "{all:#?}"
    );
    // The serve loop survived all of that.
    let (r, _) = get(spec(p.addr, "legit.bin", dest.path())).await;
    assert!(r.unwrap().already_present);
}

#[tokio::test]
async fn refusals_reach_the_requester() {
    let p = Provider::start().await;
    let dest = tempfile::tempdir().unwrap();
    let (r, _) = get(spec(p.addr, "nothing.txt", dest.path())).await;
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "A refused the request: 'nothing.txt' is not offered"
    );
    let (r, _) = get(spec(p.addr, "../x", dest.path())).await;
    assert!(matches!(r, Err(FetchError::BadName(_))));
    // Nobody listening.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let (r, _) = get(spec(addr, "x", dest.path())).await;
    assert!(matches!(r, Err(FetchError::Connect(..))));
    let _ = header::VERSION;
}

/// The portable receive path (used off Linux) gives the same result as the splice path.
#[tokio::test]
async fn buffered_receive_path_matches() {
    use super::fetch::{Landing, receive_buffered};
    let data = random_bytes("buffered", 3 * 1024 * 1024 + 5);
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("p");
    // Resume case: 1000 bytes already on disk.
    std::fs::write(&part, &data[..1000]).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&part)
        .unwrap();
    let (mut w, r) = tokio::io::duplex(64 * 1024);
    let tail = data[1000 + 77..].to_vec();
    tokio::spawn(async move { w.write_all(&tail).await.unwrap() });
    let (_tx, mut cancel) = watch::channel(false);
    let hash = receive_buffered(
        r,
        data[1000..1000 + 77].to_vec(),
        Landing {
            file,
            part: part.clone(),
            offset: 1000,
            size: data.len() as u64,
            stall: Duration::from_secs(5),
        },
        0,
        &mut |_| {},
        &mut cancel,
    )
    .await
    .unwrap();
    assert_eq!(hash, *blake3::hash(&data).as_bytes());
    assert_eq!(std::fs::read(&part).unwrap(), data);
}

/// The portable path with the owner's hash after the data (the punched QUIC path): the
/// trailer is split across reads and partly in the bytes read with the answer; it is
/// never written into the file. Test builds also hash what came, so an owner's hash
/// that does not match the bytes is refused.
#[tokio::test]
async fn buffered_receive_takes_the_owners_hash_and_test_builds_check_it() {
    use super::fetch::{Landing, receive_buffered};
    let data = random_bytes("trailer", 2 * 1024 * 1024 + 3);
    let right = *blake3::hash(&data).as_bytes();
    for (owners, ok) in [(right, true), ([7u8; 32], false)] {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("p");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&part)
            .unwrap();
        let mut wire = data.clone();
        wire.extend_from_slice(&owners);
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let rest = wire[1 << 20..].to_vec();
        tokio::spawn(async move {
            for piece in rest.chunks(50_001) {
                w.write_all(piece).await.unwrap();
            }
        });
        let (_tx, mut cancel) = watch::channel(false);
        let got = receive_buffered(
            r,
            wire[..1 << 20].to_vec(),
            Landing {
                file,
                part: part.clone(),
                offset: 0,
                size: data.len() as u64,
                stall: Duration::from_secs(5),
            },
            32,
            &mut |_| {},
            &mut cancel,
        )
        .await;
        match ok {
            true => assert_eq!(got.unwrap(), right),
            false => assert!(matches!(got, Err(FetchError::HashMismatch)), "{got:?}"),
        }
        assert_eq!(
            std::fs::read(&part).unwrap(),
            data,
            "the trailer is not data"
        );
    }
}

#[tokio::test]
async fn requester_vanishing_mid_transfer_is_reported() {
    let mut p = Provider::start().await;
    p.add("huge.bin", &random_bytes("huge", 48 * 1024 * 1024));
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&[MODE_PLAIN]).await.unwrap();
    s.write_all(&req("huge.bin")).await.unwrap();
    let mut first = [0u8; 4097];
    s.read_exact(&mut first).await.unwrap();
    drop(s);
    let mut notes = p.wait_notice("< Transfer of huge.bin to X failed: ").await;
    assert!(notes.contains(&"< Transferring huge.bin... >".to_string()));
    if !notes
        .iter()
        .any(|n| n == "< Connection with client X closed >")
    {
        notes = p.wait_notice("< Connection with client X closed >").await;
    }
    assert!(!notes.is_empty());
}
