//! The hole-punched path: punch a UDP hole to the peer, run QUIC on it with the same
//! pinned Ed25519 keys as the TCP transfers' TLS, and hand the transfer engine the one
//! QUIC stream ([`QuicStream`]), on which it runs as on a TCP connection.
//!
//! [`punch`] drives the core's sans-io [`Punch`] machine on a fresh UDP socket (probes to
//! the index server until the control channel names the peer's public endpoint, then
//! punches to it), and once the path is open hands the *same* socket to a quinn
//! endpoint, so the NAT mapping the punches opened is the one QUIC uses. The owner is
//! the QUIC server, the requester the client (`connect`); the one bidirectional stream
//! the owner opens carries the usual peer protocol (mode byte, request, data) with no
//! TLS session inside (mode `0xF3`: QUIC's handshake already authenticated both pinned
//! keys, [`QuicStream::peer_key`]); the engine reads and writes it directly (`stream`). See `docs/PROTOCOL.md`,
//! "Hole punching".

mod connect;
mod error;
#[cfg(test)]
mod raw_speed;
mod stream;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::time::Instant as TokioInstant;

pub use connect::{ALPN, CONNECTION_WINDOW, IDLE_TIMEOUT, KEEP_ALIVE, READY, STREAM_WINDOW};
pub use error::PunchError;
pub use fileapp_core::reach::punch::{
    Punch, PunchConfig, PunchFailure, PunchState, Side, parse_probe,
};
pub use stream::{BlockingQuic, LINGER, QuicStop, QuicStream};

use crate::identity::Identity;
use crate::transfer::secure::TlsIdentity;

/// UDP socket buffers of the punched socket (the kernel may grant less).
const UDP_BUFFER: usize = 4 << 20;

/// What one punch needs: which side we are, the transfer's id and our probe secret (both
/// from the control channel), the index server's UDP address, the timing, our identity
/// and the peer's pinned key.
pub struct PunchSpec {
    pub side: Side,
    pub id: [u8; 16],
    pub secret: [u8; 16],
    pub server: SocketAddr,
    pub cfg: PunchConfig,
    pub identity: Arc<Identity>,
    pub peer_key: [u8; 32],
}

/// A punched, authenticated path: the stream the engine runs on, and the peer's public
/// UDP endpoint.
#[derive(Debug)]
pub struct Punched {
    pub stream: QuicStream,
    pub peer: SocketAddr,
}

/// Binds a fresh UDP socket (`0.0.0.0:0`, or `[::]:0` when the server is IPv6; the
/// loopback address instead when the server is on loopback), runs the
/// punch on it (probes to the server, punches to the peer once `peer` yields its
/// endpoint), then hands the same socket to QUIC: the owner accepts one connection whose
/// client certificate is `spec.peer_key`, the requester connects and requires the
/// owner's certificate to be `spec.peer_key`. The returned stream is the one QUIC
/// stream; once it is dropped a task keeps the connection up until both directions end.
pub async fn punch(
    spec: PunchSpec,
    peer: oneshot::Receiver<SocketAddr>,
) -> Result<Punched, PunchError> {
    let tls = TlsIdentity::new(&spec.identity).map_err(|e| PunchError::Setup(e.to_string()))?;
    let socket = bind_for(spec.server).map_err(PunchError::Bind)?;
    let peer_addr = run_punch(&socket, &spec, peer).await?;
    let socket = socket.into_std().map_err(PunchError::Socket)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let config = quinn::EndpointConfig::default();
    let (endpoint, conn, send, recv) = match spec.side {
        Side::Owner => {
            let (server, slot) = connect::server_config(&tls, spec.peer_key)?;
            let endpoint = quinn::Endpoint::new(config, Some(server), socket, runtime)
                .map_err(PunchError::Socket)?;
            let (conn, send, recv) =
                connect::accept(&endpoint, peer_addr, spec.peer_key, &slot).await?;
            (endpoint, conn, send, recv)
        }
        Side::Requester => {
            let (client, seen) = connect::client_config(&tls, spec.peer_key)?;
            let endpoint =
                quinn::Endpoint::new(config, None, socket, runtime).map_err(PunchError::Socket)?;
            let (conn, send, recv) =
                connect::connect(&endpoint, client, &seen, peer_addr, spec.peer_key).await?;
            (endpoint, conn, send, recv)
        }
    };
    Ok(Punched {
        stream: QuicStream::new(send, recv, conn, endpoint),
        peer: peer_addr,
    })
}

/// A non-blocking UDP socket on the wildcard address of `server`'s family, with large
/// buffers (QUIC sends bursts).
fn bind_for(server: SocketAddr) -> io::Result<UdpSocket> {
    // A server on loopback (tests, one machine) means peers on loopback too.
    let any: IpAddr = match (server, server.ip().is_loopback()) {
        (SocketAddr::V4(_), false) => Ipv4Addr::UNSPECIFIED.into(),
        (SocketAddr::V6(_), false) => Ipv6Addr::UNSPECIFIED.into(),
        (SocketAddr::V4(_), true) => Ipv4Addr::LOCALHOST.into(),
        (SocketAddr::V6(_), true) => Ipv6Addr::LOCALHOST.into(),
    };
    let bind = SocketAddr::new(any, 0);
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if bind.is_ipv6() && !server.ip().is_loopback() {
        // IPv4 peers reachable as mapped addresses too.
        let _ = s.set_only_v6(false);
    }
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&bind.into())?;
    UdpSocket::from_std(s.into())
}

/// `to` in the form a socket bound like `local` sends to.
fn for_socket(local: SocketAddr, to: SocketAddr) -> SocketAddr {
    match (local, to.ip()) {
        (SocketAddr::V6(_), IpAddr::V4(v4)) => {
            SocketAddr::new(v4.to_ipv6_mapped().into(), to.port())
        }
        (SocketAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), to.port()),
            None => to,
        },
        _ => to,
    }
}

/// Runs the punch machine on `socket` until the path is open (the peer's endpoint) or
/// it failed. Reads one datagram at a time and stops reading as soon as the path is
/// open: what arrives next (the peer's first QUIC packets) is left for QUIC.
async fn run_punch(
    socket: &UdpSocket,
    spec: &PunchSpec,
    peer: oneshot::Receiver<SocketAddr>,
) -> Result<SocketAddr, PunchError> {
    let local = socket.local_addr().map_err(PunchError::Socket)?;
    let now = || TokioInstant::now().into_std();
    let mut m = Punch::new(
        now(),
        spec.cfg,
        spec.side,
        spec.id,
        spec.secret,
        spec.server,
    );
    let mut peer = Some(peer);
    let mut named = None;
    let mut buf = [0u8; 64];
    loop {
        while let Some((to, d)) = m.poll_transmit() {
            // A failed send is a lost datagram: the schedule resends.
            if let Err(e) = socket.send_to(&d, for_socket(local, to)).await {
                tracing::debug!(%to, "punch send failed: {e}");
            }
        }
        match m.state() {
            PunchState::Open { peer } => return Ok(peer),
            PunchState::Failed(f) => return Err(PunchError::from_failure(f, &spec.cfg, named)),
            PunchState::Learning | PunchState::Punching => {}
        }
        let wake = m.poll_timeout().map(TokioInstant::from_std);
        tokio::select! {
            r = named_peer(&mut peer), if peer.is_some() => {
                peer = None;
                match r {
                    Ok(addr) => {
                        named = Some(addr);
                        m.peer_known(now(), addr);
                    }
                    Err(_) => return Err(PunchError::ControlClosed),
                }
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => m.handle_datagram(now(), from, &buf[..n]),
                // An ICMP error for an earlier datagram: that one was lost, nothing more.
                Err(e) if transient(&e) => {}
                Err(e) => return Err(PunchError::Socket(e)),
            },
            _ = sleep_until(wake) => m.handle_timeout(now()),
        }
    }
}

/// The control channel's answer; never, once taken.
async fn named_peer(
    peer: &mut Option<oneshot::Receiver<SocketAddr>>,
) -> Result<SocketAddr, oneshot::error::RecvError> {
    match peer {
        Some(p) => p.await,
        None => std::future::pending().await,
    }
}

/// Socket errors that say only that an earlier datagram did not arrive.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn sleep_until(at: Option<TokioInstant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn destinations_take_the_sockets_family() {
        let (v4, v6) = (a("0.0.0.0:1"), a("[::]:1"));
        assert_eq!(
            for_socket(v6, a("203.0.113.9:5")),
            a("[::ffff:203.0.113.9]:5")
        );
        assert_eq!(
            for_socket(v4, a("[::ffff:203.0.113.9]:5")),
            a("203.0.113.9:5")
        );
        assert_eq!(for_socket(v4, a("203.0.113.9:5")), a("203.0.113.9:5"));
        assert_eq!(for_socket(v6, a("[2001:db8::1]:5")), a("[2001:db8::1]:5"));
        assert_eq!(for_socket(v4, a("[2001:db8::1]:5")), a("[2001:db8::1]:5"));
        assert!(connect::same_endpoint(
            a("[::ffff:203.0.113.9]:5"),
            a("203.0.113.9:5")
        ));
        assert!(!connect::same_endpoint(
            a("203.0.113.9:6"),
            a("203.0.113.9:5")
        ));
    }

    #[tokio::test]
    async fn the_socket_is_on_loopback_for_a_loopback_server() {
        let s = bind_for(a("127.0.0.1:9")).unwrap();
        assert!(s.local_addr().unwrap().ip().is_loopback());
    }
}
