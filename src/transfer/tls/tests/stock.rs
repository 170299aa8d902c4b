//! Differential tests: our record layer and stock rustls (tokio-rustls) on the same
//! streams. Where stock rustls cannot be made to send an edge case (padding, oversized
//! records, a ticket to a server), our side builds it with the core's `Sealer`
//! (`seal_inner`) and both stacks must come to the same verdict.

use rustls::AlertDescription;
use tokio_rustls::TlsAcceptor;

use super::*;

fn rustls_error(e: &std::io::Error) -> Option<rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>().cloned()
}

fn record_error(e: &std::io::Error) -> Option<RecordError> {
    e.get_ref()?.downcast_ref::<RecordError>().cloned()
}

/// A NewSessionTicket rustls can parse: lifetime, age_add, nonce, ticket, no extensions.
const TICKET: [u8; 19] = [
    4, 0, 0, 15, 0, 0, 0x0e, 0x10, 1, 2, 3, 4, 1, 7, 0, 1, 9, 0, 0,
];

/// Seals `inner` (payload, type, padding) as one record onto the stream's write buffer.
fn queue_inner(tls: &mut TlsStream, inner: &[u8]) {
    let sealer = tls.sealer.as_mut().unwrap();
    sealer.seal_inner(inner, &mut tls.wbuf).unwrap();
}

/// Every test here talks to a stock TLS stack over a socket: a regression that leaves one
/// side waiting (a missing alert or close_notify) must fail the test, not hang the suite.
async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(std::time::Duration::from_secs(60), test)
        .await
        .expect("the exchange hung instead of ending");
}

/// Connects as a client, with stock rustls (`stock`) or our stream, and reads until the
/// server ends; then sends close_notify when `close`. Returns what arrived, or the read's
/// error.
async fn read_all(
    stock: bool,
    sock: TcpStream,
    cfg: Arc<rustls::ClientConfig>,
    close: bool,
) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    if stock {
        let mut tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(server_name(), sock)
            .await?;
        tls.read_to_end(&mut got).await?;
        if close {
            tls.shutdown().await?;
        }
    } else {
        let mut tls = connect(sock, cfg, server_name()).await?;
        tls.read_to_end(&mut got).await?;
        if close {
            tls.shutdown().await?;
        }
    }
    Ok(got)
}

/// The alert a peer ended the connection with, as our stream reports it.
async fn alert_from(tls: &mut TlsStream) -> Option<u8> {
    let mut b = [0u8; 64];
    loop {
        match tls.read(&mut b).await {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => match record_error(&e) {
                Some(RecordError::Alert(d)) => return Some(d),
                _ => return None,
            },
        }
    }
}

/// A ticket is for clients: a server refuses one with unexpected_message, ours as stock
/// rustls does (stock clients never send one, so our client seals it by hand).
#[tokio::test]
async fn a_server_refuses_a_session_ticket_as_rustls_does() {
    bounded(async {
        let (server_id, client_id) = (identity(), identity());
        for stock in [false, true] {
            let (c, s) = tcp_pair().await;
            let cfg = server_id.server_config();
            let server = tokio::spawn(async move {
                let mut b = [0u8; 8];
                if stock {
                    let mut tls = TlsAcceptor::from(cfg).accept(s).await.unwrap();
                    let e = tls.read(&mut b).await.unwrap_err();
                    assert!(
                        matches!(
                            rustls_error(&e),
                            Some(rustls::Error::InappropriateHandshakeMessage { .. })
                        ),
                        "{e}"
                    );
                } else {
                    let mut tls = accept(s, cfg).await.unwrap();
                    let e = tls.read(&mut b).await.unwrap_err();
                    assert_eq!(record_error(&e), Some(RecordError::UnexpectedMessage(4)));
                }
            });
            let (cfg, _) = client_id.client_config(server_id.public_key()).unwrap();
            let mut tls = connect(c, cfg, server_name()).await.unwrap();
            let mut inner = TICKET.to_vec();
            inner.push(22);
            queue_inner(&mut tls, &inner);
            tls.flush().await.unwrap();
            assert_eq!(
                alert_from(&mut tls).await,
                Some(record::alert::UNEXPECTED_MESSAGE),
                "stock: {stock}"
            );
            server.await.unwrap();
        }
    })
    .await;
}

/// What one record does to a receiver: the data it delivers before the sender's
/// close_notify, or a refusal with the alert it answers with, if any.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Data(Vec<u8>),
    Refused(Option<u8>),
}

/// Our client sends `inner` as one record, then close_notify, to a stock rustls server
/// (`stock`) or ours; returns what the server made of it.
async fn verdict_on(inner: &[u8], stock: bool) -> Verdict {
    let (server_id, client_id) = (identity(), identity());
    let (c, s) = tcp_pair().await;
    let cfg = server_id.server_config();
    let server = tokio::spawn(async move {
        let mut got = Vec::new();
        if stock {
            let mut tls = TlsAcceptor::from(cfg).accept(s).await.unwrap();
            let r = tls.read_to_end(&mut got).await;
            let _ = tls.shutdown().await;
            r.map_err(|e| rustls_error(&e))
        } else {
            let mut tls = accept(s, cfg).await.unwrap();
            let r = tls.read_to_end(&mut got).await;
            let _ = tls.shutdown().await;
            r.map_err(|_| None)
        }
        .map(|_| got)
    });
    let (cfg, _) = client_id.client_config(server_id.public_key()).unwrap();
    let mut tls = connect(c, cfg, server_name()).await.unwrap();
    queue_inner(&mut tls, inner);
    // close_notify, but the socket stays open for the answer.
    tls.queue(&record::CLOSE_NOTIFY, Content::Alert).unwrap();
    let _ = tls.flush().await;
    let alert = alert_from(&mut tls).await;
    match server.await.unwrap() {
        Ok(data) => {
            assert_eq!(alert, None);
            Verdict::Data(data)
        }
        Err(_) => Verdict::Refused(alert),
    }
}

/// Padding, the 2^14 + 1 inner plaintext and 2^14 + 256 ciphertext boundaries, and an
/// all-zero record: our opener and stock rustls agree on each, down to the alert. Stock
/// rustls never pads nor oversizes, so these records are sealed by hand.
#[tokio::test]
async fn padding_and_size_boundaries_agree_with_stock_rustls() {
    bounded(async {
        const MAX: usize = record::MAX_PAYLOAD;
        let full = |pad: usize| {
            let mut v = vec![0x61; MAX];
            v.push(23);
            v.resize(MAX + 1 + pad, 0);
            v
        };
        let mut padded = b"pad".to_vec();
        padded.push(23);
        padded.resize(300, 0);
        let cases = [
            ("padded", padded, Verdict::Data(b"pad".to_vec())),
            ("inner 2^14 + 1", full(0), Verdict::Data(vec![0x61; MAX])),
            ("inner 2^14 + 2", full(1), Verdict::Refused(Some(22))),
            // Ciphertext 2^14 + 256, the most a header may announce, but inner too long.
            (
                "ciphertext 2^14 + 256",
                full(239),
                Verdict::Refused(Some(22)),
            ),
            (
                "ciphertext 2^14 + 257",
                full(240),
                Verdict::Refused(Some(22)),
            ),
            ("no content type", vec![0; 20], Verdict::Refused(Some(10))),
            ("empty data record", vec![23], Verdict::Data(Vec::new())),
        ];
        for (what, inner, want) in cases {
            let ours = verdict_on(&inner, false).await;
            let mut theirs = verdict_on(&inner, true).await;
            if what == "no content type" {
                // rustls 0.23 refuses it (`IllegalTlsInnerPlaintext`) but sends no alert
                // (`handle_deframe_error` has none for it); RFC 8446 §5.4 asks for
                // unexpected_message, which we send.
                assert_eq!(theirs, Verdict::Refused(None), "{what}");
                theirs = Verdict::Refused(Some(10));
            }
            assert_eq!(ours, theirs, "{what}: ours and stock rustls disagree");
            assert_eq!(ours, want, "{what}");
        }
    })
    .await;
}

/// Bad bytes from a stock rustls peer (written under its record layer): our stream and
/// our bulk receiver refuse them with a typed error and tell the peer with the matching
/// alert, sealed so that stock rustls reads it.
#[tokio::test]
async fn stock_rustls_gets_the_alert_that_matches_our_error() {
    bounded(async {
        let (server_id, client_id) = (identity(), identity());
        let mut forged = vec![23, 3, 3, 0, 40];
        forged.resize(45, 0x5a);
        let cases = [
            (
                forged,
                RecordError::BadRecordMac,
                AlertDescription::BadRecordMac,
            ),
            (
                vec![23, 3, 3, 0x41, 0x01],
                RecordError::TooLong(0x4101),
                AlertDescription::RecordOverflow,
            ),
            (
                vec![22, 3, 3, 0, 20],
                RecordError::BadHeader,
                AlertDescription::DecodeError,
            ),
        ];
        for (raw, ours, theirs) in cases {
            for bulk in [false, true] {
                let (c, s) = tcp_pair().await;
                let cfg = server_id.server_config();
                let raw = raw.clone();
                let server = tokio::spawn(async move {
                    let mut tls = TlsAcceptor::from(cfg).accept(s).await.unwrap();
                    tls.write_all(b"fine").await.unwrap();
                    tls.flush().await.unwrap();
                    tls.get_mut().0.write_all(&raw).await.unwrap();
                    let e = tls.read(&mut [0u8; 16]).await.unwrap_err();
                    rustls_error(&e)
                });
                let (cfg, _) = client_id.client_config(server_id.public_key()).unwrap();
                let mut tls = connect(c, cfg, server_name()).await.unwrap();
                let mut got = [0u8; 4];
                tls.read_exact(&mut got).await.unwrap();
                if bulk {
                    let (sock, rx) = tls.into_receiver();
                    let mut sock = sock.into_tcp().into_std().unwrap();
                    sock.set_nonblocking(false).unwrap();
                    let r = tokio::task::spawn_blocking(move || {
                        rx.run(&mut sock, 1 << 20, 0, || Some(Vec::new()), |_| {}, |_| true)
                    })
                    .await
                    .unwrap();
                    match r {
                        Err(ReceiveError::Record(e)) => assert_eq!(e, ours),
                        other => panic!("{other:?}"),
                    }
                } else {
                    let e = tls.read(&mut [0u8; 16]).await.unwrap_err();
                    assert_eq!(record_error(&e), Some(ours.clone()));
                }
                assert_eq!(
                    server.await.unwrap(),
                    Some(rustls::Error::AlertReceived(theirs)),
                    "bulk: {bulk}"
                );
            }
        }
    })
    .await;
}

/// Key updates from stock rustls with both flags: `refresh_traffic_keys` sends one with
/// update_requested, and rustls answers ours (requested, sealed by hand: our sender only
/// requests none) with one without. Data flows on in both directions.
#[tokio::test]
async fn key_updates_from_stock_rustls_with_both_flags() {
    bounded(async {
        let (server_id, client_id) = (identity(), identity());
        let (c, s) = tcp_pair().await;
        let cfg = server_id.server_config();
        let server = tokio::spawn(async move {
            let mut tls = TlsAcceptor::from(cfg).accept(s).await.unwrap();
            tls.write_all(b"one").await.unwrap();
            tls.get_mut().1.refresh_traffic_keys().unwrap();
            tls.write_all(b"two").await.unwrap();
            tls.flush().await.unwrap();
            let mut b = [0u8; 4];
            tls.read_exact(&mut b[..3]).await.unwrap();
            assert_eq!(&b[..3], b"ack");
            tls.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"ack2");
            // Our requested update came with "ack2": rustls' answer goes out first.
            tls.write_all(b"three").await.unwrap();
            tls.shutdown().await.unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await.unwrap();
        });
        let (cfg, _) = client_id.client_config(server_id.public_key()).unwrap();
        let mut tls = connect(c, cfg, server_name()).await.unwrap();
        let mut b = [0u8; 6];
        tls.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"onetwo");
        assert!(tls.update_owed, "rustls' update did not request ours");
        tls.write_all(b"ack").await.unwrap();
        tls.flush().await.unwrap();
        let keys = tls.keys.clone();
        let sealer = tls.sealer.as_mut().unwrap();
        sealer
            .seal_to(&[24, 0, 0, 1, 1], Content::Handshake, &mut tls.wbuf)
            .unwrap();
        next_tx(&keys, sealer).unwrap();
        tls.write_all(b"ack2").await.unwrap();
        tls.flush().await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"three");
        tls.shutdown().await.unwrap();
        server.await.unwrap();
    })
    .await;
}

/// rustls' own limit, from stock rustls: 32 key updates in a row (after its tickets) are
/// fine, the 33rd without data in between is refused with unexpected_message.
#[tokio::test]
async fn key_updates_without_data_from_stock_rustls_are_capped() {
    bounded(async {
        let (server_id, client_id) = (identity(), identity());
        for updates in [32, 33] {
            let (c, s) = tcp_pair().await;
            let cfg = server_id.server_config();
            let server = tokio::spawn(async move {
                let mut tls = TlsAcceptor::from(cfg).accept(s).await.unwrap();
                tls.write_all(b"a").await.unwrap();
                for _ in 0..updates {
                    tls.get_mut().1.refresh_traffic_keys().unwrap();
                }
                tls.write_all(b"b").await.unwrap();
                tls.flush().await.unwrap();
                let mut b = [0u8; 1];
                tls.read(&mut b).await.map_err(|e| rustls_error(&e))
            });
            let (cfg, _) = client_id.client_config(server_id.public_key()).unwrap();
            let mut tls = connect(c, cfg, server_name()).await.unwrap();
            let mut b = [0u8; 2];
            let r = tls.read_exact(&mut b).await;
            if updates == 32 {
                r.unwrap();
                assert_eq!(&b, b"ab");
                tls.shutdown().await.unwrap();
                server.await.unwrap().unwrap();
            } else {
                let e = r.unwrap_err();
                assert_eq!(record_error(&e), Some(RecordError::TooManyWithoutData));
                assert_eq!(
                    server.await.unwrap(),
                    Err(Some(rustls::Error::AlertReceived(
                        AlertDescription::UnexpectedMessage
                    )))
                );
            }
        }
    })
    .await;
}

/// Tickets from stock rustls (it sends some after the handshake; here 8, and several
/// coalesced in one record by hand, which stock rustls does not do after the handshake)
/// are skipped by our client as by a stock client.
#[tokio::test]
async fn tickets_from_stock_rustls_and_coalesced_ones_are_skipped() {
    bounded(async {
        let (server_id, client_id) = (identity(), identity());
        let (c, s) = tcp_pair().await;
        let mut cfg = (*server_id.server_config()).clone();
        // (Our config turns tickets off; a stock server with storage sends them.)
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(16);
        cfg.send_tls13_tickets = 8;
        let server = tokio::spawn(async move {
            let mut tls = TlsAcceptor::from(Arc::new(cfg)).accept(s).await.unwrap();
            tls.write_all(b"data").await.unwrap();
            tls.shutdown().await.unwrap();
        });
        let (ccfg, _) = client_id.client_config(server_id.public_key()).unwrap();
        let mut tls = connect(c, ccfg, server_name()).await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"data");
        server.await.unwrap();

        // Three tickets in one record, from our server, to a stock client and ours.
        let mut inner = [TICKET; 3].concat();
        inner.push(22);
        for stock in [false, true] {
            let (c, s) = tcp_pair().await;
            let cfg = server_id.server_config();
            let inner = inner.clone();
            let server = tokio::spawn(async move {
                let mut tls = accept(s, cfg).await.unwrap();
                queue_inner(&mut tls, &inner);
                tls.write_all(b"after").await.unwrap();
                tls.shutdown().await.unwrap();
            });
            let (ccfg, _) = client_id.client_config(server_id.public_key()).unwrap();
            let got = read_all(stock, c, ccfg, false).await.unwrap();
            assert_eq!(got, b"after", "stock: {stock}");
            server.await.unwrap();
        }
    })
    .await;
}

/// A stock rustls server with a small `max_fragment_size` splits its tickets over
/// several records; our client joins them as a stock client does.
#[tokio::test]
async fn split_tickets_from_stock_rustls_are_joined() {
    bounded(async {
        let (server_id, client_id) = (identity(), identity());
        for stock in [true, false] {
            let (c, s) = tcp_pair().await;
            let mut cfg = (*server_id.server_config()).clone();
            cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(16);
            cfg.send_tls13_tickets = 2;
            cfg.max_fragment_size = Some(64);
            let server = tokio::spawn(async move {
                let mut tls = TlsAcceptor::from(Arc::new(cfg)).accept(s).await.unwrap();
                tls.write_all(b"data").await.unwrap();
                tls.get_mut().1.refresh_traffic_keys().unwrap();
                tls.write_all(b"more").await.unwrap();
                tls.shutdown().await.unwrap();
                let mut rest = Vec::new();
                tls.read_to_end(&mut rest).await.unwrap();
            });
            let (ccfg, _) = client_id.client_config(server_id.public_key()).unwrap();
            let got = read_all(stock, c, ccfg, true).await.unwrap();
            assert_eq!(got, b"datamore", "stock: {stock}");
            server.await.unwrap();
        }
    })
    .await;
}

/// Nothing may come between the fragments of a handshake message: a data record there
/// is refused by stock rustls and by us (a stock client never interleaves,
/// so our server seals the records by hand).
#[tokio::test]
async fn a_record_inside_a_split_handshake_message_is_refused_as_by_rustls() {
    bounded(async {
        let (server_id, client_id) = (identity(), identity());
        for stock in [false, true] {
            let (c, s) = tcp_pair().await;
            let cfg = server_id.server_config();
            let server = tokio::spawn(async move {
                let mut tls = accept(s, cfg).await.unwrap();
                queue_inner(&mut tls, &[&TICKET[..7], &[22]].concat());
                queue_inner(&mut tls, b"x\x17");
                queue_inner(&mut tls, &[&TICKET[7..], &[22]].concat());
                tls.flush().await.unwrap();
                alert_from(&mut tls).await
            });
            let (ccfg, _) = client_id.client_config(server_id.public_key()).unwrap();
            let e = read_all(stock, c, ccfg, false).await.unwrap_err();
            if stock {
                assert!(
                    matches!(rustls_error(&e), Some(rustls::Error::PeerMisbehaved(_))),
                    "{e}"
                );
            } else {
                assert_eq!(record_error(&e), Some(RecordError::Interleaved));
            }
            // rustls 0.23 refuses it (`MessageInterleavedWithHandshakeMessage`) without an
            // alert (`handle_deframe_error` has none for it); we send unexpected_message.
            let want = (!stock).then_some(record::alert::UNEXPECTED_MESSAGE);
            assert_eq!(server.await.unwrap(), want, "stock: {stock}");
        }
    })
    .await;
}

/// Accepts any server certificate: the cipher suite test below only needs a stock client
/// that our server accepts (it presents the client identity our server checks).
#[derive(Debug)]
struct AnyServer(Vec<rustls::SignatureScheme>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2".into()))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.clone()
    }
}

/// Every TLS 1.3 suite rustls offers (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305):
/// a stock client restricted to it and our server exchange data both ways, through key
/// updates on both sides.
#[tokio::test]
async fn every_tls13_cipher_suite_of_rustls_works_with_ours() {
    bounded(async {
        use rustls::crypto::ring::{self as ring_provider, cipher_suite};
        let (server_id, client_id) = (identity(), identity());
        let up = random_bytes("tls-suite-up", 100_000);
        let down = random_bytes("tls-suite-down", 300_000);
        for suite in [
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let (c, s) = tcp_pair().await;
            let cfg = server_id.server_config();
            let (want_up, send_down) = (up.clone(), down.clone());
            let server = tokio::spawn(async move {
                let mut tls = accept(s, cfg).await.unwrap();
                tls.set_key_update_limit(5);
                let mut got = vec![0u8; want_up.len()];
                tls.read_exact(&mut got).await.unwrap();
                assert!(got == want_up, "request bytes differ");
                tls.write_all(&send_down).await.unwrap();
                tls.shutdown().await.unwrap();
            });
            let (base, _) = client_id.client_config(server_id.public_key()).unwrap();
            let mut provider = ring_provider::default_provider();
            provider.cipher_suites = vec![suite];
            let schemes = provider
                .signature_verification_algorithms
                .supported_schemes();
            let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(schemes)))
                .with_client_cert_resolver(base.client_auth_cert_resolver.clone());
            cfg.alpn_protocols.clone_from(&base.alpn_protocols);
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(server_name(), c)
                .await
                .unwrap();
            assert_eq!(
                tls.get_ref().1.negotiated_cipher_suite(),
                Some(suite),
                "{suite:?}"
            );
            tls.write_all(&up[..50_000]).await.unwrap();
            tls.get_mut().1.refresh_traffic_keys().unwrap();
            tls.write_all(&up[50_000..]).await.unwrap();
            tls.flush().await.unwrap();
            let mut got = Vec::new();
            tls.read_to_end(&mut got).await.unwrap();
            assert!(got == down, "{suite:?}: received bytes differ");
            server.await.unwrap();
        }
    })
    .await;
}
