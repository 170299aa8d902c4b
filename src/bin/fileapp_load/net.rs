//! Batched UDP I/O for the load generator: connected sockets, `sendmmsg`/`recvmmsg` and
//! `epoll` (through [`super::sys`]), so one thread can drive 100,000+ datagrams per
//! second while leaving the other core to the server. Linux only.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};

use fileapp::proto::{EncodeError, MAX_DATAGRAM, Message};
use nix::sys::epoll::{Epoll, EpollEvent};

use super::sys;

/// Datagrams per `recvmmsg` call.
pub const RECV_BATCH: usize = 64;
/// Datagrams per `sendmmsg` call.
const SEND_BATCH: usize = 256;
/// Receive slot size: larger than any valid datagram, so an oversized one is detected.
const SLOT: usize = 2048;
/// Readiness events taken per `epoll_wait`: more than the sockets a run uses.
const EVENTS: usize = 256;

/// Receive and send buffer asked for on each socket: the server's own size, room for
/// bursts of a whole window of replies and pushes (the kernel caps it at
/// net.core.{r,w}mem_max).
pub use fileapp::server::SOCKET_BUFFER_BYTES;

/// A non-blocking UDP socket on 127.0.0.1, connected to `server` (only its datagrams
/// are received; no address per send).
pub fn connected_socket(server: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    let r = socket2::SockRef::from(&s);
    // Capped by net.core.{r,w}mem_max; best effort.
    let _ = r.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = r.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    s.connect(server)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Datagrams queued for one socket, sent in batches by [`OutQueue::flush`].
pub struct OutQueue {
    data: Vec<u8>,
    /// (start, end) of each queued datagram in `data`.
    spans: Vec<(usize, usize)>,
    /// Datagrams at the front already sent.
    head: usize,
    headers: sys::Headers,
    /// The slices of one batch, kept empty between calls for its allocation.
    batch: Vec<[IoSlice<'static>; 1]>,
}

impl Default for OutQueue {
    fn default() -> Self {
        OutQueue {
            data: Vec::new(),
            spans: Vec::new(),
            head: 0,
            headers: sys::Headers::new(SEND_BATCH),
            batch: Vec::with_capacity(SEND_BATCH),
        }
    }
}

impl OutQueue {
    /// Encodes `msg` at the end of the queue; on error nothing is queued.
    pub fn push(&mut self, msg: &Message) -> Result<(), EncodeError> {
        let start = self.data.len();
        self.data.resize(start + MAX_DATAGRAM, 0);
        match msg.encode_into(&mut self.data[start..]) {
            Ok(n) => {
                self.data.truncate(start + n);
                self.spans.push((start, start + n));
                Ok(())
            }
            Err(e) => {
                self.data.truncate(start);
                Err(e)
            }
        }
    }

    /// Queues ready-made bytes (a retransmission).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.spans.push((start, self.data.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.head == self.spans.len()
    }

    /// Sends what the socket takes now. Returns (sent, dropped by a send error).
    /// Datagrams refused with EAGAIN stay queued for the next call.
    pub fn flush(&mut self, fd: BorrowedFd<'_>) -> (u64, u64) {
        let (mut sent, mut failed) = (0u64, 0u64);
        let mut batch = recycle(std::mem::take(&mut self.batch));
        while self.head < self.spans.len() {
            let n = (self.spans.len() - self.head).min(SEND_BATCH);
            batch.clear();
            let spans = &self.spans[self.head..self.head + n];
            batch.extend(spans.iter().map(|&(a, b)| [IoSlice::new(&self.data[a..b])]));
            match sys::send_batch(fd, &mut self.headers, &batch) {
                Ok(0) => break,
                Ok(r) => {
                    self.head += r;
                    sent += r as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // ECONNREFUSED (an earlier datagram met a closed port) and the like:
                    // the first datagram is lost, like on the wire; counted by the caller.
                    self.head += 1;
                    failed += 1;
                }
            }
        }
        self.batch = recycle(batch);
        if self.head == self.spans.len() {
            self.data.clear();
            self.spans.clear();
            self.head = 0;
        }
        (sent, failed)
    }
}

/// `v` emptied and retyped to another lifetime, keeping its allocation: the standard
/// library collects in place when the element layout is the same (and allocates
/// otherwise, which is merely slower). Lets [`OutQueue`] keep a buffer of slices that
/// borrow its data between calls without allocating per batch or any `unsafe`.
fn recycle<'a, 'b>(mut v: Vec<[IoSlice<'a>; 1]>) -> Vec<[IoSlice<'b>; 1]> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector is empty"))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `recycle` is only worth having if the standard library really collects in place.
    #[test]
    fn recycle_keeps_the_allocation() {
        let v: Vec<[IoSlice<'static>; 1]> = Vec::with_capacity(SEND_BATCH);
        let at = v.as_ptr() as usize;
        let w: Vec<[IoSlice<'_>; 1]> = recycle(v);
        assert_eq!(w.as_ptr() as usize, at);
        assert_eq!(w.capacity(), SEND_BATCH);
    }
}
