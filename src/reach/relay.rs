//! The relay of last resort, the driver: two clients that cannot reach each other both
//! connect out to it, and it splices their streams (which carry their usual TLS, so the
//! relay sees only ciphertext). It pairs only what the index server signed a ticket for
//! (`fileapp_core::reach::ticket`); which hello gets which answer is decided by the
//! core's `reach::relay::Relay` state machine. No disk, bounded memory.
//!
//! - [`run`] (`serve.rs`): the accept loop, the hello read with its timeout, the timer
//!   task that gives up halves whose partner did not come.
//! - `splice.rs`: the copy both ways, half-closes propagated, rate-limited by a token
//!   bucket per session and one for the relay's total.
//! - [`connect`]: the client side (hello, status byte).
//!
//! Wire format: `docs/PROTOCOL.md`, "Relay".

mod serve;
mod splice;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use fileapp_core::reach::relay::{
    DEFAULT_HELLO_TIMEOUT, DEFAULT_MAX_SESSIONS, DEFAULT_PAIR_TIMEOUT, HELLO_LEN, HELLO_MAGIC,
    Status, hello_bytes,
};
use fileapp_core::reach::ticket::TICKET_LEN;
pub use serve::run;
pub use splice::COPY_BUFFER;

/// Hellos being read at once, at most (each holds a connection and 94 bytes until its
/// hello timeout); connections beyond it are closed at once.
pub const MAX_PENDING_HELLOS: usize = 1024;
/// Hellos being read at once from one IP address, at most: a quarter of all, so one host
/// holding connections open without a hello leaves room for the others.
pub const MAX_PENDING_HELLOS_PER_IP: usize = 256;

/// Binds the relay's listener: `bind`, or all interfaces (IPv6 and IPv4 on one socket,
/// else IPv4 alone). Non-blocking, for [`run`].
pub fn bind(bind: Option<IpAddr>, port: u16) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let make = |addr: SocketAddr, dual: bool| -> std::io::Result<std::net::TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if dual {
            s.set_only_v6(false)?;
        }
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    match bind {
        Some(ip) => make(SocketAddr::new(ip, port), false),
        None => make(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port), true).or_else(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                Err(e)
            } else {
                make(SocketAddr::from(([0, 0, 0, 0], port)), false)
            }
        }),
    }
}

/// What a relay runs with.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The index server's Ed25519 key: only tickets it signed pair.
    pub server_key: [u8; 32],
    /// Paired sessions plus halves waiting for their partner.
    pub max_sessions: usize,
    /// Bytes per second one session may move (both directions together); `None`:
    /// unlimited.
    pub session_rate: Option<u64>,
    /// Bytes per second all sessions together may move; `None`: unlimited.
    pub total_rate: Option<u64>,
    /// How long a first half waits for its partner.
    pub pair_timeout: Duration,
    /// How long a new connection has to send its hello.
    pub hello_timeout: Duration,
    /// What it has done, read by the server's metrics and status page.
    pub counters: Arc<RelayCounters>,
}

/// A relay's numbers, kept by the relay and read by whoever shows them.
#[derive(Debug, Default)]
pub struct RelayCounters {
    sessions: AtomicU64,
    waiting: AtomicU64,
    paired: AtomicU64,
    refused: AtomicU64,
}

/// A reading of [`RelayCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayNumbers {
    /// Paired sessions now.
    pub sessions: u64,
    /// First halves waiting for their partner now.
    pub waiting: u64,
    /// Sessions paired since start.
    pub paired: u64,
    /// Hellos refused since start (bad or used ticket, full, partner late).
    pub refused: u64,
}

impl RelayCounters {
    pub fn read(&self) -> RelayNumbers {
        RelayNumbers {
            sessions: self.sessions.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            paired: self.paired.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// The gauges, from the pairing state.
    fn now(&self, sessions: usize, waiting: usize) {
        self.sessions.store(sessions as u64, Ordering::Relaxed);
        self.waiting.store(waiting as u64, Ordering::Relaxed);
    }

    fn paired(&self) {
        self.paired.fetch_add(1, Ordering::Relaxed);
    }

    fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

impl RelayConfig {
    /// The defaults: 256 sessions, no rate limit, 10 s to pair, 5 s for the hello.
    pub fn new(server_key: [u8; 32]) -> RelayConfig {
        RelayConfig {
            server_key,
            max_sessions: DEFAULT_MAX_SESSIONS,
            session_rate: None,
            total_rate: None,
            pair_timeout: DEFAULT_PAIR_TIMEOUT,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
            counters: Arc::default(),
        }
    }
}

/// A relay's refusal (its status byte), as the client side reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayRefusal {
    BadTicket,
    Expired,
    AlreadyUsed,
    Full,
    PartnerTimeout,
    /// A status byte this version does not know.
    Unknown(u8),
}

impl RelayRefusal {
    /// The refusal a status byte other than "paired" means.
    pub fn from_byte(b: u8) -> RelayRefusal {
        match Status::from_byte(b) {
            Some(Status::BadTicket) => RelayRefusal::BadTicket,
            Some(Status::Expired) => RelayRefusal::Expired,
            Some(Status::AlreadyUsed) => RelayRefusal::AlreadyUsed,
            Some(Status::Full) => RelayRefusal::Full,
            Some(Status::PartnerTimeout) => RelayRefusal::PartnerTimeout,
            Some(Status::Paired) | None => RelayRefusal::Unknown(b),
        }
    }
}

impl std::fmt::Display for RelayRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayRefusal::BadTicket => f.write_str(
                "the ticket is not the index server's (is the relay set up with its key?)",
            ),
            RelayRefusal::Expired => f.write_str("the ticket has expired"),
            RelayRefusal::AlreadyUsed => f.write_str("the ticket was already used"),
            RelayRefusal::Full => f.write_str("it is full"),
            RelayRefusal::PartnerTimeout => f.write_str("the other side did not arrive in time"),
            RelayRefusal::Unknown(b) => write!(f, "unknown status {b:#04x}"),
        }
    }
}

/// Why [`connect`] got no spliced stream.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The TCP connection failed (the relay's address, the error).
    #[error("the relay at {addr} is unreachable: {reason}", addr = .0, reason = describe(.1))]
    Connect(String, std::io::Error),
    #[error("the relay refused: {0}")]
    Refused(RelayRefusal),
    /// Closed without a status byte (what a relay does with a hello it cannot read).
    #[error("the relay closed the connection without an answer")]
    Closed,
    #[error("the relay did not answer in time")]
    TimedOut,
}

/// Short text for a connection failure: "connection refused", not "Connection refused
/// (os error 111)".
fn describe(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset".into(),
        K::TimedOut => "timed out".into(),
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        K::AddrNotAvailable => "address not available".into(),
        _ => e.to_string(),
    }
}

/// Connects to the relay, sends the hello for `ticket` and waits (all within `timeout`,
/// which should cover the relay's pair timeout) for its status byte. `Ok` only when
/// paired: the stream then carries the partner's bytes (`TCP_NODELAY` set).
pub async fn connect(
    relay: SocketAddr,
    ticket: &[u8; TICKET_LEN],
    timeout: Duration,
) -> Result<TcpStream, RelayError> {
    let attempt = async {
        let mut s = TcpStream::connect(relay)
            .await
            .map_err(|e| RelayError::Connect(relay.to_string(), e))?;
        let _ = s.set_nodelay(true);
        s.write_all(&hello_bytes(ticket))
            .await
            .map_err(|_| RelayError::Closed)?;
        let mut status = [0u8; 1];
        match s.read(&mut status).await {
            Ok(1) if status[0] == Status::Paired.to_byte() => Ok(s),
            Ok(1) => Err(RelayError::Refused(RelayRefusal::from_byte(status[0]))),
            _ => Err(RelayError::Closed),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(RelayError::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_one_line() {
        let e = RelayError::Connect(
            "203.0.113.1:12000".into(),
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(
            e.to_string(),
            "the relay at 203.0.113.1:12000 is unreachable: connection refused"
        );
        assert_eq!(
            RelayError::Refused(RelayRefusal::Full).to_string(),
            "the relay refused: it is full"
        );
        for b in 1..=5 {
            assert!(!matches!(
                RelayRefusal::from_byte(b),
                RelayRefusal::Unknown(_)
            ));
        }
        assert_eq!(RelayRefusal::from_byte(0), RelayRefusal::Unknown(0));
        assert_eq!(RelayRefusal::from_byte(9), RelayRefusal::Unknown(9));
    }
}
