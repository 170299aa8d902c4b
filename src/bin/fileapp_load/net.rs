//! Batched UDP I/O for the load generator: connected sockets, `sendmmsg`/`recvmmsg` and
//! `epoll`, so one thread can drive 100,000+ datagrams per second while leaving the other
//! core to the server. Linux only.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use fileapp::proto::{EncodeError, MAX_DATAGRAM, Message};

/// Datagrams per `recvmmsg` call.
pub const RECV_BATCH: usize = 64;
/// Datagrams per `sendmmsg` call.
const SEND_BATCH: usize = 256;
/// Receive slot size: larger than any valid datagram, so an oversized one is detected.
const SLOT: usize = 2048;

/// Receive and send buffer asked for on each socket: room for bursts of a whole
/// window of replies and pushes (the kernel caps it at net.core.{r,w}mem_max).
/// `fileapp::server::bind` asks the same for the server's socket, written out there.
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

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
#[derive(Default)]
pub struct OutQueue {
    data: Vec<u8>,
    /// (start, end) of each queued datagram in `data`.
    spans: Vec<(usize, usize)>,
    /// Datagrams at the front already sent.
    head: usize,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
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
    pub fn flush(&mut self, fd: RawFd) -> (u64, u64) {
        let (mut sent, mut failed) = (0u64, 0u64);
        while self.head < self.spans.len() {
            let n = (self.spans.len() - self.head).min(SEND_BATCH);
            self.iov.clear();
            for &(a, b) in &self.spans[self.head..self.head + n] {
                self.iov.push(libc::iovec {
                    iov_base: self.data[a..].as_ptr() as *mut libc::c_void,
                    iov_len: b - a,
                });
            }
            self.hdrs.clear();
            for iov in self.iov.iter_mut() {
                // SAFETY: mmsghdr is plain data; all-zero is a valid value.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov as *mut libc::iovec;
                h.msg_hdr.msg_iovlen = 1;
                self.hdrs.push(h);
            }
            // SAFETY: hdrs and iov point into buffers alive and unmoved for the call.
            let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
            if r > 0 {
                self.head += r as usize;
                sent += r as u64;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => break,
                io::ErrorKind::Interrupted => continue,
                _ => {
                    // ECONNREFUSED (an earlier datagram met a closed port) and the like:
                    // the first datagram is lost, like on the wire.
                    self.head += 1;
                    failed += 1;
                }
            }
        }
        if self.head == self.spans.len() {
            self.data.clear();
            self.spans.clear();
            self.head = 0;
        }
        (sent, failed)
    }
}

/// Receive slots for `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<u8>,
    lens: [usize; RECV_BATCH],
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![0u8; SLOT * RECV_BATCH],
            lens: [0; RECV_BATCH],
        }
    }
}

impl RecvBatch {
    /// Reads up to [`RECV_BATCH`] datagrams without blocking; 0 when none is queued.
    pub fn recv(&mut self, fd: RawFd) -> usize {
        let mut iov: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: plain data, all-zero is valid.
        let mut hdrs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..RECV_BATCH {
            iov[i].iov_base = self.bufs[i * SLOT..].as_mut_ptr() as *mut libc::c_void;
            iov[i].iov_len = SLOT;
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        loop {
            // SAFETY: every header points at its own slot of `bufs`, alive for the call.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    RECV_BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                let n = r as usize;
                for (len, h) in self.lens.iter_mut().zip(&hdrs).take(n) {
                    *len = h.msg_len as usize;
                }
                return n;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => continue,
                // EAGAIN: nothing queued. ECONNREFUSED: a pending ICMP error, consumed
                // by this call; report nothing now, the caller polls again.
                _ => return 0,
            }
        }
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.bufs[i * SLOT..i * SLOT + self.lens[i].min(SLOT)]
    }
}

/// Level-triggered epoll over the sockets, each registered with its index.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: fd is a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
        })
    }

    pub fn add(&mut self, sock: &UdpSocket, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; ev is valid for the call.
        let r = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                sock.as_raw_fd(),
                &mut ev,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` for readable sockets; appends their tokens to `ready`.
    pub fn wait(&mut self, timeout_ms: i32, ready: &mut Vec<u64>) {
        ready.clear();
        // SAFETY: events has room for its length.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        for ev in self.events.iter().take(n.max(0) as usize) {
            ready.push(ev.u64);
        }
    }
}
