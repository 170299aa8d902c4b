//! The index server's thin tokio driver: moves datagrams between a pre-bound UDP socket
//! and the [`Index`], persists each batch's changes before that batch's replies leave, and
//! wakes the index when its next deadline comes.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::index::{Config, Index};
use crate::proto::MAX_DATAGRAM;
use crate::store::Store;

/// Datagrams read before one commit: the group-commit batch size.
const BATCH: usize = 1024;

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("cannot persist the table: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Binds the server socket: `bind` if given, else all interfaces, IPv6 and IPv4 together
/// where the system allows, IPv4 only otherwise.
pub fn bind(bind: Option<IpAddr>, port: u16) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let make = |addr: SocketAddr, dual: bool| -> io::Result<std::net::UdpSocket> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if dual {
            s.set_only_v6(false)?;
        }
        // Large buffers absorb bursts (hundreds of clients registering at once).
        let _ = s.set_recv_buffer_size(8 << 20);
        let _ = s.set_send_buffer_size(8 << 20);
        s.bind(&addr.into())?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    match bind {
        Some(ip) => make(SocketAddr::new(ip, port), false),
        None => make(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            true,
        )
        .or_else(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                Err(e)
            } else {
                make(SocketAddr::from(([0, 0, 0, 0], port)), false)
            }
        }),
    }
}

/// Runs the index on `socket` until `shutdown` completes.
pub async fn run(
    socket: UdpSocket,
    mut index: Index,
    mut store: Box<dyn Store>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    tokio::pin!(shutdown);
    loop {
        let deadline = index.poll_timeout();
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = socket.recv_from(&mut buf) => {
                let now = Instant::now();
                match r {
                    Ok((n, src)) => index.handle_datagram(now, src, &buf[..n]),
                    // ICMP port-unreachable from a vanished client surfaces here on some
                    // systems: not our problem, keep serving.
                    Err(e) if is_transient(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                // Drain what else is queued: one commit for the whole batch.
                for _ in 1..BATCH {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, src)) => index.handle_datagram(now, src, &buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if is_transient(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            _ = sleep_until(deadline) => {}
        }
        let now = Instant::now();
        if index.poll_timeout().is_some_and(|t| t <= now) {
            index.handle_timeout(now);
        }
        let ops = index.take_store_ops();
        if !ops.is_empty() {
            // Durable before any reply of this batch leaves.
            store.commit(&ops)?;
        }
        while let Some((dst, bytes)) = index.poll_transmit() {
            send(&socket, dst, &bytes).await;
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn send(socket: &UdpSocket, dst: SocketAddr, bytes: &[u8]) {
    loop {
        match socket.try_send_to(bytes, dst) {
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    return;
                }
            }
            // A datagram that cannot leave (unreachable address) is lost like any other:
            // the retry logic covers it.
            Err(_) => return,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// The index settings an operator chose, on top of the defaults.
pub fn index_config(opts: &crate::cli::ServerOpts) -> Config {
    let mut cfg = Config::default();
    if let Some(ms) = opts.heartbeat_ms {
        cfg.heartbeat = std::time::Duration::from_millis(ms.max(1));
        cfg.offline_after = cfg.heartbeat * 3;
    }
    if let Some(ms) = opts.offline_after_ms {
        cfg.offline_after = std::time::Duration::from_millis(ms.max(1));
    }
    if let Some(n) = opts.rate_limit {
        cfg.rate_limit = n;
    }
    if let Some(n) = opts.max_clients_per_ip {
        cfg.max_clients_per_ip = n;
    }
    cfg
}

/// The first non-loopback IPv4 address of this host, to tell clients where to connect.
/// Listing interfaces sends nothing anywhere.
pub fn primary_ip() -> Option<IpAddr> {
    if_addrs::get_if_addrs()
        .ok()?
        .into_iter()
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
}
