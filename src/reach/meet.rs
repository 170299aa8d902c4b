//! Meetings on TCP: the reverse path's two halves.
//!
//! The owner, asked by the server (`Dial`, via reverse), connects out to the
//! requester's TCP port and opens with [`MODE_REVERSE`] and the meeting's 16-byte id
//! ([`dial_reverse`]). The requester's serve loop recognises that opening, answers
//! [`MODE_REVERSE`] and hands the connection to the download waiting for that id
//! ([`Meetings`]). From there the connection is what a direct one is: the requester
//! speaks first as a requester, the owner answers as a provider, TLS roles and pinning
//! as always. An id is 128 random bits, expected by one download for a few seconds;
//! a connection with an unknown id is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::timeout;

use crate::transfer::secure::{MODE_PLAIN, MODE_REVERSE, MODE_TLS};

/// The downloads waiting for a reverse connection, by meeting id.
#[derive(Clone, Default)]
pub struct Meetings(Arc<Mutex<HashMap<[u8; 16], oneshot::Sender<TcpStream>>>>);

impl std::fmt::Debug for Meetings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Meetings")
    }
}

/// A download's wait for its reverse connection; forgotten when dropped.
pub struct Expected {
    meetings: Meetings,
    id: [u8; 16],
    rx: Option<oneshot::Receiver<TcpStream>>,
}

impl Expected {
    /// The connection, if it comes within `limit`.
    pub async fn arrive(mut self, limit: Duration) -> Option<TcpStream> {
        let rx = self.rx.take()?;
        timeout(limit, rx).await.ok()?.ok()
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        self.meetings.lock().remove(&self.id);
    }
}

impl Meetings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], oneshot::Sender<TcpStream>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for meeting `id`.
    pub fn expect(&self, id: [u8; 16]) -> Expected {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        Expected {
            meetings: self.clone(),
            id,
            rx: Some(rx),
        }
    }

    /// Hands `stream` to the download waiting for `id`; `false` (the stream dropped)
    /// when none waits.
    pub fn deliver(&self, id: &[u8; 16], stream: TcpStream) -> bool {
        match self.lock().remove(id) {
            Some(tx) => tx.send(stream).is_ok(),
            None => false,
        }
    }
}

/// The requester's side, in its serve loop: the opening byte was [`MODE_REVERSE`];
/// reads the id, confirms and hands the connection over.
pub async fn accept_reverse(mut stream: TcpStream, meetings: &Meetings, limit: Duration) -> bool {
    let mut b = [0u8; 17];
    if !matches!(timeout(limit, stream.read_exact(&mut b)).await, Ok(Ok(_))) {
        return false;
    }
    let Ok(id) = <[u8; 16]>::try_from(&b[1..]) else {
        return false;
    };
    if !meetings.0.lock().is_ok_and(|m| m.contains_key(&id)) {
        return false;
    }
    if !matches!(
        timeout(limit, stream.write_all(&[MODE_REVERSE])).await,
        Ok(Ok(()))
    ) {
        return false;
    }
    meetings.deliver(&id, stream)
}

/// Why the owner's reverse connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReverseError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("{0} did not accept the reverse connection")]
    NotAccepted(SocketAddr),
    #[error("timed out connecting to {0}")]
    TimedOut(SocketAddr),
}

/// The owner's side: connects to the requester at `addr`, opens meeting `id`, and
/// returns the connection once the requester confirmed it.
pub async fn dial_reverse(
    addr: SocketAddr,
    id: [u8; 16],
    limit: Duration,
) -> Result<TcpStream, ReverseError> {
    let run = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| ReverseError::Connect(addr, e))?;
        let _ = s.set_nodelay(true);
        let mut hello = [0u8; 17];
        hello[0] = MODE_REVERSE;
        hello[1..].copy_from_slice(&id);
        s.write_all(&hello)
            .await
            .map_err(|e| ReverseError::Connect(addr, e))?;
        // The requester's serve loop may have sent its provider mode byte before it saw
        // our opening: one such byte is skipped.
        for _ in 0..2 {
            let mut b = [0u8; 1];
            s.read_exact(&mut b)
                .await
                .map_err(|_| ReverseError::NotAccepted(addr))?;
            match b[0] {
                MODE_REVERSE => return Ok(s),
                MODE_TLS | MODE_PLAIN => continue,
                _ => break,
            }
        }
        Err(ReverseError::NotAccepted(addr))
    };
    timeout(limit, run)
        .await
        .map_err(|_| ReverseError::TimedOut(addr))?
}
