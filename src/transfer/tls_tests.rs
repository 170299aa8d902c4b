//! The connection layer: TLS with pinned keys, and the mode negotiation, over 127.0.0.1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::fetch::{FetchError, FetchReport, FetchSpec, fetch, partial_paths};
use super::provider::{Library, ServeConfig, SharedLibrary, serve_with};
use super::secure::{
    KeyLookup, MODE_BUSY, MODE_QUIC, MODE_TLS, PeerAuth, Security, TlsIdentity,
    owner_refused_our_key, server_name,
};
use super::tests::random_bytes;
use super::tls::{self, TlsStream};
use crate::identity::{Identity, PublicKey, fingerprint};

/// A client's key material, as the driver holds it.
struct Peer {
    key: PublicKey,
    tls: Arc<TlsIdentity>,
}

impl Peer {
    fn new() -> Peer {
        let id = Identity::generate().unwrap();
        Peer {
            key: id.public_key(),
            tls: Arc::new(TlsIdentity::new(&id).unwrap()),
        }
    }

    fn security(&self) -> Security {
        Security::Tls(self.tls.clone())
    }
}

/// A provider ("A") with its own table of requesters' keys.
struct Provider {
    addr: SocketAddr,
    lib: SharedLibrary,
    dir: tempfile::TempDir,
    keys: Arc<RwLock<HashMap<String, PublicKey>>>,
    notices: mpsc::UnboundedReceiver<String>,
    _stop: watch::Sender<bool>,
}

/// The tunables the tests use unless they say otherwise.
fn test_config() -> ServeConfig {
    ServeConfig {
        header_timeout: Duration::from_millis(2000),
        stall_timeout: Duration::from_secs(5),
        ..ServeConfig::default()
    }
}

impl Provider {
    /// `me`: `None` runs in plaintext mode.
    async fn start(me: Option<&Peer>) -> Provider {
        Provider::start_with(me, test_config()).await
    }

    async fn start_with(me: Option<&Peer>, cfg: ServeConfig) -> Provider {
        let dir = tempfile::tempdir().unwrap();
        let mut lib = Library::default();
        lib.set_dir(dir.path().to_path_buf());
        let lib = Arc::new(RwLock::new(lib));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ntx, notices) = mpsc::unbounded_channel();
        let (stop, accepting) = watch::channel(true);
        let keys: Arc<RwLock<HashMap<String, PublicKey>>> = Arc::default();
        let auth = match me {
            Some(p) => {
                let lookup: KeyLookup = keys.clone();
                PeerAuth::tls(p.tls.clone(), lookup)
            }
            None => PeerAuth::plaintext(),
        };
        tokio::spawn(serve_with(listener, lib.clone(), ntx, accepting, auth, cfg));
        Provider {
            addr,
            lib,
            dir,
            keys,
            notices,
            _stop: stop,
        }
    }

    fn add(&self, name: &str, data: &[u8]) {
        std::fs::write(self.dir.path().join(name), data).unwrap();
        self.lib.write().unwrap().offer(name).unwrap();
    }

    fn knows(&self, name: &str, key: PublicKey) {
        self.keys.write().unwrap().insert(name.into(), key);
    }

    async fn wait_notice(&mut self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            while let Ok(n) = self.notices.try_recv() {
                seen.push(n);
            }
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

fn spec(addr: SocketAddr, file: &str, dest: &Path, owner_key: Option<PublicKey>) -> FetchSpec {
    let mut s = FetchSpec::new(addr, "A", file, "B", dest);
    s.timeout = Duration::from_secs(5);
    s.peer_key = owner_key;
    s
}

async fn get(spec: FetchSpec, security: Security) -> Result<FetchReport, FetchError> {
    let (_tx, rx) = watch::channel(false);
    fetch(spec, security, |_| {}, rx).await
}

/// Nothing under the final name, no partial, no sidecar.
fn nothing_written(dest: &Path, file: &str) {
    assert!(!dest.join(file).exists(), "{file} was written");
    let (part, meta) = partial_paths(dest, file);
    assert!(!part.exists(), "a partial was written");
    assert!(!meta.exists(), "a sidecar was written");
}

#[tokio::test]
async fn encrypted_transfer_is_byte_identical() {
    let (a, b) = (Peer::new(), Peer::new());
    let mut p = Provider::start(Some(&a)).await;
    p.knows("B", b.key);
    let dest = tempfile::tempdir().unwrap();
    let cases = [
        ("empty.bin", Vec::new()),
        ("one.bin", vec![7u8]),
        ("big.bin", random_bytes("tls-big", 5 * 1024 * 1024 + 4321)),
    ];
    for (name, data) in &cases {
        p.add(name, data);
        let r = get(spec(p.addr, name, dest.path(), Some(a.key)), b.security())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.hash, *blake3::hash(data).as_bytes());
        assert_eq!(std::fs::read(dest.path().join(name)).unwrap(), *data);
        let notes = p.wait_notice("Connection with client B closed").await;
        assert!(notes.contains(&format!("< {name} transferred successfully! >")));
    }
    // An identical file already present is recognized over TLS too.
    let r = get(
        spec(p.addr, "big.bin", dest.path(), Some(a.key)),
        b.security(),
    )
    .await
    .unwrap();
    assert!(r.already_present);
}

/// Over TLS the owner hashes what it sends and the requester relies on that: a file that
/// differs from its cached hash (changed, mtime put back) must still fail the check, on
/// both sides, and nothing may be published.
#[tokio::test]
async fn owner_hash_catches_a_file_that_differs_from_its_announced_hash() {
    let (a, b) = (Peer::new(), Peer::new());
    let mut p = Provider::start(Some(&a)).await;
    p.knows("B", b.key);
    let data = random_bytes("tls-stale", 2 * 1024 * 1024 + 5);
    p.add("s.bin", &data);
    let path = p.dir.path().join("s.bin");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut other = data.clone();
    other[1_000_000] ^= 1;
    std::fs::write(&path, &other).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let e = get(
        spec(p.addr, "s.bin", dest.path(), Some(a.key)),
        b.security(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, FetchError::HashMismatch), "{e}");
    nothing_written(dest.path(), "s.bin");
    p.wait_notice("Transfer of s.bin to B failed: the file changed while it was being sent")
        .await;
}

#[tokio::test]
async fn resume_works_over_tls() {
    let (a, b) = (Peer::new(), Peer::new());
    let mut p = Provider::start(Some(&a)).await;
    p.knows("B", b.key);
    let data = random_bytes("tls-resume", 3 * 1024 * 1024 + 99);
    p.add("r.bin", &data);
    let dest = tempfile::tempdir().unwrap();
    // What an interrupted attempt leaves: a prefix and its sidecar.
    let cut = 1024 * 1024 + 7;
    let (part, meta) = partial_paths(dest.path(), "r.bin");
    std::fs::write(&part, &data[..cut]).unwrap();
    std::fs::write(
        &meta,
        format!(
            "fileapp-partial 1\nsize {}\nhash {}\n",
            data.len(),
            blake3::hash(&data).to_hex()
        ),
    )
    .unwrap();
    let r = get(
        spec(p.addr, "r.bin", dest.path(), Some(a.key)),
        b.security(),
    )
    .await
    .unwrap();
    assert_eq!(r.resumed_from, cut as u64);
    assert_eq!(std::fs::read(dest.path().join("r.bin")).unwrap(), data);
    assert!(!part.exists() && !meta.exists());
    let notes = p.wait_notice("resumed at byte").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("resumed at byte {cut}")))
    );
}

/// A relay on loopback: answers as an encrypted provider, terminates the requester's TLS
/// with its own certificate (another key), and would connect onward to the real one.
async fn mitm_relay(
    relay: Arc<TlsIdentity>,
    onward: SocketAddr,
) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&[MODE_TLS]).await.unwrap();
        let mut mode = [0u8; 1];
        s.read_exact(&mut mode).await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(relay.server_config());
        match acceptor.accept(s).await {
            Ok(mut tls) => {
                // Would relay to the real owner; the requester must never get here.
                let _up = TcpStream::connect(onward).await;
                let mut buf = vec![0u8; 1024];
                let _ = tls.read(&mut buf).await;
                let _ = tx.send("relay: handshake accepted".to_string());
            }
            Err(e) => {
                let _ = tx.send(format!("relay: handshake failed: {e}"));
            }
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn man_in_the_middle_is_refused_by_the_requester() {
    let (a, b, m) = (Peer::new(), Peer::new(), Peer::new());
    let p = Provider::start(Some(&a)).await;
    p.knows("B", b.key);
    p.add("f.bin", &random_bytes("mitm", 100_000));
    let (relay, mut relay_log) = mitm_relay(m.tls.clone(), p.addr).await;
    let dest = tempfile::tempdir().unwrap();
    let err = get(spec(relay, "f.bin", dest.path(), Some(a.key)), b.security())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::WrongKey { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "A presented key {}, not the key A is registered with ({}); refusing the connection (possible man-in-the-middle)",
            fingerprint(&m.key),
            fingerprint(&a.key)
        )
    );
    nothing_written(dest.path(), "f.bin");
    let log = tokio::time::timeout(Duration::from_secs(5), relay_log.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(log.starts_with("relay: handshake failed"), "{log}");
}

#[tokio::test]
async fn requester_with_another_key_than_its_name_is_refused() {
    let (a, b, impostor) = (Peer::new(), Peer::new(), Peer::new());
    let mut p = Provider::start(Some(&a)).await;
    p.knows("B", b.key);
    p.add("f.bin", &random_bytes("impostor", 100_000));
    let dest = tempfile::tempdir().unwrap();
    // Claims to be B, holds another key (one the table lists, for C).
    p.knows("C", impostor.key);
    let err = get(
        spec(p.addr, "f.bin", dest.path(), Some(a.key)),
        impostor.security(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchError::Refused(_)), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "A refused the request: your key ({}) is not the key B is registered with",
            fingerprint(&impostor.key)
        )
    );
    nothing_written(dest.path(), "f.bin");
    let notes = p.wait_notice("Refused request for 'f.bin' from B").await;
    assert!(
        notes.contains(&format!(
            "< Refused request for 'f.bin' from B: it presented key {}, but B is registered with key {} >",
            fingerprint(&impostor.key),
            fingerprint(&b.key)
        )),
        "{notes:#?}"
    );
    assert!(!notes.iter().any(|n| n.contains("Transferring")));

    // A name the provider does not know is refused as well (the key is listed, under
    // another name, so the handshake lets it through).
    p.knows("C", impostor.key);
    let mut s = spec(p.addr, "f.bin", dest.path(), Some(a.key));
    s.requester = "Nobody".into();
    let err = get(s, impostor.security()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("'Nobody' is not in the owner's table"),
        "{err}"
    );
    p.wait_notice("'Nobody' is not in this client's table")
        .await;
    nothing_written(dest.path(), "f.bin");
}

#[tokio::test]
async fn owner_without_a_key_is_not_contacted() {
    let b = Peer::new();
    let dest = tempfile::tempdir().unwrap();
    // Nobody listens there: the refusal must come before any connection attempt.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let err = get(spec(addr, "f.bin", dest.path(), None), b.security())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NoPeerKey(_)), "{err}");
    assert!(
        err.to_string().starts_with("A has no key in the table"),
        "{err}"
    );
}

#[tokio::test]
async fn plaintext_requester_and_encrypted_provider_refuse_each_other() {
    let (a, b) = (Peer::new(), Peer::new());
    let mut p = Provider::start(Some(&a)).await;
    p.knows("B", b.key);
    p.add("f.bin", &random_bytes("mode1", 100_000));
    let dest = tempfile::tempdir().unwrap();
    let err = get(
        spec(p.addr, "f.bin", dest.path(), Some(a.key)),
        Security::Plaintext,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "A requires encryption; this client runs with --plaintext (both sides must use the same mode)"
    );
    nothing_written(dest.path(), "f.bin");
    let notes = p
        .wait_notice("< Refused plaintext request from 127.0.0.1: this client only accepts encrypted transfers >")
        .await;
    assert!(!notes.iter().any(|n| n.contains("Transferring")));
}

#[tokio::test]
async fn encrypted_requester_and_plaintext_provider_refuse_each_other() {
    let b = Peer::new();
    let mut p = Provider::start(None).await;
    p.add("f.bin", &random_bytes("mode2", 100_000));
    let dest = tempfile::tempdir().unwrap();
    let err = get(
        spec(p.addr, "f.bin", dest.path(), Some([9u8; 32])),
        b.security(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "A accepts only plaintext transfers (it runs with --plaintext); this client requires encryption"
    );
    nothing_written(dest.path(), "f.bin");
    let notes = p
        .wait_notice("< Refused encrypted request from 127.0.0.1: this client runs in plaintext mode (--plaintext) >")
        .await;
    assert!(!notes.iter().any(|n| n.contains("Transferring")));
}

#[tokio::test]
async fn a_requester_without_mode_byte_gets_nothing() {
    let a = Peer::new();
    let mut p = Provider::start(Some(&a)).await;
    p.add("f.bin", &random_bytes("old", 100_000));
    // An old-style request straight away.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"FAXQ\x01\x00\x05f.bin\x01X\0\0\0\0\0\0\0\0")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, vec![MODE_TLS]);
    p.wait_notice("not a fileapp transfer request (first byte 0x46)")
        .await;
}

/// The QUIC mode says "the connection under us authenticated both keys". A TCP
/// connection has no such layer: a requester claiming it must get what a plaintext
/// requester gets, a refusal, and never a byte of the file.
#[tokio::test]
async fn the_quic_mode_on_tcp_is_refused_as_plaintext() {
    let (a, b) = (Peer::new(), Peer::new());
    let mut p = Provider::start(Some(&a)).await;
    p.knows("B", b.key);
    let data = random_bytes("quic-on-tcp", 100_000);
    p.add("f.bin", &data);
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&[MODE_QUIC]).await.unwrap();
    let request = crate::transfer::header::Request {
        file: "f.bin".into(),
        requester: "B".into(),
        offset: 0,
        expected_hash: None,
        if_match: false,
        owner_hashes: false,
    };
    // Written at once, as an attacker would; the provider must not read it as one.
    let _ = s.write_all(&request.encode().unwrap()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap();
    assert_eq!(out, vec![MODE_TLS], "the provider sent more than its mode");
    let notes = p
        .wait_notice("< Refused plaintext request from 127.0.0.1: this client only accepts encrypted transfers >")
        .await;
    assert!(!notes.iter().any(|n| n.contains("Transferring")));
}

/// An owner that answers a TCP requester with the QUIC mode asks it to speak plaintext
/// on a connection nothing protects: the requester refuses before it sends its request
/// (which names the file and itself).
#[tokio::test]
async fn a_requester_on_tcp_refuses_an_owner_choosing_the_quic_mode() {
    let b = Peer::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let owner = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&[MODE_QUIC]).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        got
    });
    let dest = tempfile::tempdir().unwrap();
    let err = get(
        spec(addr, "f.bin", dest.path(), Some([9u8; 32])),
        b.security(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Protocol(super::fetch::ProtocolError::ModeNotForLink {
                byte: MODE_QUIC,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        owner.await.unwrap(),
        vec![MODE_TLS],
        "the requester sent more than its mode byte"
    );
    nothing_written(dest.path(), "f.bin");
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    sock.connect(to).await.unwrap()
}

/// Connects to `to`, agrees on TLS and completes our side of the handshake as `who`
/// (in TLS 1.3 the client is done before the server has checked its certificate).
async fn tls_client(who: &Peer, owner: PublicKey, to: SocketAddr) -> TlsStream {
    let mut tcp = TcpStream::connect(to).await.unwrap();
    tcp.write_all(&[MODE_TLS]).await.unwrap();
    let mut b = [0u8; 1];
    tcp.read_exact(&mut b).await.unwrap();
    assert_eq!(b[0], MODE_TLS);
    let (config, _) = who.tls.client_config(owner).unwrap();
    tls::connect(tcp, config, server_name()).await.unwrap()
}

#[tokio::test]
async fn a_key_the_owner_does_not_list_is_refused_in_the_handshake() {
    let (a, b, stranger) = (Peer::new(), Peer::new(), Peer::new());
    let mut p = Provider::start(Some(&a)).await;
    p.knows("B", b.key);
    p.add("f.bin", &random_bytes("stranger", 100_000));
    let dest = tempfile::tempdir().unwrap();
    // Claims to be B; its key is in no row of A's table.
    let err = get(
        spec(p.addr, "f.bin", dest.path(), Some(a.key)),
        stranger.security(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, FetchError::Io(e) if owner_refused_our_key(e)),
        "{err:?}"
    );
    nothing_written(dest.path(), "f.bin");
    let notes = p
        .wait_notice("failed: its key is not in this client's table")
        .await;
    assert!(
        notes.contains(&"< Encrypted connection from 127.0.0.1 failed: its key is not in this client's table >".to_string()),
        "{notes:#?}"
    );
    // Refused before any request was read.
    assert!(
        !notes.iter().any(|n| n.contains("Refused request")),
        "{notes:#?}"
    );
    // The key that is in the table still works.
    let r = get(
        spec(p.addr, "f.bin", dest.path(), Some(a.key)),
        b.security(),
    )
    .await
    .unwrap();
    assert_eq!(r.size, 100_000);
}

#[tokio::test]
async fn a_flood_of_unknown_keys_does_not_stop_a_real_download() {
    const SLOTS: usize = 4;
    let (a, b) = (Peer::new(), Peer::new());
    let cfg = ServeConfig {
        max_connections: SLOTS,
        max_per_ip: 64,
        ..test_config()
    };
    let mut p = Provider::start_with(Some(&a), cfg).await;
    p.knows("B", b.key);
    p.add("f.bin", &random_bytes("flood", 200_000));
    // As many handshakes from unknown keys as the provider has slots, each then idle
    // (no request): had they passed the handshake, they would hold every slot until
    // the header timeout.
    let mut flood = Vec::new();
    for _ in 0..SLOTS {
        flood.push(tls_client(&Peer::new(), a.key, p.addr).await);
    }
    let mut refused = 0;
    while refused < SLOTS {
        let notes = p.wait_notice("its key is not in this client's table").await;
        refused += notes
            .iter()
            .filter(|n| n.contains("its key is not in this client's table"))
            .count();
    }
    let dest = tempfile::tempdir().unwrap();
    let r = get(
        spec(p.addr, "f.bin", dest.path(), Some(a.key)),
        b.security(),
    )
    .await
    .unwrap();
    assert_eq!(r.size, 200_000);
    // Each stranger learns why: the owner's alert is the first record it gets.
    for mut t in flood {
        let mut buf = [0u8; 16];
        let e = tokio::time::timeout(Duration::from_secs(5), t.read(&mut buf))
            .await
            .unwrap()
            .unwrap_err();
        assert!(owner_refused_our_key(&e), "{e}");
    }
}

#[tokio::test]
async fn past_the_per_address_limit_the_owner_answers_busy() {
    const PER_IP: usize = 3;
    let (a, b) = (Peer::new(), Peer::new());
    let cfg = ServeConfig {
        max_per_ip: PER_IP,
        ..test_config()
    };
    let mut p = Provider::start_with(Some(&a), cfg).await;
    p.knows("B", b.key);
    p.add("f.bin", &random_bytes("per-ip", 100_000));
    // 127.0.0.2 takes its share of slots and says nothing.
    let mut held = Vec::new();
    for i in 0..PER_IP {
        let mut t = connect_from([127, 0, 0, 2], p.addr).await;
        let mut b = [0u8; 1];
        t.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], MODE_TLS, "connection {i} got a slot");
        held.push(t);
    }
    let mut extra = connect_from([127, 0, 0, 2], p.addr).await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out,
        vec![MODE_BUSY],
        "one past the limit: Busy, then closed"
    );
    p.wait_notice("< Refused connection from 127.0.0.2: too many connections from this address >")
        .await;
    // 127.0.0.1 is still served.
    let dest = tempfile::tempdir().unwrap();
    let r = get(
        spec(p.addr, "f.bin", dest.path(), Some(a.key)),
        b.security(),
    )
    .await
    .unwrap();
    assert_eq!(r.size, 100_000);
    // Its slots freed, 127.0.0.2 is served again.
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut t = connect_from([127, 0, 0, 2], p.addr).await;
        let mut b = [0u8; 1];
        t.read_exact(&mut b).await.unwrap();
        if b[0] == MODE_TLS {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
