//! UDP I/O for the load generator: one connected socket per simulated client, batched
//! receives with `recvmmsg` and readiness with `epoll` (through [`super::sys`]), so one
//! thread can drive many thousands of sockets while leaving the other core to the server.
//! Linux only.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::epoll::{Epoll, EpollEvent};

use super::sys;

/// Clients per loopback address (127.0.0.1, 127.0.0.2, ...): well inside one address's
/// ephemeral ports, and under the server's default `--max-clients-per-ip` (10,000), which
/// therefore stays as it is.
pub const CLIENTS_PER_IP: usize = 5_000;

/// The loopback address socket `s` sends from, when each socket serves up to
/// `per_sock` clients one after the other: at most [`CLIENTS_PER_IP`] clients per address.
pub fn sock_ip(s: usize, per_sock: usize) -> IpAddr {
    let socks_per_ip = (CLIENTS_PER_IP / per_sock.max(1)).max(1);
    let k = (s / socks_per_ip) as u32 + 1;
    IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | k))
}

/// Datagrams per `recvmmsg` call.
pub const RECV_BATCH: usize = 64;
/// Receive slot size: larger than any valid datagram, so an oversized one is detected.
const SLOT: usize = 2048;
/// Readiness events taken per `epoll_wait` (level-triggered: sockets left over are
/// reported again on the next call).
const EVENTS: usize = 1024;

/// A non-blocking UDP socket on loopback address `ip` (a port of its own), connected to
/// `server` (only its datagrams are received; no address per send). Buffers are the
/// system's defaults: one client has a handful of datagrams in flight at most.
pub fn client_socket(ip: IpAddr, server: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::new(ip, 0))?;
    s.connect(server)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Receive slots for `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<u8>,
    lens: [usize; RECV_BATCH],
    headers: sys::Headers,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![0u8; SLOT * RECV_BATCH],
            lens: [0; RECV_BATCH],
            headers: sys::Headers::new(RECV_BATCH),
        }
    }
}

impl RecvBatch {
    /// Reads up to [`RECV_BATCH`] datagrams without blocking; 0 when none is queued.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> usize {
        loop {
            let mut chunks = self.bufs.chunks_exact_mut(SLOT);
            let mut slots: [[IoSliceMut<'_>; 1]; RECV_BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
            match sys::recv_batch(fd, &mut self.headers, &mut slots, &mut self.lens) {
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EAGAIN: nothing queued. ECONNREFUSED: a pending ICMP error, consumed
                // by this call; report nothing now, the caller polls again.
                Err(_) => return 0,
            }
        }
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.bufs[i * SLOT..i * SLOT + self.lens[i].min(SLOT)]
    }
}

/// Level-triggered epoll over the sockets, each registered with its index.
pub struct Poller {
    epoll: Epoll,
    events: Vec<EpollEvent>,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        Ok(Poller {
            epoll: sys::epoll_new()?,
            events: vec![EpollEvent::empty(); EVENTS],
        })
    }

    pub fn add(&mut self, sock: &UdpSocket, token: u64) -> io::Result<()> {
        sys::epoll_add(&self.epoll, sock.as_fd(), token)
    }

    /// Waits up to `timeout_ms` for readable sockets; appends their tokens to `ready`.
    pub fn wait(&mut self, timeout_ms: u16, ready: &mut Vec<u64>) {
        ready.clear();
        // An error can only be EINTR here (the descriptors are ours and valid): no
        // socket is ready this turn, the next turn waits again.
        let n = sys::epoll_wait(&self.epoll, &mut self.events, timeout_ms).unwrap_or(0);
        ready.extend(self.events[..n].iter().map(|ev| ev.data()));
    }
}
