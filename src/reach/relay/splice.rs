//! The copy both ways between two paired streams: one fixed buffer per direction, a
//! half-close passed on (when one side finishes writing, the other side's write half is
//! shut down, so TLS close_notify and EOF keep their meaning), and rate limits from
//! token buckets: one per session (both directions together) and the relay's total.
//!
//! A direction waits until its socket is readable, then reserves tokens (at most a
//! buffer's worth), reads what it may, and gives back what it did not read: no tokens
//! are held while a direction is idle, and no byte is read before it is paid for, so
//! over any span a session moves at most rate × time + one burst.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use fileapp_core::reach::relay::TokenBucket;

/// Bytes of the buffer of each direction of a session.
pub const COPY_BUFFER: usize = 64 * 1024;
/// The least a rate-limited read waits for (fewer, larger reads under a low rate).
const MIN_GRANT: u64 = 16 * 1024;

type Bucket = Arc<Mutex<TokenBucket>>;

fn take(b: &Bucket) -> std::sync::MutexGuard<'_, TokenBucket> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

/// The buckets one session's copies draw from.
#[derive(Clone, Default)]
pub struct Limit {
    session: Option<Bucket>,
    total: Option<Bucket>,
}

impl Limit {
    /// A fresh bucket for this session at `session_rate`, and the relay's shared one.
    pub fn new(session_rate: Option<u64>, total: Option<Bucket>) -> Limit {
        let session = session_rate.map(|rate| {
            Arc::new(Mutex::new(TokenBucket::new(
                rate,
                TokenBucket::default_burst(rate),
                Instant::now(),
            )))
        });
        Limit { session, total }
    }

    fn limited(&self) -> bool {
        self.session.is_some() || self.total.is_some()
    }

    /// Waits until at least some bytes may be read; returns how many (≤ `max`).
    async fn grant(&self, max: u64) -> u64 {
        loop {
            let now = Instant::now();
            let mut n = max;
            let mut wait = None;
            let mut from_session = 0;
            if let Some(s) = &self.session {
                match take(s).reserve(now, MIN_GRANT, n) {
                    Ok(g) => {
                        from_session = g;
                        n = g;
                    }
                    Err(when) => wait = Some(when),
                }
            }
            if wait.is_none()
                && let Some(t) = &self.total
            {
                match take(t).reserve(now, MIN_GRANT, n) {
                    Ok(g) => n = g,
                    Err(when) => wait = Some(when),
                }
            }
            match wait {
                None => {
                    if let Some(s) = &self.session {
                        take(s).refund(from_session - n);
                    }
                    return n;
                }
                Some(when) => {
                    if let Some(s) = &self.session {
                        take(s).refund(from_session);
                    }
                    tokio::time::sleep_until(when.into()).await;
                }
            }
        }
    }

    fn refund(&self, n: u64) {
        if n == 0 {
            return;
        }
        for b in [&self.session, &self.total].into_iter().flatten() {
            take(b).refund(n);
        }
    }
}

/// Copies `a` to `b` and `b` to `a` until both directions ended; returns the bytes moved
/// each way. An error in either direction ends both (the streams are closed).
pub async fn splice(a: TcpStream, b: TcpStream, limit: Limit) -> io::Result<(u64, u64)> {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    tokio::try_join!(pipe(ar, bw, &limit), pipe(br, aw, &limit))
}

/// One direction: read, pay, write; on end of input, shut down the writer's side.
async fn pipe(r: OwnedReadHalf, mut w: OwnedWriteHalf, limit: &Limit) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut moved = 0u64;
    loop {
        r.readable().await?;
        let allowed = if limit.limited() {
            limit.grant(COPY_BUFFER as u64).await as usize
        } else {
            COPY_BUFFER
        };
        let n = match r.try_read(&mut buf[..allowed]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                limit.refund(allowed as u64);
                continue;
            }
            Err(e) => {
                limit.refund(allowed as u64);
                return Err(e);
            }
        };
        if limit.limited() {
            limit.refund((allowed - n) as u64);
        }
        if n == 0 {
            w.shutdown().await?;
            return Ok(moved);
        }
        w.write_all(&buf[..n]).await?;
        moved += n as u64;
    }
}
