//! Our record layer against rustls' own (through tokio-rustls), over 127.0.0.1: the bytes
//! on the wire are plain TLS 1.3 in both directions, key updates included.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::identity::Identity;
use crate::transfer::secure::{TlsIdentity, server_name};
use crate::transfer::tests::random_bytes;

fn identity() -> Arc<TlsIdentity> {
    Arc::new(TlsIdentity::new(&Identity::generate().unwrap()).unwrap())
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap());
    let (c, s) = tokio::join!(c, l.accept());
    (c.unwrap(), s.unwrap().0)
}

/// Our provider side (bulk `send_file` with a key update every 7 records, then
/// close_notify) to a stock rustls client that also updates its own key mid-request.
#[tokio::test]
async fn our_sender_talks_to_a_stock_tls_client() {
    let (server_id, client_id) = (identity(), identity());
    let data = random_bytes("tls-file", 5 << 20);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&data).unwrap();
    let request = random_bytes("tls-request", 100_000);
    let (c, s) = tcp_pair().await;

    let server = {
        let (cfg, request) = (server_id.server_config(), request.clone());
        let len = data.len() as u64;
        tokio::spawn(async move {
            let mut tls = accept(s, cfg).await.unwrap();
            tls.set_key_update_limit(7);
            let mut got = vec![0u8; request.len()];
            tls.read_exact(&mut got).await.unwrap();
            assert_eq!(got, request, "request bytes differ");
            tls.write_all(b"header:").await.unwrap();
            let hash = tls
                .send_file(&file, 3, len - 3, Duration::from_secs(5), true)
                .await
                .unwrap();
            tls.write_all(b":trailer").await.unwrap();
            tls.shutdown().await.unwrap();
            (tls.peer_certificate().cloned(), hash)
        })
    };

    let (cfg, _) = client_id.client_config(server_id.public_key()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(server_name(), c)
        .await
        .unwrap();
    tls.write_all(&request[..50_000]).await.unwrap();
    tls.get_mut().1.refresh_traffic_keys().unwrap();
    tls.write_all(&request[50_000..]).await.unwrap();
    tls.flush().await.unwrap();
    let mut got = Vec::new();
    // Ends cleanly only at a close_notify.
    tls.read_to_end(&mut got).await.unwrap();
    let mut want = b"header:".to_vec();
    want.extend_from_slice(&data[3..]);
    want.extend_from_slice(b":trailer");
    assert_eq!(got.len(), want.len());
    assert!(got == want, "received bytes differ");
    let (seen, hash) = server.await.unwrap();
    // What the sender hashed as it sealed is exactly what it sent.
    assert_eq!(hash, Some(*blake3::hash(&data[3..]).as_bytes()));
    let seen = seen.expect("client certificate");
    assert_eq!(
        crate::transfer::secure::ed25519_key_of(&seen),
        Some(client_id.public_key())
    );
}

/// A stock rustls server sending in pieces with key updates, to our bulk receiver; the
/// last piece shares its record with a trailer, which must be split off.
#[tokio::test]
async fn our_receiver_reads_a_stock_tls_server() {
    let (server_id, client_id) = (identity(), identity());
    let data = random_bytes("tls-stock", 3 << 20);
    let trailer = random_bytes("tls-trailer", 32);
    let (c, s) = tcp_pair().await;
    let server = {
        let (cfg, mut data) = (server_id.server_config(), data.clone());
        data.extend_from_slice(&trailer);
        tokio::spawn(async move {
            let mut tls = tokio_rustls::TlsAcceptor::from(cfg)
                .accept(s)
                .await
                .unwrap();
            let mut req = [0u8; 4];
            tls.read_exact(&mut req).await.unwrap();
            assert_eq!(&req, b"GIVE");
            for (i, piece) in data.chunks(300_001).enumerate() {
                tls.write_all(piece).await.unwrap();
                if i % 3 == 1 {
                    tls.get_mut().1.refresh_traffic_keys().unwrap();
                }
            }
            tls.shutdown().await.unwrap();
            // The requester says it got everything with a close_notify: without one,
            // stock rustls sees a truncation (UnexpectedEof) here.
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        })
    };
    let (cfg, _) = client_id.client_config(server_id.public_key()).unwrap();
    let mut tls = connect(c, cfg, server_name()).await.unwrap();
    tls.write_all(b"GIVE").await.unwrap();
    tls.flush().await.unwrap();
    // Some through the stream, the rest through the bulk receiver.
    let mut head = vec![0u8; 1000];
    tls.read_exact(&mut head).await.unwrap();
    let (sock, rx) = tls.into_receiver();
    let mut sock = sock.into_tcp().into_std().unwrap();
    sock.set_nonblocking(false).unwrap();
    let want = (data.len() - head.len()) as u64;
    let (seen, body, tail) = tokio::task::spawn_blocking(move || {
        // What `each` is shown and what `deliver` gets must be the same bytes.
        let (mut seen, mut body) = (Vec::new(), Vec::new());
        rx.run(
            &mut sock,
            want,
            32,
            || Some(Vec::new()),
            |piece| seen.extend_from_slice(piece),
            |o| {
                body.extend_from_slice(&o.buf[..o.len]);
                true
            },
        )
        .map(|tail| (seen, body, tail))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(seen == body, "pieces shown and buffers delivered differ");
    assert_eq!(tail, trailer, "the trailer was not split off");
    head.extend_from_slice(&body);
    assert!(head == data, "received bytes differ");
    server.await.unwrap();
}

/// The same through `AsyncRead`, and a connection cut without close_notify is an error,
/// never a clean end.
#[tokio::test]
async fn truncation_without_close_notify_is_an_error() {
    let (server_id, client_id) = (identity(), identity());
    for graceful in [true, false] {
        let (c, s) = tcp_pair().await;
        let cfg = server_id.server_config();
        let server = tokio::spawn(async move {
            let mut tls = tokio_rustls::TlsAcceptor::from(cfg)
                .accept(s)
                .await
                .unwrap();
            tls.write_all(&[7u8; 40_000]).await.unwrap();
            tls.get_mut().1.refresh_traffic_keys().unwrap();
            tls.write_all(&[8u8; 40_000]).await.unwrap();
            if graceful {
                tls.shutdown().await.unwrap();
            } else {
                tls.flush().await.unwrap();
                let (mut tcp, _) = tls.into_inner();
                tcp.shutdown().await.unwrap();
            }
        });
        let (cfg, _) = client_id.client_config(server_id.public_key()).unwrap();
        let mut tls = connect(c, cfg, server_name()).await.unwrap();
        let mut got = Vec::new();
        let r = tls.read_to_end(&mut got).await;
        server.await.unwrap();
        assert_eq!(got.len(), 80_000);
        assert!(got[..40_000].iter().all(|&b| b == 7) && got[40_000..].iter().all(|&b| b == 8));
        if graceful {
            r.unwrap();
        } else {
            assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
        }
    }
}

/// A record changed in flight (here: after the handshake, by a relay) is refused.
#[tokio::test]
async fn a_record_changed_in_flight_is_refused() {
    let (server_id, client_id) = (identity(), identity());
    let (c, s) = tcp_pair().await;
    let cfg = server_id.server_config();
    let server = tokio::spawn(async move {
        let mut tls = accept(s, cfg).await.unwrap();
        tls.write_all(&[1u8; 1000]).await.unwrap();
        tls.flush().await.unwrap();
        // Keep the connection open until the client has read.
        let mut b = [0u8; 1];
        let _ = tls.read(&mut b).await;
    });
    let (cfg, _) = client_id.client_config(server_id.public_key()).unwrap();
    let mut tls = connect(c, cfg, server_name()).await.unwrap();
    // Wait for the record, then flip one ciphertext byte where it lies, unread.
    loop {
        let mut probe = [0u8; 1];
        if tls.sock.as_tcp().peek(&mut probe).await.unwrap() > 0 {
            break;
        }
    }
    // (If only part of the record is here, the flipped byte is still inside it.)
    let mut raw = vec![0u8; 1100];
    let n = tls.sock.read(&mut raw).await.unwrap();
    raw[n - 3] ^= 1;
    tls.rbuf[..n].copy_from_slice(&raw[..n]);
    tls.rend = n;
    let mut got = [0u8; 1000];
    let e = tls.read_exact(&mut got).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("authentication"), "{e}");
    drop(tls);
    server.await.unwrap();
}

/// A peer that asks for a key update (`update_requested`) gets ours before any more data,
/// also when the data goes out through the bulk path.
#[tokio::test]
async fn a_requested_key_update_is_answered_before_the_data() {
    let (server_id, client_id) = (identity(), identity());
    let data = random_bytes("tls-requested", 200_000);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&data).unwrap();
    let (c, s) = tcp_pair().await;
    let cfg = server_id.server_config();
    let len = data.len() as u64;
    let server = tokio::spawn(async move {
        let mut tls = accept(s, cfg).await.unwrap();
        let mut req = [0u8; 3];
        tls.read_exact(&mut req).await.unwrap();
        assert!(tls.update_owed, "the request for an update was not noticed");
        tls.send_file(&file, 0, len, Duration::from_secs(5), false)
            .await
            .unwrap();
        assert!(!tls.update_owed);
        tls.shutdown().await.unwrap();
    });
    let (cfg, _) = client_id.client_config(server_id.public_key()).unwrap();
    let mut tls = connect(c, cfg, server_name()).await.unwrap();
    // KeyUpdate(update_requested) under the old key, then switch ours.
    let mut wbuf = Vec::new();
    let sealer = tls.sealer.as_mut().unwrap();
    sealer
        .seal_to(&[24, 0, 0, 1, 1], Content::Handshake, &mut wbuf)
        .unwrap();
    next_tx(&tls.keys, sealer).unwrap();
    tls.wbuf = wbuf;
    tls.write_all(b"GET").await.unwrap();
    tls.flush().await.unwrap();
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.unwrap();
    assert!(got == data, "received bytes differ");
    server.await.unwrap();
}

/// Rekeying is not part of the test below.
struct NoRekey;

impl Rekey for NoRekey {
    fn next_tx(&mut self) -> Result<(u64, rustls::ConnectionTrafficSecrets), rustls::Error> {
        Err(rustls::Error::General("no key updates here".into()))
    }
    fn next_rx(&mut self) -> Result<(u64, rustls::ConnectionTrafficSecrets), rustls::Error> {
        self.next_tx()
    }
}

/// Megabytes of records without data (session tickets) between the data must not use
/// up the receiver's buffers: with a pool of one, the data and the trailer still come.
#[test]
fn buffers_without_data_are_used_again() {
    use rustls::crypto::cipher::{AeadKey, Iv};
    let secrets = || rustls::ConnectionTrafficSecrets::Aes256Gcm {
        key: AeadKey::from([9; 32]),
        iv: Iv::from([3; 12]),
    };
    let mut sealer = Sealer::new(&secrets(), 0, u64::MAX).unwrap();
    let data = random_bytes("tls-tickets", 100_000);
    let trailer = random_bytes("tls-tickets-trailer", 32);
    // A NewSessionTicket as large as a record holds.
    let mut ticket = vec![4u8, 0, 0x3f, 0xfc];
    ticket.resize(MAX_PAYLOAD, 0xab);
    let mut wire = Vec::new();
    sealer
        .seal_to(&data[..50_000], Content::ApplicationData, &mut wire)
        .unwrap();
    // As many tickets in a row as the receiver allows, then one byte of data.
    let mut next = 50_000;
    for i in 1..=200 {
        sealer
            .seal_to(&ticket, Content::Handshake, &mut wire)
            .unwrap();
        if i % u32::from(record::MAX_WITHOUT_DATA) == 0 {
            sealer
                .seal_to(&data[next..next + 1], Content::ApplicationData, &mut wire)
                .unwrap();
            next += 1;
        }
    }
    let mut rest = data[next..].to_vec();
    rest.extend_from_slice(&trailer);
    sealer
        .seal_to(&rest, Content::ApplicationData, &mut wire)
        .unwrap();
    assert!(
        wire.len() > 3 * RECEIVE_BUFFER,
        "not enough records without data"
    );
    let keys: Keys = Arc::new(std::sync::Mutex::new(Box::new(NoRekey)));
    let rx = Receiver {
        sealer: None,
        opener: Opener::new(&secrets(), 0).unwrap(),
        keys,
        plain: Vec::new(),
        cipher: Vec::new(),
        peer_closed: false,
    };
    // One buffer, which the consumer hands back, as the writer thread does.
    let pool = std::cell::RefCell::new(vec![Vec::new()]);
    let mut body = Vec::new();
    let tail = rx
        .run(
            &mut wire.as_slice(),
            data.len() as u64,
            32,
            || pool.borrow_mut().pop(),
            |_| {},
            |o| {
                body.extend_from_slice(&o.buf[..o.len]);
                pool.borrow_mut().push(o.buf);
                true
            },
        )
        .unwrap();
    assert!(body == data, "received bytes differ");
    assert_eq!(tail, trailer);
}

mod stock;
