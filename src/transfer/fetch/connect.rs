//! Reaching the owner: the TCP connection, the mode byte exchange, the TLS handshake
//! with the owner's pinned key, and sending the request and reading the answer.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::transfer::link::Link;
use tokio::time::timeout;

use super::{Closed, FetchError, FetchEvent, FetchSpec, Mode, ProtocolError, Refusal, RefusalKind};
use crate::identity::fingerprint;
use crate::transfer::header::{MAX_RESPONSE_LEN, Response};
use crate::transfer::secure::{
    MODE_BUSY, MODE_PLAIN, MODE_QUIC, MODE_TLS, Presented, Security, SeenKey, server_name,
};
use crate::transfer::tls::{self, TlsStream};
use crate::transfer::{ReadHeaderError, printable, read_header};

/// What a TLS connection needs: the client config pinned to the owner's key, the slot
/// it reports a refused key in, and that key (for messages).
pub(super) struct TlsSetup {
    config: std::sync::Arc<rustls::ClientConfig>,
    seen: SeenKey,
    expected: [u8; 32],
}

impl TlsSetup {
    /// The setup for `security`: `None` for plaintext. TLS needs the owner's key.
    pub(super) fn new(security: &Security, spec: &FetchSpec) -> Result<Option<Self>, FetchError> {
        let Security::Tls(id) = security else {
            return Ok(None);
        };
        let Some(expected) = spec.peer_key else {
            return Err(FetchError::NoPeerKey(printable(&spec.owner)));
        };
        let (config, seen) = id
            .client_config(expected)
            .map_err(|e| FetchError::Tls(printable(&spec.owner), e.to_string()))?;
        Ok(Some(TlsSetup {
            config,
            seen,
            expected,
        }))
    }
}

/// The connection once the modes agreed (and, for TLS, the owner's key was checked).
// One per transfer, moved a handful of times: the size does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum PeerConn {
    Plain(Link),
    Tls(Box<TlsStream>),
}

/// The owner's answer and the connection the data follows on.
pub(super) struct Answered {
    pub conn: PeerConn,
    pub resp: Response,
    /// Bytes read past the answer: the first piece of the data.
    pub leftover: Vec<u8>,
}

/// Connects to `spec.peer` (or takes `given`, a connection to the owner made another
/// way), agrees on the mode (`tls`: `None` for plaintext), secures the connection,
/// sends the request `request` makes and reads the answer. `request` is told whether
/// the connection authenticates every byte between the pinned keys (our TLS, or QUIC's
/// packet protection): only then may the owner hash for us. Not cancellable by itself: the caller races it
/// against cancel.
///
/// On a punched QUIC stream with TLS the mode is [`MODE_QUIC`]: the QUIC handshake
/// already authenticated the owner's key, which must be `spec.peer_key`, and the
/// protocol runs in plaintext inside QUIC's encryption.
pub(super) async fn connect<R>(
    spec: &FetchSpec,
    given: Option<Link>,
    tls: Option<&TlsSetup>,
    request: R,
    on_event: &mut (impl FnMut(FetchEvent) + Send),
) -> Result<Answered, FetchError>
where
    R: FnOnce(bool) -> Result<Vec<u8>, FetchError> + Send,
{
    let mut stream = match (given, &spec.dial) {
        (Some(s), _) => s,
        (None, Some(d)) => d.0.dial(spec.peer, spec.timeout).await?,
        (None, None) => direct(spec.peer, spec.timeout).await?.into(),
    };
    stream.set_nodelay();
    on_event(FetchEvent::Connected);
    let owner = printable(&spec.owner);
    let quic = stream.quic_peer_key();
    let ours = match (tls, quic) {
        (None, _) => MODE_PLAIN,
        (Some(_), None) => MODE_TLS,
        (Some(_), Some(_)) => MODE_QUIC,
    };
    let theirs = exchange_modes(&mut stream, ours, spec.timeout).await?;
    match (theirs, tls) {
        (MODE_PLAIN, None) => {
            let (resp, leftover) = exchange(&mut stream, &request(false)?, spec.timeout).await?;
            Ok(Answered {
                conn: PeerConn::Plain(stream),
                resp,
                leftover,
            })
        }
        (MODE_TLS, Some(setup)) if ours == MODE_TLS => {
            let mut tls = handshake(stream, setup, owner, spec.timeout).await?;
            let (resp, leftover) = exchange(&mut tls, &request(true)?, spec.timeout).await?;
            Ok(Answered {
                conn: PeerConn::Tls(Box::new(tls)),
                resp,
                leftover,
            })
        }
        (MODE_QUIC, Some(setup)) if ours == MODE_QUIC => {
            // The QUIC layer pinned this already; checked here too, where it is relied on.
            if let Some(k) = quic.filter(|k| *k != setup.expected) {
                return Err(FetchError::WrongKey {
                    owner,
                    expected: fingerprint(&setup.expected),
                    presented: fingerprint(&k),
                });
            }
            // QUIC's packet protection covers the owner's hash as TLS records would.
            let (resp, leftover) = exchange(&mut stream, &request(true)?, spec.timeout).await?;
            Ok(Answered {
                conn: PeerConn::Plain(stream),
                resp,
                leftover,
            })
        }
        // TLS inside QUIC, or QUIC's mode on TCP (where it would mean no security).
        (MODE_TLS | MODE_QUIC, Some(_)) => Err(ProtocolError::ModeNotForLink {
            owner,
            byte: theirs,
        }
        .into()),
        (theirs, tls) => Err(mode_error(theirs, tls.is_some(), owner)),
    }
}

/// A TCP connection to `peer` within `limit`.
pub async fn direct(peer: std::net::SocketAddr, limit: Duration) -> Result<TcpStream, FetchError> {
    match timeout(limit, TcpStream::connect(peer)).await {
        Err(_) => Err(FetchError::Connect(
            peer.to_string(),
            io::Error::new(io::ErrorKind::TimedOut, "timed out"),
        )),
        Ok(Err(e)) => Err(FetchError::Connect(peer.to_string(), e)),
        Ok(Ok(s)) => Ok(s),
    }
}

/// Sends our mode byte and reads the owner's (it sends its own unasked).
async fn exchange_modes(stream: &mut Link, ours: u8, limit: Duration) -> Result<u8, FetchError> {
    let mut theirs = [0u8; 1];
    timeout(limit, async {
        stream.write_all(&[ours]).await?;
        stream.read_exact(&mut theirs).await
    })
    .await
    .map_err(|_| FetchError::Timeout("waiting for the owner's answer"))?
    .map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FetchError::PeerClosed(Closed::WithoutAnswer),
        _ => FetchError::Io(e),
    })?;
    Ok(theirs[0])
}

/// The error for an owner's mode byte that does not match ours (`we_tls`): it is busy,
/// runs in the other mode, or is not a fileapp peer.
pub(super) fn mode_error(theirs: u8, we_tls: bool, owner: String) -> FetchError {
    let ours = if we_tls { Mode::Tls } else { Mode::Plaintext };
    match theirs {
        MODE_BUSY => FetchError::Refused(Refusal {
            owner,
            kind: RefusalKind::Busy,
            detail: "too many transfers in progress, try later".into(),
        }),
        // The punched path's TLS mode, to a plaintext requester: TLS all the same.
        MODE_TLS | MODE_QUIC if !we_tls => FetchError::ModeMismatch {
            owner,
            ours,
            theirs: Mode::Tls,
        },
        MODE_PLAIN if we_tls => FetchError::ModeMismatch {
            owner,
            ours,
            theirs: Mode::Plaintext,
        },
        byte => ProtocolError::UnknownMode { owner, byte }.into(),
    }
}

/// The TLS handshake; the owner must present `setup.expected`.
async fn handshake(
    stream: Link,
    setup: &TlsSetup,
    owner: String,
    limit: Duration,
) -> Result<TlsStream, FetchError> {
    let connecting = tls::connect(stream, setup.config.clone(), server_name());
    let e = match timeout(limit, connecting).await {
        Err(_) => return Err(FetchError::Timeout("in the TLS handshake")),
        Ok(Ok(t)) => return Ok(t),
        Ok(Err(e)) => e,
    };
    let seen = setup.seen.lock().ok().and_then(|s| *s);
    let expected = fingerprint(&setup.expected);
    Err(match seen {
        Some(Presented::Key(k)) => FetchError::WrongKey {
            owner,
            expected,
            presented: fingerprint(&k),
        },
        Some(Presented::NotEd25519) => FetchError::WrongKey {
            owner,
            expected,
            presented: "(not an Ed25519 key)".into(),
        },
        None => FetchError::Tls(owner, tls_error_text(&e)),
    })
}

/// A failed TLS handshake as one line: rustls' error when there is one.
fn tls_error_text(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(a)) => {
            format!("the owner rejected the handshake ({a:?}; does it know our key?)")
        }
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

/// Sends the request and reads the answer on an established stream.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    limit: Duration,
) -> Result<(Response, Vec<u8>), FetchError> {
    timeout(limit, async {
        stream.write_all(request).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| FetchError::Timeout("sending the request"))??;
    let answer = timeout(
        limit,
        read_header(stream, MAX_RESPONSE_LEN, Response::decode),
    )
    .await
    .map_err(|_| FetchError::Timeout("waiting for the owner's answer"))?;
    answer.map_err(|e| match e {
        ReadHeaderError::Io(e) => FetchError::Io(e),
        ReadHeaderError::Closed => FetchError::PeerClosed(Closed::WithoutAnswer),
        ReadHeaderError::Header(e) => ProtocolError::Response(e).into(),
    })
}
