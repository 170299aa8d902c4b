//! QUIC on the punched socket: the transport parameters, the TLS configurations (the
//! transfer's own pinned Ed25519 keys, `src/transfer/secure.rs`), the owner's accept and
//! the requester's connect, and what a failed handshake means.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream, VarInt};

use super::PunchError;
use crate::identity::{PublicKey, fingerprint};
use crate::transfer::secure::{KEY_NOT_LISTED_ALERT, PeerKeys, Presented, SeenKey, TlsIdentity};

/// The ALPN of the peer protocol over QUIC.
pub const ALPN: &[u8] = b"fileapp/1";
/// The name in the ClientHello; never checked (keys are pinned).
const SERVER_NAME: &str = "fileapp-peer";
/// Keep-alive: well inside any NAT's UDP mapping timeout (30 s is common).
pub const KEEP_ALIVE: Duration = Duration::from_secs(20);
/// A connection that hears nothing for this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-stream receive window: at 100 ms RTT it allows ~640 Mbit/s on the one stream.
pub const STREAM_WINDOW: u32 = 8 << 20;
/// Connection receive window and send window (the one stream, plus room).
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// The first byte of the one stream, from the owner: it accepted the requester's key
/// (the stream, and so the peer protocol, starts only after it). Not a mode byte.
pub const READY: u8 = 0xF2;
/// The handshake, and for the requester the owner's first bytes, must come this soon.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The transport parameters both sides use. The owner opens the one bidirectional
/// stream; neither side accepts any other.
fn transport(side_accepts_bidi: bool) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE))
        // 30 s fits a QUIC varint of milliseconds.
        .max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok())
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW))
        .max_concurrent_bidi_streams(VarInt::from_u32(u32::from(side_accepts_bidi)))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None);
    Arc::new(t)
}

/// The owner's verifier table: exactly the one pinned key; remembers a key it refused.
struct OnlyKey {
    key: PublicKey,
    refused: Mutex<Option<PublicKey>>,
}

impl PeerKeys for OnlyKey {
    fn key_of(&self, _name: &str) -> Option<PublicKey> {
        Some(self.key)
    }

    fn lists(&self, key: &PublicKey) -> bool {
        if *key == self.key {
            return true;
        }
        if let Ok(mut r) = self.refused.lock() {
            *r = Some(*key);
        }
        false
    }
}

/// The owner's QUIC server configuration and the slot its verifier reports a refused
/// key in.
pub(super) fn server_config(
    tls: &TlsIdentity,
    peer_key: PublicKey,
) -> Result<(quinn::ServerConfig, Arc<OnlyKeySlot>), PunchError> {
    let only = Arc::new(OnlyKey {
        key: peer_key,
        refused: Mutex::new(None),
    });
    let rustls = tls.quic_server_config(only.clone(), ALPN);
    let crypto =
        QuicServerConfig::try_from(rustls).map_err(|e| PunchError::Setup(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport(false));
    Ok((cfg, Arc::new(OnlyKeySlot(only))))
}

/// What the owner's verifier refused, read after a failed handshake.
pub(super) struct OnlyKeySlot(Arc<OnlyKey>);

impl OnlyKeySlot {
    fn refused(&self) -> Option<PublicKey> {
        self.0.refused.lock().ok().and_then(|r| *r)
    }
}

/// The requester's QUIC client configuration, pinned to `peer_key`.
pub(super) fn client_config(
    tls: &TlsIdentity,
    peer_key: PublicKey,
) -> Result<(quinn::ClientConfig, SeenKey), PunchError> {
    let (rustls, seen) = tls
        .quic_client_config(peer_key, ALPN)
        .map_err(|e| PunchError::Setup(e.to_string()))?;
    let crypto =
        QuicClientConfig::try_from(rustls).map_err(|e| PunchError::Setup(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport(true));
    Ok((cfg, seen))
}

/// Did the peer close the connection with TLS alert `alert`?
fn closed_with_alert(e: &ConnectionError, alert: u8) -> bool {
    let code = quinn::TransportErrorCode::crypto(alert);
    match e {
        ConnectionError::ConnectionClosed(c) => c.error_code == code,
        ConnectionError::TransportError(t) => t.code == code,
        _ => false,
    }
}

/// The owner: waits for the requester's connection from `peer` (datagrams from anyone
/// else are not answered), checks its certificate is `peer_key`, opens the one stream
/// and says [`READY`] on it.
pub(super) async fn accept(
    endpoint: &Endpoint,
    peer: SocketAddr,
    peer_key: PublicKey,
    slot: &OnlyKeySlot,
) -> Result<(Connection, SendStream, RecvStream), PunchError> {
    let handshake = async {
        loop {
            let Some(incoming) = endpoint.accept().await else {
                return Err(PunchError::Handshake(peer, "the endpoint closed".into()));
            };
            if !same_endpoint(incoming.remote_address(), peer) {
                incoming.ignore();
                continue;
            }
            // One connection per punch: later attempts are refused.
            endpoint.set_server_config(None);
            let connecting = incoming
                .accept()
                .map_err(|e| PunchError::Handshake(peer, e.to_string()))?;
            return connecting.await.map_err(|e| match slot.refused() {
                Some(k) => wrong_key(peer, peer_key, Presented::Key(k)),
                None => PunchError::Handshake(peer, e.to_string()),
            });
        }
    };
    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| PunchError::Timeout {
            peer,
            after: HANDSHAKE_TIMEOUT,
        })??;
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| PunchError::Handshake(peer, e.to_string()))?;
    send.write_all(&[READY])
        .await
        .map_err(|e| PunchError::Handshake(peer, e.to_string()))?;
    Ok((conn, send, recv))
}

/// The requester: connects to `peer`, which must present `peer_key`, and waits for the
/// owner's stream and its [`READY`] byte: the owner sends it once it accepted our key
/// (in TLS 1.3 the client finishes first, so only this says it did not refuse us).
pub(super) async fn connect(
    endpoint: &Endpoint,
    cfg: quinn::ClientConfig,
    seen: &SeenKey,
    peer: SocketAddr,
    peer_key: PublicKey,
) -> Result<(Connection, SendStream, RecvStream), PunchError> {
    let failed = |e: ConnectionError| {
        if let Some(p) = seen.lock().ok().and_then(|s| *s) {
            return wrong_key(peer, peer_key, p);
        }
        if closed_with_alert(&e, u8::from(KEY_NOT_LISTED_ALERT)) {
            return PunchError::RefusedOurKey(peer);
        }
        PunchError::Handshake(peer, e.to_string())
    };
    let started = async {
        let connecting = endpoint
            .connect_with(cfg, peer, SERVER_NAME)
            .map_err(|e| PunchError::Handshake(peer, e.to_string()))?;
        let conn = connecting.await.map_err(failed)?;
        let (send, mut recv) = conn.accept_bi().await.map_err(failed)?;
        let mut first = [0u8; 1];
        recv.read_exact(&mut first).await.map_err(|e| match e {
            quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(e)) => failed(e),
            e => PunchError::Handshake(peer, e.to_string()),
        })?;
        if first[0] != READY {
            conn.close(VarInt::from_u32(1), b"");
            return Err(PunchError::Handshake(
                peer,
                format!("the stream began with {:#04x}", first[0]),
            ));
        }
        Ok((conn, send, recv))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, started)
        .await
        .map_err(|_| PunchError::Timeout {
            peer,
            after: HANDSHAKE_TIMEOUT,
        })?
}

fn wrong_key(peer: SocketAddr, expected: PublicKey, presented: Presented) -> PunchError {
    PunchError::WrongKey {
        peer,
        expected: fingerprint(&expected),
        presented: match presented {
            Presented::Key(k) => fingerprint(&k),
            Presented::NotEd25519 => "(not an Ed25519 key)".into(),
        },
    }
}

/// The same UDP endpoint, an IPv4 address and its IPv4-mapped IPv6 form alike.
pub(super) fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}
